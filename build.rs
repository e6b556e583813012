//! Compiles the vendored googleapis protos in `proto/` into tonic/prost stubs
//! plus proto3-JSON (serde) impls. Pure Rust: protox replaces `protoc`.
//!
//! The protos stay byte for byte as Google publishes them, but
//! `job_service.proto` declares every Vertex AI job kind and its import
//! closure is large. Before generating code, the compiled descriptors are
//! pruned to what this crate serves: the batch prediction RPCs of
//! `JobService` (plus `DeleteCustomJob`, kept as a cheap UNIMPLEMENTED probe
//! for tests), `google.longrunning.Operations`, `LlmUtilityService`'s
//! `CountTokens`, the BigQuery Storage Read
//! API's `CreateReadSession` and `ReadRows` (the fast path for output
//! tables), the `GenerateContentRequest`
//! and `GenerateContentResponse` messages, `google.rpc`, and every type they
//! reach. Other services, RPCs and unreachable messages generate nothing.

use std::{
    collections::{BTreeSet, HashMap},
    env,
    error::Error,
    fs,
    path::PathBuf,
    process::Command,
};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};

const ROOTS: &[&str] = &[
    "google/cloud/bigquery/storage/v1/storage.proto",
    "google/cloud/aiplatform/v1/job_service.proto",
    "google/cloud/aiplatform/v1/prediction_service.proto",
    "google/cloud/aiplatform/v1/llm_utility_service.proto",
    "google/rpc/error_details.proto",
];

/// The RPCs kept, by service.
const KEEP_METHODS: &[(&str, &[&str])] = &[
    (
        "google.cloud.aiplatform.v1.JobService",
        &[
            "CreateBatchPredictionJob",
            "GetBatchPredictionJob",
            "ListBatchPredictionJobs",
            "DeleteBatchPredictionJob",
            "CancelBatchPredictionJob",
            "DeleteCustomJob",
        ],
    ),
    ("google.longrunning.Operations", &["*"]),
    // Token counting before a job runs. In v1 `CountTokens` is an RPC of
    // `LlmUtilityService` (v1's `PredictionService` declares none).
    (
        "google.cloud.aiplatform.v1.LlmUtilityService",
        &["CountTokens"],
    ),
    (
        "google.cloud.bigquery.storage.v1.BigQueryRead",
        &["CreateReadSession", "ReadRows"],
    ),
];

/// Messages kept (with everything they reach) besides the RPCs' own.
const KEEP_MESSAGES: &[&str] = &[
    "google.cloud.aiplatform.v1.GenerateContentRequest",
    "google.cloud.aiplatform.v1.GenerateContentResponse",
    "google.cloud.aiplatform.v1.DeleteOperationMetadata",
    "google.cloud.aiplatform.v1.GenericOperationMetadata",
];

/// Packages kept whole (small, and decoded from status details).
const KEEP_PACKAGES: &[&str] = &["google.rpc", "google.longrunning"];

/// The packages `src/proto.rs` includes (a file is written for each, empty
/// when pruning left nothing in it).
const PACKAGES: &[&str] = &[
    "google.api",
    "google.cloud.aiplatform.v1",
    "google.cloud.bigquery.storage.v1",
    "google.longrunning",
    "google.rpc",
    "google.type",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var("OUT_DIR")?);

    let mut fds = protox::compile(ROOTS, ["proto"])?;
    prune(&mut fds);
    let descriptor_path = out.join("descriptors.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .server_mod_attribute(".", r#"#[cfg(feature = "server")]"#)
        .compile_well_known_types(true)
        // A block of rows stays in the buffer it arrived in (no copy).
        .bytes(".google.cloud.bigquery.storage.v1.AvroRows")
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
        .build(&PACKAGES.iter().map(|p| format!(".{p}")).collect::<Vec<_>>())?;
    for p in PACKAGES {
        for ext in ["rs", "serde.rs"] {
            let f = out.join(format!("{p}.{ext}"));
            if !f.exists() {
                fs::write(f, "")?;
            }
        }
    }

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

/// Removes the services, RPCs and top-level types nothing kept reaches.
fn prune(fds: &mut FileDescriptorSet) {
    // Every top-level message and enum by full name (`pkg.Name`), and the
    // type names each message's fields (nested types included) refer to.
    let mut refs: HashMap<String, Vec<String>> = HashMap::new();
    fn collect(prefix: &str, m: &DescriptorProto, out: &mut Vec<String>) {
        for f in &m.field {
            if let Some(t) = &f.type_name {
                out.push(t.trim_start_matches('.').to_owned());
            }
        }
        for n in &m.nested_type {
            collect(&format!("{prefix}.{}", n.name()), n, out);
        }
    }
    for file in &fds.file {
        let pkg = file.package();
        for m in &file.message_type {
            let name = format!("{pkg}.{}", m.name());
            let mut out = Vec::new();
            collect(&name, m, &mut out);
            refs.insert(name, out);
        }
        for e in &file.enum_type {
            refs.insert(format!("{pkg}.{}", e.name()), Vec::new());
        }
    }
    let top_level = |t: &str| -> Option<String> {
        // `pkg.Outer.Inner` → the top-level `pkg.Outer` that holds it.
        let mut cur = t.to_owned();
        loop {
            if refs.contains_key(&cur) {
                return Some(cur);
            }
            let (head, _) = cur.rsplit_once('.')?;
            cur = head.to_owned();
        }
    };
    let mut todo: Vec<String> = KEEP_MESSAGES.iter().map(|s| s.to_string()).collect();
    for file in &fds.file {
        let pkg = file.package();
        for s in &file.service {
            let full = format!("{pkg}.{}", s.name());
            let Some((_, keep)) = KEEP_METHODS.iter().find(|(n, _)| *n == full) else {
                continue;
            };
            for m in &s.method {
                if keep.contains(&"*") || keep.contains(&m.name()) {
                    todo.push(m.input_type().trim_start_matches('.').to_owned());
                    todo.push(m.output_type().trim_start_matches('.').to_owned());
                }
            }
        }
        if KEEP_PACKAGES.contains(&pkg) {
            todo.extend(
                file.message_type
                    .iter()
                    .map(|m| format!("{pkg}.{}", m.name())),
            );
            todo.extend(file.enum_type.iter().map(|e| format!("{pkg}.{}", e.name())));
        }
    }
    let mut keep = BTreeSet::new();
    while let Some(t) = todo.pop() {
        let Some(top) = top_level(&t) else { continue };
        if keep.insert(top.clone()) {
            todo.extend(refs.get(&top).cloned().unwrap_or_default());
        }
    }
    for file in &mut fds.file {
        let pkg = file.package().to_owned();
        // Old index → new index of what stays, per kind.
        let remap = |kept: Vec<bool>| -> Vec<Option<i32>> {
            let mut next = 0;
            kept.into_iter()
                .map(|k| {
                    k.then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        };
        let messages = remap(
            file.message_type
                .iter()
                .map(|m| keep.contains(&format!("{pkg}.{}", m.name())))
                .collect(),
        );
        let enums = remap(
            file.enum_type
                .iter()
                .map(|e| keep.contains(&format!("{pkg}.{}", e.name())))
                .collect(),
        );
        let kept_methods: Vec<Option<Vec<bool>>> = file
            .service
            .iter()
            .map(|s| {
                let full = format!("{pkg}.{}", s.name());
                KEEP_METHODS
                    .iter()
                    .find(|(n, _)| *n == full)
                    .map(|(_, names)| {
                        s.method
                            .iter()
                            .map(|m| names.contains(&"*") || names.contains(&m.name()))
                            .collect()
                    })
            })
            .collect();
        let services = remap(kept_methods.iter().map(Option::is_some).collect());
        let methods: Vec<Vec<Option<i32>>> = kept_methods
            .iter()
            .map(|k| k.clone().map(remap).unwrap_or_default())
            .collect();
        let mut i = 0;
        file.message_type.retain(|_| {
            i += 1;
            messages[i - 1].is_some()
        });
        let mut i = 0;
        file.enum_type.retain(|_| {
            i += 1;
            enums[i - 1].is_some()
        });
        let mut i = 0;
        file.service.retain_mut(|s| {
            i += 1;
            let Some(keep_m) = &kept_methods[i - 1] else {
                return false;
            };
            let mut j = 0;
            s.method.retain(|_| {
                j += 1;
                keep_m[j - 1]
            });
            true
        });
        // Source locations (doc comments) are addressed by index: renumber
        // them, and drop those of what was removed.
        if let Some(info) = file.source_code_info.as_mut() {
            info.location.retain_mut(|loc| {
                let p = &mut loc.path;
                let at = |v: &[Option<i32>], i: i32| v.get(i as usize).copied().flatten();
                match (p.first().copied(), p.get(1).copied()) {
                    (Some(4), Some(i)) => at(&messages, i).map(|n| p[1] = n).is_some(),
                    (Some(5), Some(i)) => at(&enums, i).map(|n| p[1] = n).is_some(),
                    (Some(6), Some(i)) => {
                        let Some(n) = at(&services, i) else {
                            return false;
                        };
                        p[1] = n;
                        match (p.get(2).copied(), p.get(3).copied()) {
                            (Some(2), Some(m)) => {
                                let mm = methods.get(i as usize).map(Vec::as_slice).unwrap_or(&[]);
                                at(mm, m).map(|x| p[3] = x).is_some()
                            }
                            _ => true,
                        }
                    }
                    _ => true,
                }
            });
        }
    }
}
