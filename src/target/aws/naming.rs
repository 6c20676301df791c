//! Names derived from the stack name. The template names buckets `<stack>-quarantine-<account>`,
//! which must fit S3's 63 characters, so the stack name is checked before anything is created.

use sha2::{Digest, Sha256};

use crate::target::aws::error::AwsError;

/// The longest stack name whose derived bucket names stay within S3's limit.
pub const MAX_STACK_NAME: usize = 39;

/// The tag every resource dqetl creates carries (the template tags its own resources as well).
pub const PROJECT_TAG: (&str, &str) = ("Project", "dqetl");

/// Checks a stack name against the template's naming rules.
pub fn validate_stack_name(name: &str) -> Result<(), AwsError> {
    let invalid = |reason| {
        Err(AwsError::InvalidStackName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_STACK_NAME {
        return invalid("it is longer than 39 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("it must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid("it may hold only lowercase letters, digits and hyphens");
    }
    if name.ends_with('-') || name.contains("--") {
        return invalid("it may not end with a hyphen or hold two in a row");
    }
    Ok(())
}

/// The bucket that holds the template (and exists before the stack does):
/// `<stack>-cfn-<account>-<region>`. When that exceeds 63 characters the stack part is shortened
/// and a hash of the full stack name keeps it unique and stable.
pub fn bootstrap_bucket(stack: &str, account: &str, region: &str) -> String {
    let suffix = format!("-cfn-{account}-{region}");
    let full = format!("{stack}{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(Sha256::digest(stack.as_bytes()));
    let room = 63usize.saturating_sub(suffix.len() + 9);
    let prefix = stack[..room.min(stack.len())].trim_end_matches('-');
    format!("{prefix}-{}{suffix}", &hash[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_follow_the_bucket_rules() {
        for ok in ["dqetl", "fleet-prod-2", &"a".repeat(39)] {
            assert!(validate_stack_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Dqetl", "1abc", "a_b", "abc-", "a--b", &"a".repeat(40)] {
            let err = validate_stack_name(bad).unwrap_err();
            assert!(
                matches!(err, AwsError::InvalidStackName { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bootstrap_bucket_is_the_plain_name_when_it_fits() {
        assert_eq!(
            bootstrap_bucket("dqetl", "123456789012", "us-east-1"),
            "dqetl-cfn-123456789012-us-east-1"
        );
    }

    #[test]
    fn long_stack_names_give_a_short_unique_bootstrap_bucket() {
        let a = bootstrap_bucket(&"a".repeat(39), "123456789012", "ap-southeast-2");
        let b = bootstrap_bucket(
            &format!("{}b", "a".repeat(38)),
            "123456789012",
            "ap-southeast-2",
        );
        assert!(a.len() <= 63, "{a}");
        assert!(a.ends_with("-cfn-123456789012-ap-southeast-2"), "{a}");
        assert_ne!(a, b, "different stacks must not share a bucket");
        assert_eq!(
            a,
            bootstrap_bucket(&"a".repeat(39), "123456789012", "ap-southeast-2"),
            "stable"
        );
    }
}
