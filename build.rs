//! Compiles the vendored googleapis protos in `proto/` into tonic/prost stubs
//! plus proto3-JSON (serde) impls. Pure Rust: protox replaces `protoc`.

use std::{env, error::Error, fs, path::PathBuf, process::Command};

use prost::Message;

const ROOTS: &[&str] = &[
    "google/cloud/aiplatform/v1/job_service.proto",
    "google/cloud/aiplatform/v1/prediction_service.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(ROOTS, ["proto"])?;
    let descriptor_path = out.join("descriptors.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    let descriptors = fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .extern_path(".google.protobuf", "::pbjson_types")
        // Batch output comes from newer API versions than our protos: a field
        // or an enum value we do not know must not fail a row.
        .ignore_unknown_fields()
        .ignore_unknown_enum_variants()
        .build(&[
            ".google.api",
            ".google.cloud.aiplatform.v1",
            ".google.longrunning",
            ".google.rpc",
            ".google.type",
        ])?;

    // `x-goog-api-client` reports the compiler version (`gl-rust/<version>`).
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=VERTEX_BATCH_RUSTC_VERSION={version}");
    Ok(())
}
