//! The `tables.yaml` model, its validation (with file positions) and its compilation.

pub mod model;
pub mod spec;
