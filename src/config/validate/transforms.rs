//! `transforms`: column transforms applied in ascending `order` to rows that passed the rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::column_type::TYPE_NAMES;
use crate::config::diagnostics::did_you_mean;
use crate::config::model::{TransformConfig, Value};
use crate::config::spec::{ColumnType, TransformKind, TransformSpec};
use crate::config::validate::checker::{Checker, ColumnSet, describe, is_identifier};
use crate::config::validate::rules::count_param;
use crate::config::validate::table::is_reserved_column;

pub const TRANSFORM_TYPES: &[&str] = &[
    "trim",
    "lower",
    "upper",
    "round",
    "mask_pii",
    "cast",
    "default_value",
    "rename",
];
/// The original's defaults.
pub const DEFAULT_ROUND_DECIMALS: u32 = 2;
pub const DEFAULT_VISIBLE_CHARS: usize = 4;

/// Checks every transform of one table; Some (sorted stably by `order`) only when all are valid.
pub(super) fn transforms(
    c: &mut Checker,
    table_path: &str,
    table: &str,
    columns: Option<&ColumnSet>,
    transforms: &[TransformConfig],
) -> Option<Vec<TransformSpec>> {
    // Type checks follow execution order: a cast changes what later transforms of the column see.
    let mut by_order: Vec<(usize, &TransformConfig)> = transforms.iter().enumerate().collect();
    by_order.sort_by_key(|(_, t)| t.order.unwrap_or(0));

    let mut current_types: HashMap<String, ColumnType> = columns
        .map(|cols| {
            cols.columns
                .iter()
                .filter_map(|(n, t)| t.map(|t| (n.clone(), t)))
                .collect()
        })
        .unwrap_or_default();
    let mut ids = HashSet::new();
    let mut new_names: HashMap<String, String> = HashMap::new();
    let mut specs = Vec::new();
    let mut ok = true;
    // Duplicate ids are reported in config order, so the second occurrence is the one flagged.
    for (j, t) in transforms.iter().enumerate() {
        if let Some(id) = t.id.as_deref().map(str::trim).filter(|id| !id.is_empty())
            && !ids.insert(id.to_string())
        {
            c.error(
                &format!("{table_path}.transforms[{j}].id"),
                format!("Duplicate transform ID: {id}"),
            );
            ok = false;
        }
    }
    for (j, t) in by_order {
        let path = format!("{table_path}.transforms[{j}]");
        let ctx = TransformCtx {
            table,
            columns,
            path: &path,
        };
        match transform(c, &ctx, t, &mut current_types, &mut new_names) {
            Some(spec) => specs.push(spec),
            None => ok = false,
        }
    }
    ok.then_some(specs)
}

struct TransformCtx<'a> {
    table: &'a str,
    columns: Option<&'a ColumnSet>,
    path: &'a str,
}

fn transform(
    c: &mut Checker,
    ctx: &TransformCtx,
    t: &TransformConfig,
    current_types: &mut HashMap<String, ColumnType>,
    new_names: &mut HashMap<String, String>,
) -> Option<TransformSpec> {
    let path = ctx.path;
    let id = match t.id.as_deref().map(str::trim) {
        None | Some("") => {
            c.error(&format!("{path}.id"), "transform `id` is required");
            None
        }
        Some(id) => Some(id.to_string()),
    };
    let column = c.column_ref(
        &format!("{path}.column"),
        t.column.as_deref(),
        ctx.table,
        ctx.columns,
    );
    let current = column
        .as_ref()
        .and_then(|col| current_types.get(&col.name).copied());
    let params_path = format!("{path}.params");
    let params = t.params.as_ref();
    let column_path = format!("{path}.column");
    let require = |c: &mut Checker, what: &str, ok: fn(&ColumnType) -> bool, needs: &str| {
        if let (Some(col), Some(ty)) = (&column, current)
            && !ok(&ty)
        {
            c.error(
                &column_path,
                format!("{what} needs {needs}; '{}' is {ty} at this point", col.name),
            );
        }
    };
    let kind = match t.transform_type.as_deref() {
        None => {
            c.error_hint(
                &format!("{path}.type"),
                "transform `type` is required",
                Some(format!("one of {}", TRANSFORM_TYPES.join(", "))),
            );
            None
        }
        Some(simple @ ("trim" | "lower" | "upper")) => {
            c.unknown_params(&params_path, params, &[], &format!("a {simple} transform"));
            require(
                c,
                &format!("`{simple}`"),
                ColumnType::is_text,
                "a string column",
            );
            Some(match simple {
                "trim" => TransformKind::Trim,
                "lower" => TransformKind::Lower,
                _ => TransformKind::Upper,
            })
        }
        Some("round") => {
            c.unknown_params(&params_path, params, &["decimals"], "a round transform");
            require(c, "`round`", ColumnType::is_numeric, "a numeric column");
            let decimals = count_param(c, &params_path, params, "decimals")?;
            match decimals.map(u32::try_from) {
                None => Some(TransformKind::Round {
                    decimals: DEFAULT_ROUND_DECIMALS,
                }),
                Some(Ok(d)) => Some(TransformKind::Round { decimals: d }),
                Some(Err(_)) => {
                    c.error(&format!("{params_path}.decimals"), "decimals is too large");
                    None
                }
            }
        }
        Some("mask_pii") => {
            c.unknown_params(
                &params_path,
                params,
                &["visible_chars"],
                "a mask_pii transform",
            );
            require(c, "`mask_pii`", ColumnType::is_text, "a string column");
            let visible = count_param(c, &params_path, params, "visible_chars")?;
            match visible.map(usize::try_from) {
                None => Some(TransformKind::MaskPii {
                    visible_chars: DEFAULT_VISIBLE_CHARS,
                }),
                Some(Ok(n)) => Some(TransformKind::MaskPii { visible_chars: n }),
                Some(Err(_)) => {
                    c.error(
                        &format!("{params_path}.visible_chars"),
                        "visible_chars is too large",
                    );
                    None
                }
            }
        }
        Some("cast") => cast(c, &params_path, params),
        Some("default_value") => {
            c.unknown_params(
                &params_path,
                params,
                &["value"],
                "a default_value transform",
            );
            default_value(c, &params_path, params, current)
        }
        Some("rename") => {
            c.unknown_params(&params_path, params, &["new_name"], "a rename transform");
            rename(
                c,
                ctx,
                &params_path,
                params,
                column.as_ref().map(|col| col.name.as_str()),
                new_names,
            )
        }
        Some(other) => {
            c.error_hint(
                &format!("{path}.type"),
                format!("Unknown transform type: {other}"),
                did_you_mean(other, TRANSFORM_TYPES.iter().copied())
                    .or_else(|| Some(format!("one of {}", TRANSFORM_TYPES.join(", ")))),
            );
            None
        }
    };
    if let (Some(TransformKind::Cast { target_type }), Some(col)) = (&kind, &column) {
        current_types.insert(col.name.clone(), *target_type);
    }
    Some(TransformSpec {
        id: id?,
        column: column?.name,
        kind: kind?,
        order: t.order.unwrap_or(0),
    })
}

/// `cast` reads `target_type`; the original README's `to_type` was never read by its code.
fn cast(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
) -> Option<TransformKind> {
    let has_to_type = params.is_some_and(|p| p.contains_key("to_type"));
    let target_path = format!("{params_path}.target_type");
    let unknown: Vec<&str> = ["target_type"]
        .into_iter()
        .chain(has_to_type.then_some("to_type"))
        .collect();
    c.unknown_params(params_path, params, &unknown, "a cast transform");
    match params.and_then(|p| p.get("target_type")) {
        None | Some(Value::Null) => {
            let hint = if has_to_type {
                Some("did you mean `target_type`? (`to_type` appears in the original README but is not read)".into())
            } else {
                Some(format!("one of {}, decimal(p,s)", TYPE_NAMES.join(", ")))
            };
            let path = if has_to_type {
                format!("{params_path}.to_type")
            } else {
                target_path
            };
            c.error_hint(&path, "a cast transform needs `target_type`", hint);
            None
        }
        Some(Value::String(text)) => {
            if has_to_type {
                c.warn(
                    &format!("{params_path}.to_type"),
                    "`to_type` is ignored; `target_type` is used",
                );
            }
            match text.parse::<ColumnType>() {
                Ok(target_type) => Some(TransformKind::Cast { target_type }),
                Err(e) => {
                    c.error_hint(
                        &target_path,
                        format!("invalid target_type: {e}"),
                        did_you_mean(text, TYPE_NAMES.iter().copied()),
                    );
                    None
                }
            }
        }
        Some(other) => {
            c.error(
                &target_path,
                format!("expected a type name, found {}", describe(other)),
            );
            None
        }
    }
}

fn default_value(
    c: &mut Checker,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
    current: Option<ColumnType>,
) -> Option<TransformKind> {
    let path = format!("{params_path}.value");
    let value = match params.and_then(|p| p.get("value")) {
        None | Some(Value::Null) => {
            c.error(
                &path,
                "a default_value transform needs `value` (the literal that replaces NULL)",
            );
            return None;
        }
        Some(v @ (Value::Array(_) | Value::Object(_))) => {
            c.error(
                &path,
                format!("expected a single value, found {}", describe(v)),
            );
            return None;
        }
        Some(v) => v,
    };
    if let Some(ty) = current
        && let Err(expected) = literal_fits(value, ty)
    {
        c.error(
            &path,
            format!(
                "expected {expected} for a {ty} column, found {}",
                describe(value)
            ),
        );
        return None;
    }
    Some(TransformKind::DefaultValue {
        value: value.clone(),
    })
}

/// Whether a scalar literal can stand in a column of this type (as a DDL default or a NULL fill).
pub(super) fn literal_fits(value: &Value, ty: ColumnType) -> Result<(), &'static str> {
    match ty {
        ColumnType::Int | ColumnType::Long => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            _ => Err("an integer"),
        },
        ColumnType::Double | ColumnType::Real | ColumnType::Decimal { .. } => match value {
            Value::Number(_) => Ok(()),
            _ => Err("a number"),
        },
        ColumnType::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => Err("true or false"),
        },
        ColumnType::Timestamp | ColumnType::Date => match value {
            Value::String(_) => Ok(()),
            _ => Err("a string"),
        },
        ColumnType::String | ColumnType::Text => match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(()),
            _ => Err("a string"),
        },
    }
}

fn rename(
    c: &mut Checker,
    ctx: &TransformCtx,
    params_path: &str,
    params: Option<&BTreeMap<String, Value>>,
    column: Option<&str>,
    new_names: &mut HashMap<String, String>,
) -> Option<TransformKind> {
    let path = format!("{params_path}.new_name");
    let new_name = match params.and_then(|p| p.get("new_name")) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            c.error(&path, "a rename transform needs `new_name`");
            return None;
        }
        Some(other) => {
            c.error(
                &path,
                format!("expected a column name, found {}", describe(other)),
            );
            return None;
        }
    };
    if !is_identifier(&new_name) {
        c.error(&path, format!("invalid column name {new_name:?}: expected letters, digits and _, not starting with a digit"));
        return None;
    }
    if is_reserved_column(&new_name) {
        c.error(
            &path,
            format!("`{new_name}` is reserved: dqetl adds this column to lake tables"),
        );
        return None;
    }
    let clashes_with_column = ctx
        .columns
        .is_some_and(|cols| cols.names().any(|n| n == new_name && Some(n) != column));
    if clashes_with_column {
        c.error(
            &path,
            format!("`{new_name}` is already a column of table '{}'", ctx.table),
        );
        return None;
    }
    if let Some(col) = column
        && let Some(previous) = new_names.insert(new_name.clone(), col.to_string())
    {
        c.error(
            &path,
            format!("`{new_name}` is already the new name of column '{previous}'"),
        );
        return None;
    }
    Some(TransformKind::Rename { new_name })
}
