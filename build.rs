//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler), so a
//! fresh machine needs no system `protoc`. The descriptor set is also written
//! out so the wire-schema test can compare it with pymilvus' descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/status.proto", "proto/milvus.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("milvus_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".milvus.grpc.RowRecord.binary_data")
        .compile_fds(fds)?;
    Ok(())
}
