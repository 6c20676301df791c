//! The `tables.yaml` model, its validation (with file positions) and its compilation.

pub mod column_type;
pub mod compile;
pub mod diagnostics;
pub mod fk_order;
pub mod layout;
pub mod load;
pub mod model;
pub mod placeholders;
pub mod positions;
pub mod spec;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use diagnostics::Diagnostic;
pub use load::{LoadContext, LoadError, LoadedConfig, load};
pub use validate::{ValidationReport, validate};

use spec::ConfigSpec;

/// A config that cannot be used: unreadable, not YAML, or invalid. Lists every error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}", InvalidDisplay { file, errors })]
    Invalid {
        file: String,
        errors: Vec<Diagnostic>,
    },
}

struct InvalidDisplay<'a> {
    file: &'a str,
    errors: &'a [Diagnostic],
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid config {} ({n} error{}):",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for e in self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Commands other than `validate` exit with 2 on any config error.
    pub const EXIT_CODE: u8 = 2;
}

/// Loads and validates a config; what every command but `validate` calls. Warnings are logged
/// at debug level (`dqetl validate` shows them).
pub fn load_spec(path: &Path, ctx: &LoadContext) -> Result<ConfigSpec, ConfigError> {
    let loaded = load(path, ctx)?;
    let report = validate(&loaded);
    for warning in &report.warnings {
        tracing::debug!(%warning, "config warning");
    }
    report.spec.ok_or(ConfigError::Invalid {
        file: report.file,
        errors: report.errors,
    })
}
