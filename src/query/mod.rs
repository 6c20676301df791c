//! SQL over the lake: DataFusion on the local target.

pub mod local;
pub mod render;
