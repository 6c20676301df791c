//! Column types as written in `tables.yaml` (`string`, `bigint`, `decimal(10, 2)`, ...) and their
//! PostgreSQL spelling for the source DDL.

use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::config::spec::ColumnType;

/// Every type name the config accepts (case-insensitive), besides `decimal(p,s)`.
pub const TYPE_NAMES: &[&str] = &[
    "string",
    "varchar",
    "text",
    "integer",
    "int",
    "long",
    "bigint",
    "double",
    "float",
    "real",
    "timestamp",
    "date",
    "boolean",
];

/// PostgreSQL's (and Delta's) largest decimal precision that fits Arrow's Decimal128.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

static DECIMAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^decimal\s*\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)$").expect("static regex compiles")
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ColumnTypeError {
    #[error("unknown type '{0}'")]
    Unknown(String),
    #[error("decimal precision must be between 1 and {MAX_DECIMAL_PRECISION}, found {0}")]
    Precision(String),
    #[error("decimal scale must be between 0 and the precision ({precision}), found {scale}")]
    Scale { precision: String, scale: String },
}

impl FromStr for ColumnType {
    type Err = ColumnTypeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let ty = match lower.as_str() {
            "string" | "varchar" => ColumnType::String,
            "text" => ColumnType::Text,
            "integer" | "int" => ColumnType::Int,
            "long" | "bigint" => ColumnType::Long,
            "double" | "float" => ColumnType::Double,
            "real" => ColumnType::Real,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "date" => ColumnType::Date,
            _ => {
                return parse_decimal(&lower)
                    .unwrap_or_else(|| Err(ColumnTypeError::Unknown(text.to_string())));
            }
        };
        Ok(ty)
    }
}

/// `Some(result)` when the text has the shape `decimal(p,s)`, `None` otherwise.
fn parse_decimal(lower: &str) -> Option<Result<ColumnType, ColumnTypeError>> {
    let caps = DECIMAL.captures(lower)?;
    let (p_text, s_text) = (&caps[1], &caps[2]);
    let precision = match p_text.parse::<u8>() {
        Ok(p) if (1..=MAX_DECIMAL_PRECISION).contains(&p) => p,
        _ => return Some(Err(ColumnTypeError::Precision(p_text.to_string()))),
    };
    let scale = match s_text.parse::<u8>() {
        Ok(s) if s <= precision => s,
        _ => {
            return Some(Err(ColumnTypeError::Scale {
                precision: p_text.to_string(),
                scale: s_text.to_string(),
            }));
        }
    };
    // scale <= precision <= 38, so it fits an i8.
    Some(Ok(ColumnType::Decimal {
        precision,
        scale: scale as i8,
    }))
}

impl ColumnType {
    /// The PostgreSQL type of a source column of this type.
    pub fn postgres_type(&self) -> String {
        match self {
            ColumnType::String => "VARCHAR(255)".into(),
            ColumnType::Text => "TEXT".into(),
            ColumnType::Int => "INTEGER".into(),
            ColumnType::Long => "BIGINT".into(),
            ColumnType::Double => "DOUBLE PRECISION".into(),
            ColumnType::Real => "REAL".into(),
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::Timestamp => "TIMESTAMP".into(),
            ColumnType::Date => "DATE".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        }
    }

    /// Numbers: what `range` and `round` apply to.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            ColumnType::Int
                | ColumnType::Long
                | ColumnType::Double
                | ColumnType::Real
                | ColumnType::Decimal { .. }
        )
    }

    /// Character data: what `mask_pii`, `trim`, `lower` and `upper` apply to.
    pub fn is_text(&self) -> bool {
        matches!(self, ColumnType::String | ColumnType::Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ColumnType, ColumnTypeError> {
        text.parse()
    }

    #[test]
    fn aliases_fold_together_case_insensitively() {
        assert_eq!(parse("VARCHAR"), Ok(ColumnType::String));
        assert_eq!(parse("string"), Ok(ColumnType::String));
        assert_eq!(parse("Text"), Ok(ColumnType::Text));
        assert_eq!(parse("INT"), Ok(ColumnType::Int));
        assert_eq!(parse("bigint"), Ok(ColumnType::Long));
        assert_eq!(parse("Float"), Ok(ColumnType::Double));
        assert_eq!(parse("real"), Ok(ColumnType::Real));
        assert_eq!(parse(" boolean "), Ok(ColumnType::Boolean));
    }

    #[test]
    fn decimal_accepts_spaces_and_checks_bounds() {
        assert_eq!(
            parse("decimal(10,2)"),
            Ok(ColumnType::Decimal {
                precision: 10,
                scale: 2
            })
        );
        assert_eq!(
            parse("DECIMAL(5, 1)"),
            Ok(ColumnType::Decimal {
                precision: 5,
                scale: 1
            })
        );
        assert_eq!(
            parse("decimal(38,38)"),
            Ok(ColumnType::Decimal {
                precision: 38,
                scale: 38
            })
        );
        assert_eq!(
            parse("decimal(39,2)"),
            Err(ColumnTypeError::Precision("39".into()))
        );
        assert_eq!(
            parse("decimal(0,0)"),
            Err(ColumnTypeError::Precision("0".into()))
        );
        assert!(matches!(
            parse("decimal(5,6)"),
            Err(ColumnTypeError::Scale { .. })
        ));
        assert!(matches!(
            parse("decimal(5,999)"),
            Err(ColumnTypeError::Scale { .. })
        ));
    }

    #[test]
    fn unknown_types_are_rejected_verbatim() {
        assert_eq!(parse("uuid"), Err(ColumnTypeError::Unknown("uuid".into())));
        assert_eq!(
            parse("decimal"),
            Err(ColumnTypeError::Unknown("decimal".into()))
        );
        assert_eq!(
            parse("varchar(20)"),
            Err(ColumnTypeError::Unknown("varchar(20)".into()))
        );
        assert_eq!(parse(""), Err(ColumnTypeError::Unknown("".into())));
    }

    #[test]
    fn postgres_types_keep_precision() {
        assert_eq!(ColumnType::Double.postgres_type(), "DOUBLE PRECISION");
        assert_eq!(ColumnType::Real.postgres_type(), "REAL");
        assert_eq!(ColumnType::Long.postgres_type(), "BIGINT");
        assert_eq!(
            ColumnType::Decimal {
                precision: 12,
                scale: 3
            }
            .postgres_type(),
            "DECIMAL(12,3)"
        );
    }

    #[test]
    fn every_type_name_parses() {
        for name in TYPE_NAMES {
            assert!(parse(name).is_ok(), "{name}");
        }
    }
}
