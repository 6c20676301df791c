//! The `tables.yaml` model, its validation (with file positions) and its compilation.

pub mod layout;
pub mod model;
pub mod spec;
