//! Compiles `proto/chaff/v1/chaff.proto` into Rust with tonic/prost.
//!
//! A fresh clone must build with plain `cargo build`: we use `$PROTOC` when the
//! environment sets one, else the protoc binary shipped inside the
//! `protoc-bin-vendored` crate, so nobody installs protoc by hand.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the
        // environment concurrently.
        unsafe { env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // prost's codec answers INTERNAL to a request that does not decode
        // (e.g. invalid UTF-8 in a string field); ours says INVALID_ARGUMENT.
        .codec_path("crate::service::codec::ChaffCodec")
        // Reflection serves this descriptor set so generic clients (grpcurl)
        // work from the wire alone.
        .file_descriptor_set_path(out_dir.join("chaff_descriptor.bin"))
        .compile_protos(&["proto/chaff/v1/chaff.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
