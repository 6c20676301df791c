//! Query results for people (an aligned table) and for scripts (JSON rows).

use deltalake::arrow::error::ArrowError;
use deltalake::arrow::json::{WriterBuilder, writer::JsonArray};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::util::pretty::pretty_format_batches;

/// An aligned text table followed by the row count.
pub fn render_table(batches: &[RecordBatch]) -> Result<String, ArrowError> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let noun = if rows == 1 { "row" } else { "rows" };
    if batches.is_empty() {
        return Ok(format!("({rows} {noun})"));
    }
    Ok(format!(
        "{}\n({rows} {noun})",
        pretty_format_batches(batches)?
    ))
}

/// A JSON array with one object per row; NULLs are written as `null`, never left out.
pub fn render_json(batches: &[RecordBatch]) -> Result<String, ArrowError> {
    let mut out = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut out);
        for batch in batches {
            writer.write(batch)?;
        }
        writer.finish()?;
    }
    if out.is_empty() {
        return Ok("[]".to_string());
    }
    String::from_utf8(out).map_err(|e| ArrowError::JsonError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 22])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .expect("valid batch")
    }

    #[test]
    fn json_rows_keep_nulls() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&[batch()]).expect("renders")).expect("json");
        assert_eq!(
            json,
            serde_json::json!([{"id": 1, "name": "a"}, {"id": 22, "name": null}])
        );
    }

    #[test]
    fn no_batches_render_as_empty_results() {
        assert_eq!(render_json(&[]).expect("renders"), "[]");
        assert_eq!(render_table(&[]).expect("renders"), "(0 rows)");
    }

    #[test]
    fn the_table_is_aligned_and_counted() {
        let text = render_table(&[batch()]).expect("renders");
        let widths: Vec<usize> = text.lines().take(6).map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{text}");
        assert!(text.ends_with("(2 rows)"), "{text}");
    }
}
