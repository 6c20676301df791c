//! The CloudFormation template of the aws target, embedded in the binary, and a reader of its interface:
//! the parameters deploy passes and the outputs the other commands read back.
//!
//! CloudFormation YAML uses short-form tags (`!Ref`, `!Sub`, `!GetAtt`, ...) that a plain YAML reader does
//! not know. [`parse_template`] keeps them: `serde_yaml_ng` reads each tagged node as `Value::Tagged`, and we
//! rewrite it to the long form (`{"Ref": ..}`, `{"Fn::Sub": ..}`), so callers see one uniform document.

use serde_yaml_ng::{Mapping, Value};

/// The template, as deployed.
pub const TEMPLATE: &str = include_str!("../../../templates/streaming-etl.yaml");

/// Short-form tags whose long form is `Fn::<name>`.
const FN_TAGS: &[&str] = &[
    "And",
    "Base64",
    "Cidr",
    "Contains",
    "EachMemberEquals",
    "EachMemberIn",
    "Equals",
    "FindInMap",
    "ForEach",
    "GetAZs",
    "GetAtt",
    "If",
    "ImportValue",
    "Join",
    "Length",
    "Not",
    "Or",
    "RefAll",
    "Select",
    "Split",
    "Sub",
    "ToJsonString",
    "Transform",
    "ValueOf",
    "ValueOfAll",
];

/// One entry of the template's `Parameters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateParameter {
    pub name: String,
    /// The CloudFormation parameter type (`String`, `Number`, `List<AWS::EC2::Subnet::Id>`, ...).
    pub kind: String,
    /// The default as CloudFormation passes it (always a string); `None` means deploy must pass a value.
    pub default: Option<String>,
    pub allowed_values: Vec<String>,
    pub no_echo: bool,
    pub description: Option<String>,
}

/// One entry of the template's `Outputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateOutput {
    pub name: String,
    pub description: Option<String>,
}

/// The template's parameters and outputs, in template order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateInterface {
    pub parameters: Vec<TemplateParameter>,
    pub outputs: Vec<TemplateOutput>,
}

impl TemplateInterface {
    pub fn parameter(&self, name: &str) -> Option<&TemplateParameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TemplateOutput> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Parameters without a default: a create-stack call must pass each of them.
    pub fn required_parameters(&self) -> impl Iterator<Item = &TemplateParameter> {
        self.parameters.iter().filter(|p| p.default.is_none())
    }
}

/// Why a template could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template is not valid YAML (at {position})")]
    Yaml {
        /// `line L, column C` (1-based) or `unknown position`.
        position: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("the template's top level must be a mapping of sections")]
    NotAMapping,
    #[error(
        "unknown CloudFormation tag `!{tag}` (expected !Ref, !Condition or a short form of an Fn:: function)"
    )]
    UnknownTag { tag: String },
    #[error("section `{section}` must be a mapping of names to definitions")]
    SectionNotMapping { section: &'static str },
    #[error("section `{section}` has an entry whose name is not a string")]
    NameNotString { section: &'static str },
    #[error("{section} entry `{name}` must be a mapping")]
    EntryNotMapping { section: &'static str, name: String },
    #[error("parameter `{name}` has no `Type` (CloudFormation requires one)")]
    ParameterWithoutType { name: String },
    #[error("{section} entry `{name}`: `{key}` must be {expected}")]
    BadValue {
        section: &'static str,
        name: String,
        key: &'static str,
        expected: &'static str,
    },
}

/// Parses a CloudFormation YAML template into a document whose intrinsic functions are all in long form.
pub fn parse_template(text: &str) -> Result<Value, TemplateError> {
    let raw: Value = serde_yaml_ng::from_str(text).map_err(|source| TemplateError::Yaml {
        position: source
            .location()
            .map(|l| format!("line {}, column {}", l.line(), l.column()))
            .unwrap_or_else(|| "unknown position".to_string()),
        source,
    })?;
    long_form(raw)
}

/// Lists the parameters and outputs of a template (the embedded one is [`TEMPLATE`]).
pub fn interface(text: &str) -> Result<TemplateInterface, TemplateError> {
    let document = parse_template(text)?;
    let top = document.as_mapping().ok_or(TemplateError::NotAMapping)?;
    let parameters = entries(top, "Parameters")?
        .into_iter()
        .map(|(name, body)| parameter(name, body))
        .collect::<Result<_, _>>()?;
    let outputs = entries(top, "Outputs")?
        .into_iter()
        .map(|(name, body)| {
            let description = optional_scalar(body, "Outputs", &name, "Description")?;
            Ok(TemplateOutput { name, description })
        })
        .collect::<Result<_, TemplateError>>()?;
    Ok(TemplateInterface {
        parameters,
        outputs,
    })
}

/// Rewrites every short-form tag below `value` to its long form.
fn long_form(value: Value) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::Tagged(tagged) => {
            let tagged = *tagged;
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = long_form(tagged.value)?;
            let key = match tag {
                "Ref" | "Condition" => tag.to_string(),
                t if FN_TAGS.contains(&t) => format!("Fn::{t}"),
                _ => {
                    return Err(TemplateError::UnknownTag {
                        tag: tag.to_string(),
                    });
                }
            };
            // `!GetAtt Resource.Attribute` is the dotted short form of `[Resource, Attribute]`; the attribute
            // itself may contain dots (`Endpoint.Address`), so split at the first one only.
            let inner = match (key.as_str(), inner) {
                ("Fn::GetAtt", Value::String(dotted)) => match dotted.split_once('.') {
                    Some((resource, attribute)) => Value::Sequence(vec![
                        Value::String(resource.to_string()),
                        Value::String(attribute.to_string()),
                    ]),
                    None => Value::String(dotted),
                },
                (_, inner) => inner,
            };
            let mut mapping = Mapping::new();
            mapping.insert(Value::String(key), inner);
            Value::Mapping(mapping)
        }
        Value::Sequence(items) => {
            Value::Sequence(items.into_iter().map(long_form).collect::<Result<_, _>>()?)
        }
        Value::Mapping(mapping) => Value::Mapping(
            mapping
                .into_iter()
                .map(|(k, v)| Ok((k, long_form(v)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        scalar => scalar,
    })
}

/// The `(name, definition)` pairs of a top-level section; an absent section has none.
fn entries<'a>(
    top: &'a Mapping,
    section: &'static str,
) -> Result<Vec<(String, &'a Value)>, TemplateError> {
    let Some(body) = top.get(section) else {
        return Ok(Vec::new());
    };
    let body = body
        .as_mapping()
        .ok_or(TemplateError::SectionNotMapping { section })?;
    body.iter()
        .map(|(name, definition)| {
            let name = name
                .as_str()
                .ok_or(TemplateError::NameNotString { section })?
                .to_string();
            if !definition.is_mapping() {
                return Err(TemplateError::EntryNotMapping { section, name });
            }
            Ok((name, definition))
        })
        .collect()
}

fn parameter(name: String, body: &Value) -> Result<TemplateParameter, TemplateError> {
    const SECTION: &str = "Parameters";
    let kind = optional_scalar(body, SECTION, &name, "Type")?
        .ok_or_else(|| TemplateError::ParameterWithoutType { name: name.clone() })?;
    let default = optional_scalar(body, SECTION, &name, "Default")?;
    let description = optional_scalar(body, SECTION, &name, "Description")?;
    let allowed_values = match body.get("AllowedValues") {
        None => Vec::new(),
        Some(Value::Sequence(values)) => values
            .iter()
            .map(|v| {
                scalar_text(v).ok_or_else(|| TemplateError::BadValue {
                    section: SECTION,
                    name: name.clone(),
                    key: "AllowedValues",
                    expected: "a list of scalars",
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(TemplateError::BadValue {
                section: SECTION,
                name,
                key: "AllowedValues",
                expected: "a list of scalars",
            });
        }
    };
    let no_echo = match optional_scalar(body, SECTION, &name, "NoEcho")?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(TemplateError::BadValue {
                section: SECTION,
                name,
                key: "NoEcho",
                expected: "true or false",
            });
        }
    };
    Ok(TemplateParameter {
        name,
        kind,
        default,
        allowed_values,
        no_echo,
        description,
    })
}

/// A scalar property as the text CloudFormation sees (`20` and `"20"` alike); absent is `None`.
fn optional_scalar(
    body: &Value,
    section: &'static str,
    name: &str,
    key: &'static str,
) -> Result<Option<String>, TemplateError> {
    match body.get(key) {
        None => Ok(None),
        Some(value) => scalar_text(value)
            .map(Some)
            .ok_or_else(|| TemplateError::BadValue {
                section,
                name: name.to_string(),
                key,
                expected: "a scalar",
            }),
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(key: &str, inner: Value) -> Value {
        let mut m = Mapping::new();
        m.insert(Value::String(key.to_string()), inner);
        Value::Mapping(m)
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    #[test]
    fn short_form_tags_become_long_form_functions() {
        let doc = parse_template(
            "A: !Ref Bucket\nB: !GetAtt Db.Endpoint.Address\nC: !Sub '${AWS::StackName}-x'\n\
             D: !If [Cond, !Ref X, !Ref AWS::NoValue]\nE: !Condition IsProd\n",
        )
        .unwrap();
        assert_eq!(doc["A"], long("Ref", s("Bucket")));
        assert_eq!(
            doc["B"],
            long(
                "Fn::GetAtt",
                Value::Sequence(vec![s("Db"), s("Endpoint.Address")])
            )
        );
        assert_eq!(doc["C"], long("Fn::Sub", s("${AWS::StackName}-x")));
        assert_eq!(
            doc["D"],
            long(
                "Fn::If",
                Value::Sequence(vec![
                    s("Cond"),
                    long("Ref", s("X")),
                    long("Ref", s("AWS::NoValue"))
                ])
            )
        );
        assert_eq!(doc["E"], long("Condition", s("IsProd")));
    }

    #[test]
    fn an_unknown_tag_is_an_error_naming_it() {
        let err = parse_template("A: !Reff Bucket\n").unwrap_err();
        assert!(
            matches!(&err, TemplateError::UnknownTag { tag } if tag == "Reff"),
            "{err:?}"
        );
        assert!(err.to_string().contains("!Reff"), "{err}");
    }

    #[test]
    fn invalid_yaml_reports_its_position() {
        let err = parse_template("Parameters:\n  A: [unclosed\n").unwrap_err();
        assert!(matches!(err, TemplateError::Yaml { .. }), "{err:?}");
        assert!(err.to_string().contains("line "), "{err}");
    }

    #[test]
    fn interface_lists_parameters_and_outputs_in_template_order() {
        let text = "\
Parameters:
  Size: { Type: Number, Default: 20, Description: GiB }
  Mode: { Type: String, Default: 'false', AllowedValues: ['true', 'false'] }
  Mappings: { Type: String }
Resources:
  Bucket: { Type: AWS::S3::Bucket }
Outputs:
  BucketName: { Description: the bucket, Value: !Ref Bucket }
  BucketArn: { Value: !GetAtt Bucket.Arn }
";
        let iface = interface(text).unwrap();
        let names: Vec<_> = iface.parameters.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Size", "Mode", "Mappings"]);
        let size = iface.parameter("Size").unwrap();
        assert_eq!(
            (size.kind.as_str(), size.default.as_deref()),
            ("Number", Some("20"))
        );
        assert_eq!(size.description.as_deref(), Some("GiB"));
        assert_eq!(
            iface.parameter("Mode").unwrap().allowed_values,
            ["true", "false"]
        );
        let required: Vec<_> = iface
            .required_parameters()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(required, ["Mappings"]);
        let outputs: Vec<_> = iface
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.description.as_deref()))
            .collect();
        assert_eq!(
            outputs,
            [("BucketName", Some("the bucket")), ("BucketArn", None)]
        );
    }

    #[test]
    fn a_template_without_parameters_or_outputs_has_an_empty_interface() {
        let iface = interface("Resources:\n  Q: { Type: AWS::SQS::Queue }\n").unwrap();
        assert_eq!(iface, TemplateInterface::default());
    }

    #[test]
    fn malformed_sections_are_errors_naming_the_entry() {
        let err = interface("Parameters:\n  Size: { Default: 3 }\n").unwrap_err();
        assert!(
            matches!(&err, TemplateError::ParameterWithoutType { name } if name == "Size"),
            "{err:?}"
        );

        let err =
            interface("Parameters:\n  Size: { Type: String, AllowedValues: a }\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("Parameters entry `Size`: `AllowedValues`"),
            "{err}"
        );

        let err = interface("Outputs: [a, b]\n").unwrap_err();
        assert!(
            matches!(err, TemplateError::SectionNotMapping { section: "Outputs" }),
            "{err:?}"
        );

        let err = interface("Outputs:\n  X: just text\n").unwrap_err();
        assert!(
            matches!(&err, TemplateError::EntryNotMapping { name, .. } if name == "X"),
            "{err:?}"
        );

        let err = interface("- a\n- b\n").unwrap_err();
        assert!(matches!(err, TemplateError::NotAMapping), "{err:?}");
    }

    #[test]
    fn the_embedded_template_declares_its_parameters_and_outputs() {
        let iface = interface(TEMPLATE).unwrap();
        let desired = iface.parameter("ProcessorDesiredCount").unwrap();
        assert_eq!(desired.default.as_deref(), Some("0"));
        assert_eq!(
            iface.parameter("MultiAZ").unwrap().default.as_deref(),
            Some("false")
        );
        let required: Vec<_> = iface
            .required_parameters()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(required, ["DMSTableMappings"]);
        assert!(iface.output("MSKBootstrapServers").is_some());
    }
}
