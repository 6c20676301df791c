//! Where the pipeline runs. `local` runs every service on this machine, on 127.0.0.1.

pub mod local;
