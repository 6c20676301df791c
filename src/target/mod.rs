//! Where the pipeline runs. `local` runs every service on this machine, on 127.0.0.1; `aws`
//! drives the embedded CloudFormation stack.

pub mod aws;
pub mod local;
