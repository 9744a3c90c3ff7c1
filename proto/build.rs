//! Compiles `arf/v1/*.proto` with protox (a pure-Rust protobuf compiler: no system `protoc`),
//! generates messages and tonic clients/servers into OUT_DIR, and writes the encoded file
//! descriptor set that the servers hand to gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "arf/v1/common.proto",
    "arf/v1/analyzer.proto",
    "arf/v1/editor.proto",
    "arf/v1/trainer.proto",
    "arf/v1/pipeline.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("arf_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
