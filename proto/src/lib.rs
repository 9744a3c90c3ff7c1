//! The `arf.v1` contracts of the four ARF services, generated from `proto/arf/v1/*.proto`.
//!
//! Only the `grpc.rs` of each service (and clients) should use these types: domain crates
//! convert at that boundary.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("arf.v1");

    /// Encoded `FileDescriptorSet` of every `arf.v1` file, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/arf_v1_descriptor.bin"));
}

pub use v1::FILE_DESCRIPTOR_SET;

/// Fully-qualified gRPC service names, as health and reflection report them.
pub mod service_names {
    pub const ANALYZER: &str = "arf.v1.Analyzer";
    pub const EDITOR: &str = "arf.v1.Editor";
    pub const TRAINER: &str = "arf.v1.Trainer";
    pub const PIPELINE: &str = "arf.v1.Pipeline";
}

/// Each service's default port, the one place they are written (servers listen on them,
/// clients call them on loopback when told no endpoint).
pub mod default_ports {
    pub const PIPELINE: u16 = 50050;
    pub const ANALYZER: u16 = 50051;
    pub const EDITOR: u16 = 50052;
    pub const TRAINER: u16 = 50053;

    /// `http://127.0.0.1:PORT`: a service on this machine at its default port.
    pub fn loopback(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

/// Milliseconds since the Unix epoch as a protobuf timestamp (how every ARF store keeps time).
pub fn timestamp_from_millis(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}
