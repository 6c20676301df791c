//! `${STACK_NAME}`, `${AWS_ACCOUNT_ID}` and `${ENV:NAME}` in config values.
//!
//! The original substituted placeholders in the raw text before parsing YAML; dqetl resolves them
//! in scalar values after parsing, so line and column numbers stay those of the file.

use std::borrow::Cow;

/// What placeholders resolve to.
pub struct Resolver<'a> {
    pub stack_name: &'a str,
    /// None on the local target: `${AWS_ACCOUNT_ID}` then resolves to `local`.
    pub account_id: Option<&'a str>,
    /// Environment lookup (injectable so tests need not touch the process environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The account placeholder's value when there is no AWS account (local target).
pub const LOCAL_ACCOUNT: &str = "local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("environment variable `{0}` is not set (referenced as `${{ENV:{0}}}`)")]
    UnsetEnv(String),
    #[error("unknown placeholder `${{{0}}}`")]
    Unknown(String),
    #[error("unterminated placeholder: `${{` without a closing `}}`")]
    Unterminated,
}

impl PlaceholderError {
    pub fn hint(&self) -> Option<String> {
        match self {
            PlaceholderError::UnsetEnv(name) => {
                Some(format!("export {name}=... before running dqetl"))
            }
            PlaceholderError::Unknown(_) | PlaceholderError::Unterminated => {
                Some("placeholders are ${STACK_NAME}, ${AWS_ACCOUNT_ID} and ${ENV:NAME}".into())
            }
        }
    }
}

impl Resolver<'_> {
    /// The text with every placeholder replaced; borrowed when there is none.
    pub fn resolve<'t>(&self, text: &'t str) -> Result<Cow<'t, str>, PlaceholderError> {
        if !text.contains("${") {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(PlaceholderError::Unterminated)?;
            out.push_str(&self.value_of(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Cow::Owned(out))
    }

    fn value_of(&self, name: &str) -> Result<String, PlaceholderError> {
        match name {
            "STACK_NAME" => Ok(self.stack_name.to_string()),
            "AWS_ACCOUNT_ID" => Ok(self.account_id.unwrap_or(LOCAL_ACCOUNT).to_string()),
            _ => match name.strip_prefix("ENV:") {
                Some(var) if !var.is_empty() => {
                    (self.env)(var).ok_or_else(|| PlaceholderError::UnsetEnv(var.to_string()))
                }
                _ => Err(PlaceholderError::Unknown(name.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "DB_SCHEMA").then(|| "sales".to_string())
    }

    fn resolver(account: Option<&'static str>) -> Resolver<'static> {
        Resolver {
            stack_name: "demo",
            account_id: account,
            env: &env,
        }
    }

    #[test]
    fn stack_and_account_are_substituted_everywhere_in_the_value() {
        let r = resolver(Some("123456789012"));
        assert_eq!(
            r.resolve("s3://${STACK_NAME}-delta-${AWS_ACCOUNT_ID}/x/")
                .unwrap(),
            "s3://demo-delta-123456789012/x/"
        );
    }

    #[test]
    fn without_an_account_the_account_is_local() {
        assert_eq!(
            resolver(None)
                .resolve("${STACK_NAME}-${AWS_ACCOUNT_ID}")
                .unwrap(),
            "demo-local"
        );
    }

    #[test]
    fn environment_placeholders_read_the_environment() {
        assert_eq!(resolver(None).resolve("${ENV:DB_SCHEMA}").unwrap(), "sales");
        assert_eq!(
            resolver(None).resolve("${ENV:NOT_SET_ANYWHERE}"),
            Err(PlaceholderError::UnsetEnv("NOT_SET_ANYWHERE".into()))
        );
    }

    #[test]
    fn unknown_and_unterminated_placeholders_are_errors() {
        assert_eq!(
            resolver(None).resolve("${STACK}"),
            Err(PlaceholderError::Unknown("STACK".into()))
        );
        assert_eq!(
            resolver(None).resolve("${ENV:}"),
            Err(PlaceholderError::Unknown("ENV:".into()))
        );
        assert_eq!(
            resolver(None).resolve("abc ${STACK_NAME"),
            Err(PlaceholderError::Unterminated)
        );
    }

    #[test]
    fn text_without_placeholders_is_borrowed_unchanged() {
        assert!(matches!(
            resolver(None).resolve("cdc-vehicles $5 {x}"),
            Ok(Cow::Borrowed("cdc-vehicles $5 {x}"))
        ));
    }
}
