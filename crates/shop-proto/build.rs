//! Compiles every `.proto` under the workspace's `proto/` folder with protox (a pure-Rust
//! protobuf compiler, so no system `protoc` is needed) and generates prost types and
//! tonic stubs. The encoded descriptor set is kept for gRPC reflection.

use std::{
    env,
    error::Error,
    fs,
    path::{Path, PathBuf},
};

use prost::Message;

fn proto_files(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let root = root.canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    proto_files(&root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [&root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("shop_descriptor.bin");
    fs::write(&descriptor_path, descriptors.encode_to_vec())?;

    // `prost::Name` on every message: the event contracts take their type from it.
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure().skip_protoc_run().file_descriptor_set_path(&descriptor_path).compile_with_config(
        config,
        &files,
        &[root],
    )?;
    Ok(())
}
