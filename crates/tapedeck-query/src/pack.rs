//! A packed log (`tapedeck pack --format log`, `docs/pack-format.md`) as a table with a
//! `template` column: `log_template(line)`, computed as rows are read rather than stored, so
//! the pack stays as small as its lines allow and `GROUP BY template` counts message kinds.
//!
//! The tape is registered as a view over its [`TapeTable`]: the view only adds the column, so
//! filters on `time` and `_seq` still reach the table and prune frames.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::scan::TapeTable;

/// `log_template(text)`: [`tapedeck::pack::text::template`] as an SQL function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LogTemplate {
    signature: Signature,
}

impl Default for LogTemplate {
    fn default() -> Self {
        LogTemplate {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LogTemplate {
    fn name(&self) -> &str {
        "log_template"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return exec_err!("log_template takes one argument");
        };
        let array = arg.to_array(args.number_rows)?;
        let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
        let Some(text) = array.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("log_template takes text");
        };
        let out: StringArray = text
            .iter()
            .map(|v| v.map(tapedeck::pack::text::template))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// Whether the tape in `dir` is a packed log.
pub fn is_log_pack(dir: &std::path::Path) -> bool {
    dir.join(tapedeck::pack::TRAILER).is_file()
        && tapedeck::pack::read_trailer(dir)
            .is_ok_and(|t| t.layout.format() == tapedeck::pack::Format::Log)
}

/// Registers `table` as `name`, with `template` after `time`, and `log_template` in `ctx`.
pub fn register_log_view(ctx: &SessionContext, name: &str, table: Arc<TapeTable>) -> DfResult<()> {
    let udf = ScalarUDF::from(LogTemplate::default());
    ctx.register_udf(udf.clone());
    let df = ctx.read_table(table)?;
    let mut exprs = Vec::new();
    for field in df.schema().fields() {
        let column = Expr::Column(Column::new_unqualified(field.name()));
        exprs.push(column);
        if field.name() == "time" {
            exprs.push(
                udf.call(vec![Expr::Column(Column::new_unqualified("line"))])
                    .alias("template"),
            );
        }
    }
    let view = df.select(exprs)?.into_view();
    ctx.register_table(name, view)?;
    Ok(())
}
