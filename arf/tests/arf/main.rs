//! arf's integration tests, one binary (each test file a module): every test binary
//! links the whole dependency tree, and on two cores each link costs minutes.

#[path = "../support/mod.rs"]
mod support;

mod deploy_artifacts;
mod editor_discovery;
mod editor_reference;
mod failover;
mod fault_injection;
mod faults;
mod hostile_requests;
mod openai_upstream;
mod pipeline;
mod preference_export;
mod privacy;
mod python_client;
mod real_model;
mod resilience;
mod runs;
mod teacher_and_comparison;
mod vendored_patches;
