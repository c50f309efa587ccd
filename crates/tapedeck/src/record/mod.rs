//! The record model: rows, blocks and batches, and the schema lock that keeps a destination's
//! shape stable.
//!
//! Everything inside tapedeck is an Arrow [`RecordBatch`]; rows ([`Row`]) and DAQ blocks
//! ([`Block`]) are converted at the edge — rows through a [`RowBuilder`], blocks through
//! [`Block::to_wide_batch`] / [`Block::to_long_batch`]. A [`Record`] is one item of a stream as a
//! source produces it.

pub mod block;
pub mod row_builder;
pub mod schema_lock;
pub mod time;
pub mod value;

pub use arrow_array::RecordBatch;
pub use block::{Block, BlockError, Channel, Encoding, RawCodes, Scale};
pub use row_builder::RowBuilder;
pub use schema_lock::{SchemaLock, UnknownColumns};
pub use value::{Row, Value, timestamp_type};

/// One item of a stream: a row, a ready batch, or a DAQ block.
#[derive(Debug, Clone)]
pub enum Record {
    /// One row of named values.
    Row(Row),
    /// An Arrow batch (rows already columnar).
    Batch(RecordBatch),
    /// A DAQ block.
    Block(Block),
}

impl Record {
    /// Number of rows this record contributes (a block counts its samples per channel).
    pub fn row_count(&self) -> usize {
        match self {
            Record::Row(_) => 1,
            Record::Batch(b) => b.num_rows(),
            Record::Block(b) => b.samples,
        }
    }
}

impl From<Row> for Record {
    fn from(r: Row) -> Self {
        Record::Row(r)
    }
}

impl From<RecordBatch> for Record {
    fn from(b: RecordBatch) -> Self {
        Record::Batch(b)
    }
}

impl From<Block> for Record {
    fn from(b: Block) -> Self {
        Record::Block(b)
    }
}

/// Columns that say where or when a row comes from rather than what was measured: two streams
/// that share only these (and timestamp columns) hold unrelated data.
pub const IDENTITY_COLUMNS: &[&str] = &["device", "task", "unit_id", "channel", "source"];

/// The data columns two schemas share: names in both that are neither identity columns nor
/// timestamps. Empty means the two hold unrelated data (alicat samples onto a tape of DAQ
/// blocks), which a tape or a locked destination refuses rather than fill with nulls.
pub fn shared_data_columns<'a>(
    a: &'a arrow_schema::Schema,
    b: &arrow_schema::Schema,
) -> Vec<&'a str> {
    a.fields()
        .iter()
        .filter(|f| is_data_column(f) && b.field_with_name(f.name()).is_ok())
        .map(|f| f.name().as_str())
        .collect()
}

/// A column that holds what was measured: neither an identity column nor a timestamp.
pub fn is_data_column(f: &arrow_schema::Field) -> bool {
    !IDENTITY_COLUMNS.contains(&f.name().as_str())
        && !matches!(f.data_type(), arrow_schema::DataType::Timestamp(..))
}

/// A schema's column names, comma-separated, for messages.
pub fn column_list(s: &arrow_schema::Schema) -> String {
    s.fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `batch` with every top-level `Utf8View` column as `Utf8` (same values). Packs store short
/// text as views (`docs/pack-format.md`); the sinks and the text encoders take `Utf8`, so a
/// batch read from a tape goes through this before it reaches them. A batch without views is
/// returned as it is, without a copy.
pub fn views_to_offsets(
    batch: RecordBatch,
) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    use arrow_array::cast::AsArray;
    use std::sync::Arc;
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &arrow_schema::DataType::Utf8View)
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if f.data_type() == &arrow_schema::DataType::Utf8View {
            let plain: arrow_array::StringArray = c.as_string_view().iter().collect();
            fields.push(Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(arrow_schema::DataType::Utf8),
            ));
            columns.push(Arc::new(plain) as arrow_array::ArrayRef);
        } else {
            fields.push(f.clone());
            columns.push(c.clone());
        }
    }
    let schema = arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new_with_options(
        Arc::new(schema),
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}
