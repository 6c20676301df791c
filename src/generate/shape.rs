//! What each source table accepts: its columns as the config types them and as the database
//! stores them (read from the catalog at start), keys, foreign keys and rules. The database is
//! the judge of what can be written; the config says what the processor will check.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

use crate::config::spec::{ColumnType, HardDeletes, RuleSpec, TableSpec};

use super::row::{Decimal, Value};

/// One column as the source database reports it (`information_schema.columns`).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogColumn {
    pub name: String,
    /// The base type name to cast a text parameter to (`integer`, `character varying`, ...).
    pub data_type: String,
    pub not_null: bool,
    pub max_chars: Option<u32>,
    pub numeric_precision: Option<u32>,
    pub numeric_scale: Option<u32>,
    pub has_default: bool,
}

/// How the database stores a column's values, which bounds what it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Storage {
    Integer {
        min: i64,
        max: i64,
    },
    Float64,
    Float32,
    /// `numeric(p,s)`; `None` when unconstrained.
    Numeric {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text {
        max_chars: Option<u32>,
    },
    Other,
}

impl Storage {
    fn of(c: &CatalogColumn) -> Storage {
        match c.data_type.as_str() {
            "smallint" => Storage::Integer {
                min: i64::from(i16::MIN),
                max: i64::from(i16::MAX),
            },
            "integer" => Storage::Integer {
                min: i64::from(i32::MIN),
                max: i64::from(i32::MAX),
            },
            "bigint" => Storage::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
            "double precision" => Storage::Float64,
            "real" => Storage::Float32,
            "numeric" => Storage::Numeric {
                precision: c.numeric_precision,
                scale: c.numeric_scale,
            },
            "character varying" | "character" | "text" => Storage::Text {
                max_chars: c.max_chars,
            },
            _ => Storage::Other,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnShape {
    pub name: String,
    /// Quoted for SQL.
    pub sql_name: String,
    pub column_type: ColumnType,
    /// The type a text parameter is cast to.
    pub cast: String,
    pub storage: Storage,
    pub not_null: bool,
    /// UNIQUE in the source DDL (a `unique: true` column, a one-column unique index, the key).
    pub unique: bool,
    /// The database fills it (a SERIAL key).
    pub generated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForeignKey {
    pub column: usize,
    pub parent: usize,
    pub parent_column: usize,
    /// Declared in the config (the database enforces it) or only implied by the use case.
    pub declared: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct TableShape {
    pub name: String,
    /// Schema-qualified and quoted for SQL.
    pub sql_name: String,
    pub columns: Vec<ColumnShape>,
    pub key: usize,
    pub rules: Vec<RuleSpec>,
    /// Per rule, the column index it checks.
    pub rule_columns: Vec<usize>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Deletes append a tombstone version in the lake (`scd2.hard_deletes: tombstone`).
    pub tombstone_deletes: bool,
}

/// Why the source database would refuse a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotNull,
    Generated,
    TooLong { max_chars: u32 },
    OutOfType { what: String },
    NotFinite,
    Taken,
    NoParent { table: String, column: String },
    WrongType { expected: ColumnType },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotNull => f.write_str("the column is NOT NULL in the source DDL"),
            Refusal::Generated => {
                f.write_str("the database assigns the column's values (SERIAL key)")
            }
            Refusal::TooLong { max_chars } => {
                write!(f, "the column holds at most {max_chars} characters")
            }
            Refusal::OutOfType { what } => {
                write!(f, "the value does not fit the column's type ({what})")
            }
            Refusal::NotFinite => f.write_str("the column does not store NaN or infinity"),
            Refusal::Taken => f.write_str("the column is UNIQUE and the value is already used"),
            Refusal::NoParent { table, column } => {
                write!(
                    f,
                    "the column is a foreign key: only values of {table}.{column} are accepted"
                )
            }
            Refusal::WrongType { expected } => write!(f, "the value is not a {expected}"),
        }
    }
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableShape {
    /// The table as configured, checked against the database catalog. `tables` gives the index
    /// of every source table by name, for foreign keys.
    pub(crate) fn build(
        spec: &TableSpec,
        schema: &str,
        catalog: &[CatalogColumn],
        table_index: &dyn Fn(&str) -> Option<usize>,
        all: &[TableSpec],
    ) -> Result<TableShape, ShapeError> {
        let key_name = spec.primary_key.clone().ok_or_else(|| ShapeError::NoKey {
            table: spec.name.clone(),
        })?;
        let unique_index = |name: &str| {
            spec.indexes
                .iter()
                .any(|i| i.unique && i.columns.len() == 1 && i.columns[0] == name)
        };
        let mut columns = Vec::with_capacity(spec.columns.len());
        for col in &spec.columns {
            let found = catalog.iter().find(|c| c.name == col.name).ok_or_else(|| {
                ShapeError::MissingColumn {
                    table: spec.name.clone(),
                    column: col.name.clone(),
                }
            })?;
            let is_key = col.name == key_name;
            columns.push(ColumnShape {
                name: col.name.clone(),
                sql_name: quote_ident(&col.name),
                column_type: col.column_type,
                cast: found.data_type.clone(),
                storage: Storage::of(found),
                not_null: found.not_null || !col.nullable || is_key,
                unique: col.unique || is_key || unique_index(&col.name),
                generated: is_key && found.has_default,
            });
        }
        let index_of = |name: &str| columns.iter().position(|c| c.name == name);
        let key = index_of(&key_name).ok_or_else(|| ShapeError::MissingColumn {
            table: spec.name.clone(),
            column: key_name,
        })?;
        let rule_columns = spec
            .rules
            .iter()
            .map(|r| {
                index_of(&r.column).ok_or_else(|| ShapeError::MissingColumn {
                    table: spec.name.clone(),
                    column: r.column.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut foreign_keys = Vec::new();
        for fk in &spec.foreign_keys {
            let missing = || ShapeError::BadForeignKey {
                table: spec.name.clone(),
                column: fk.column.clone(),
            };
            let column = index_of(&fk.column).ok_or_else(missing)?;
            let parent = table_index(&fk.ref_table).ok_or_else(missing)?;
            let parent_column = all
                .iter()
                .find(|t| t.name == fk.ref_table)
                .and_then(|t| t.column_index(&fk.ref_column))
                .ok_or_else(missing)?;
            foreign_keys.push(ForeignKey {
                column,
                parent,
                parent_column,
                declared: true,
            });
        }
        Ok(TableShape {
            name: spec.name.clone(),
            sql_name: format!("{}.{}", quote_ident(schema), quote_ident(&spec.name)),
            columns,
            key,
            rules: spec.rules.clone(),
            rule_columns,
            foreign_keys,
            tombstone_deletes: spec.scd2.hard_deletes == HardDeletes::Tombstone,
        })
    }

    pub(crate) fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub(crate) fn rule_kind(&self, rule: usize) -> &'static str {
        super::check::kind_name(&self.rules[rule].kind)
    }

    /// Indexes of the rules on `column`.
    pub(crate) fn rules_on(&self, column: usize) -> impl Iterator<Item = usize> + '_ {
        self.rule_columns
            .iter()
            .enumerate()
            .filter(move |&(_, &c)| c == column)
            .map(|(r, _)| r)
    }

    /// `value` in the representation of `column`'s type, rounded the way the database stores
    /// it, so what the generator remembers is what the database (and then the processor) sees.
    pub(crate) fn conform(&self, column: usize, value: Value) -> Result<Value, Refusal> {
        let col = &self.columns[column];
        let typed = conform_type(col.column_type, value)?;
        Ok(match (typed, col.storage) {
            (Value::Float(x), Storage::Float32) => Value::Float(f64::from(x as f32)),
            (Value::Float(x), Storage::Numeric { scale: Some(s), .. }) => {
                Value::Float(round_to(x, s))
            }
            (v, _) => v,
        })
    }

    /// Whether the database accepts `value` in `column`, judged by the column alone (not by
    /// other rows: uniqueness and foreign keys are the writer's to check).
    pub(crate) fn accepts(&self, column: usize, value: &Value) -> Result<(), Refusal> {
        let col = &self.columns[column];
        if value.is_null() {
            return if col.generated {
                Err(Refusal::Generated)
            } else if col.not_null {
                Err(Refusal::NotNull)
            } else {
                Ok(())
            };
        }
        if col.generated {
            return Err(Refusal::Generated);
        }
        match (col.storage, value) {
            (
                Storage::Text {
                    max_chars: Some(max),
                },
                Value::Text(s),
            ) if s.chars().count() > max as usize => Err(Refusal::TooLong { max_chars: max }),
            (Storage::Integer { min, max }, Value::Int(v)) if *v < min || *v > max => {
                Err(Refusal::OutOfType {
                    what: col.cast.clone(),
                })
            }
            (Storage::Float32 | Storage::Float64, Value::Float(x)) if !x.is_finite() => {
                Err(Refusal::NotFinite)
            }
            (Storage::Float32, Value::Float(x)) if x.abs() > f64::from(f32::MAX) => {
                Err(Refusal::OutOfType {
                    what: col.cast.clone(),
                })
            }
            (
                Storage::Numeric {
                    precision: Some(p),
                    scale,
                },
                v,
            ) => {
                let digits = integer_digits(v);
                let allowed = p.saturating_sub(scale.unwrap_or(0));
                if digits > allowed {
                    Err(Refusal::OutOfType {
                        what: format!("numeric({p},{})", scale.unwrap_or(0)),
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

fn integer_digits(value: &Value) -> u32 {
    match value {
        Value::Decimal(d) => d.integer_digits(),
        Value::Int(v) => {
            let a = v.unsigned_abs();
            if a == 0 { 0 } else { a.ilog10() + 1 }
        }
        Value::Float(x) => {
            let a = x.abs().trunc();
            if a < 1.0 {
                0
            } else {
                a.log10().floor() as u32 + 1
            }
        }
        _ => 0,
    }
}

fn round_to(x: f64, scale: u32) -> f64 {
    let factor = 10f64.powi(scale as i32);
    let rounded = (x * factor).round() / factor;
    if rounded.is_finite() { rounded } else { x }
}

/// `value` as a value of `ty` (numbers between numeric types, booleans and timestamps from
/// their text, anything to text), or the reason it is not one.
pub(crate) fn conform_type(ty: ColumnType, value: Value) -> Result<Value, Refusal> {
    let wrong = || Refusal::WrongType { expected: ty };
    if value.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::String | ColumnType::Text => match value {
            Value::Text(s) => Value::Text(s),
            other => Value::Text(other.rule_text().ok_or_else(wrong)?),
        },
        ColumnType::Int | ColumnType::Long => match value {
            Value::Int(v) => Value::Int(v),
            Value::Float(x) if x.is_finite() => Value::Int(x.round() as i64),
            Value::Decimal(d) => Value::Int(d.to_f64().round() as i64),
            Value::Text(s) => Value::Int(s.trim().parse().map_err(|_| wrong())?),
            _ => return Err(wrong()),
        },
        ColumnType::Double | ColumnType::Real => match value {
            Value::Int(v) => Value::Float(v as f64),
            Value::Float(x) => Value::Float(x),
            Value::Decimal(d) => Value::Float(d.to_f64()),
            Value::Text(s) => Value::Float(s.trim().parse().map_err(|_| wrong())?),
            _ => return Err(wrong()),
        },
        ColumnType::Decimal { scale, .. } => {
            let scale = u8::try_from(scale.max(0)).unwrap_or(0);
            let x = match value {
                Value::Int(v) => v as f64,
                Value::Float(x) => x,
                Value::Decimal(d) => d.to_f64(),
                Value::Text(s) => s.trim().parse().map_err(|_| wrong())?,
                _ => return Err(wrong()),
            };
            let unscaled = (x * 10f64.powi(i32::from(scale))).round();
            if !unscaled.is_finite() || unscaled.abs() > 1e37 {
                return Err(wrong());
            }
            Value::Decimal(Decimal {
                unscaled: unscaled as i128,
                scale,
            })
        }
        ColumnType::Boolean => match value {
            Value::Bool(b) => Value::Bool(b),
            Value::Text(s) if s == "true" => Value::Bool(true),
            Value::Text(s) if s == "false" => Value::Bool(false),
            _ => return Err(wrong()),
        },
        ColumnType::Timestamp => match value {
            Value::Timestamp(ts) => Value::Timestamp(ts),
            Value::Text(s) => Value::Timestamp(parse_timestamp(&s).ok_or_else(wrong)?),
            _ => return Err(wrong()),
        },
        ColumnType::Date => match value {
            Value::Date(d) => Value::Date(d),
            Value::Timestamp(ts) => Value::Date(ts.date()),
            Value::Text(s) => {
                Value::Date(NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| wrong())?)
            }
            _ => return Err(wrong()),
        },
    })
}

fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.naive_utc())
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok())
}

/// The config and the source database disagree.
#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "table '{table}' has no primary key; the generator needs one to update and delete rows"
    )]
    NoKey { table: String },
    #[error("column '{column}' of table '{table}' is in the config but not in the source database")]
    MissingColumn { table: String, column: String },
    #[error(
        "foreign key on '{table}.{column}' names a table or column that is not a source table column"
    )]
    BadForeignKey { table: String, column: String },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::spec::{ColumnSpec, Scd2Spec};

    pub(crate) fn catalog_for(spec: &TableSpec) -> Vec<CatalogColumn> {
        spec.columns
            .iter()
            .map(|c| {
                let is_key = spec.primary_key.as_deref() == Some(c.name.as_str());
                let (data_type, max_chars) = match c.column_type {
                    ColumnType::String => ("character varying", Some(255)),
                    ColumnType::Text => ("text", None),
                    ColumnType::Int => ("integer", None),
                    ColumnType::Long => ("bigint", None),
                    ColumnType::Double => ("double precision", None),
                    ColumnType::Real => ("real", None),
                    ColumnType::Boolean => ("boolean", None),
                    ColumnType::Timestamp => ("timestamp without time zone", None),
                    ColumnType::Date => ("date", None),
                    ColumnType::Decimal { .. } => ("numeric", None),
                };
                let (numeric_precision, numeric_scale) = match c.column_type {
                    ColumnType::Decimal { precision, scale } => {
                        (Some(u32::from(precision)), Some(scale.max(0) as u32))
                    }
                    _ => (None, None),
                };
                CatalogColumn {
                    name: c.name.clone(),
                    data_type: data_type.into(),
                    not_null: !c.nullable || is_key,
                    max_chars,
                    numeric_precision,
                    numeric_scale,
                    has_default: is_key
                        && matches!(c.column_type, ColumnType::Int | ColumnType::Long),
                }
            })
            .collect()
    }

    pub(crate) fn column(name: &str, ty: ColumnType, nullable: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            column_type: ty,
            nullable,
            unique: false,
            default: None,
        }
    }

    pub(crate) fn table(name: &str, columns: Vec<ColumnSpec>) -> TableSpec {
        TableSpec {
            name: name.into(),
            topic: format!("cdc-{name}"),
            delta_path: None,
            primary_key: Some("id".into()),
            internal: false,
            columns,
            rules: vec![],
            transforms: vec![],
            checks: vec![],
            anomaly_checks: vec![],
            foreign_keys: vec![],
            indexes: vec![],
            scd2: Scd2Spec::default(),
            mask_pii_in_quarantine: true,
        }
    }

    pub(crate) fn config(tables: Vec<TableSpec>) -> crate::config::spec::ConfigSpec {
        use crate::config::spec::{ConfigSpec, KafkaSpec, SettingsSpec};
        ConfigSpec {
            settings: SettingsSpec {
                checkpoint_location: None,
                quarantine_path: None,
                delta_bucket: None,
                trigger_interval: std::time::Duration::from_secs(15),
                max_batch_records: 100_000,
                max_batch_bytes: 1 << 20,
                maintenance_interval: None,
                vacuum_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            },
            kafka: KafkaSpec {
                bootstrap_servers: None,
                security_protocol: None,
                sasl_mechanism: None,
                sasl_username: None,
                partitions: 3,
                consumer_group: None,
                consumer_options: Vec::new(),
                on_data_loss: Default::default(),
            },
            schema_name: "public".into(),
            tables,
        }
    }

    pub(crate) fn shape(spec: &TableSpec) -> TableShape {
        let all = [spec.clone()];
        TableShape::build(
            spec,
            "public",
            &catalog_for(spec),
            &|n| (n == spec.name).then_some(0),
            &all,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn sample() -> TableShape {
        shape(&table(
            "t",
            vec![
                column("id", ColumnType::Int, false),
                column("name", ColumnType::String, false),
                column("score", ColumnType::Real, true),
                column("n", ColumnType::Int, true),
                column(
                    "amount",
                    ColumnType::Decimal {
                        precision: 5,
                        scale: 2,
                    },
                    true,
                ),
            ],
        ))
    }

    #[test]
    fn the_database_refuses_what_its_ddl_forbids() {
        let t = sample();
        assert_eq!(t.accepts(1, &Value::Null), Err(Refusal::NotNull));
        assert_eq!(t.accepts(0, &Value::Int(5)), Err(Refusal::Generated));
        assert_eq!(
            t.accepts(1, &Value::text("x".repeat(256))),
            Err(Refusal::TooLong { max_chars: 255 })
        );
        assert!(t.accepts(1, &Value::text("x".repeat(255))).is_ok());
        assert!(t.accepts(3, &Value::Int(i64::from(i32::MAX) + 1)).is_err());
        assert!(
            t.accepts(
                4,
                &Value::Decimal(Decimal {
                    unscaled: 99_999,
                    scale: 2
                })
            )
            .is_ok()
        );
        assert!(
            t.accepts(
                4,
                &Value::Decimal(Decimal {
                    unscaled: 100_000,
                    scale: 2
                })
            )
            .is_err()
        );
    }

    #[test]
    fn conformed_values_are_what_the_database_stores() {
        let t = sample();
        assert_eq!(
            t.conform(2, Value::Float(0.1)),
            Ok(Value::Float(f64::from(0.1f32)))
        );
        assert_eq!(t.conform(3, Value::Float(2.6)), Ok(Value::Int(3)));
        assert_eq!(
            t.conform(4, Value::Float(1.256)),
            Ok(Value::Decimal(Decimal {
                unscaled: 126,
                scale: 2
            }))
        );
        assert_eq!(t.conform(1, Value::Int(7)), Ok(Value::text("7")));
        assert!(t.conform(3, Value::text("seven")).is_err());
    }
}
