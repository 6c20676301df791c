pub mod template;

// TEMPORARY module wiring of the aws control plane (the lead merges awscmd_mod_lines.txt).
pub mod assets;
pub mod athena;
pub mod clients;
pub mod compiled;
pub mod deploy;
pub mod dms;
pub mod ecr;
pub mod ecs;
pub mod error;
pub mod iam;
pub mod image;
pub mod msk;
pub mod naming;
pub mod outputs;
pub mod post_deploy;
pub mod progress;
pub mod registry;
pub mod stack;
pub mod status;
pub mod teardown;
