//! analyzer-svc's integration tests, one binary (each test file a module): every test binary
//! links the whole dependency tree, and on two cores each link costs minutes.

mod grpc;
mod judges;
