//! Rows of named values: the shape in which most devices and line sources hand records over.
//!
//! A [`Row`] is an ordered list of `(name, value)` pairs. It is deliberately plain: a row builder
//! ([`crate::record::RowBuilder`]) turns many rows into one Arrow batch, and from then on
//! everything inside tapedeck is Arrow.

use std::sync::Arc;

use arrow_schema::{DataType, TimeUnit};

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// Absent / unknown.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float (NaN and ±inf allowed).
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// A UTC instant in microseconds since the Unix epoch.
    Timestamp(i64),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// The Arrow type every timestamp in tapedeck has: microseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

impl Value {
    /// The Arrow type this value is stored as; `Null` for [`Value::Null`].
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Null => DataType::Null,
            Value::Bool(_) => DataType::Boolean,
            Value::Int(_) => DataType::Int64,
            Value::Float(_) => DataType::Float64,
            Value::Text(_) => DataType::Utf8,
            Value::Timestamp(_) => timestamp_type(),
            Value::Bytes(_) => DataType::Binary,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self { Value::$v(x $(as $cast)?) }
        }
    )*};
}
value_from!(bool => Bool, i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float,
    f32 => Float as f64, String => Text, Vec<u8> => Bytes);

impl From<&str> for Value {
    fn from(x: &str) -> Self {
        Value::Text(x.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(x: Option<T>) -> Self {
        x.map_or(Value::Null, Into::into)
    }
}

/// A row: named values in order.
///
/// ```
/// use tapedeck::record::{Row, Value};
/// let row = Row::new().with("device", "fuel").with("Mass_Flow", 10.5);
/// assert_eq!(row.get("Mass_Flow"), Some(&Value::Float(10.5)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    fields: Vec<(Arc<str>, Value)>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// An empty row with room for `n` fields.
    pub fn with_capacity(n: usize) -> Row {
        Row {
            fields: Vec::with_capacity(n),
        }
    }

    /// Appends a field (builder style).
    pub fn with(mut self, name: impl Into<Arc<str>>, value: impl Into<Value>) -> Row {
        self.push(name, value);
        self
    }

    /// Appends a field.
    pub fn push(&mut self, name: impl Into<Arc<str>>, value: impl Into<Value>) {
        self.fields.push((name.into(), value.into()));
    }

    /// Sets the field called `name` (its first one) to `value`, or appends it.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        match self.fields.iter_mut().find(|(n, _)| &**n == name) {
            Some((_, v)) => *v = value.into(),
            None => self.fields.push((name.into(), value.into())),
        }
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v)
    }

    /// The fields in order.
    pub fn fields(&self) -> &[(Arc<str>, Value)] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the row has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}
