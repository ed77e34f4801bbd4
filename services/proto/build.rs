//! Generates the xinqiao.v1 code with protox (no system protoc) and keeps the file descriptor set
//! for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "xinqiao/v1/common.proto",
        "xinqiao/v1/directory.proto",
        "xinqiao/v1/schema.proto",
        "xinqiao/v1/exchange.proto",
        "xinqiao/v1/access.proto",
        "xinqiao/v1/audit.proto",
        "xinqiao/v1/evaluation.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::Compiler::new([&root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?
        .file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("xinqiao_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
