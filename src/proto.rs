//! Generated protobuf messages and gRPC stubs for the vendored googleapis
//! protos, exactly as `build.rs` compiles them. Nothing here is edited by hand.
//!
//! The protos are vendored unmodified, but code is generated only for what
//! the crate serves: the batch prediction RPCs of `JobService`,
//! `google.longrunning.Operations`, `LlmUtilityService/CountTokens`,
//! `GenerateContentRequest` / `GenerateContentResponse`, the BigQuery
//! Storage Read API's `CreateReadSession` and `ReadRows`, `google.rpc`, and
//! every type they reach (`build.rs` prunes the compiled descriptors). That keeps the clean build
//! small; other Vertex AI job kinds and services are not here.
//!
//! This is the escape hatch for anything the facade does not cover: every
//! message has its prost type and its proto3 JSON (serde) mapping, the
//! `JobService`, `LlmUtilityService` and `Operations` clients are under
//! `*_client` modules, and with the `server` feature the server traits are under `*_server` modules
//! (every method has a default that answers `UNIMPLEMENTED`).
//!
//! The well-known types (`google.protobuf.*`) come from [`pbjson_types`],
//! re-exported here as [`protobuf`].
#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    rustdoc::all,
    unreachable_pub,
    unused_qualifications
)]

pub use pbjson_types as protobuf;

macro_rules! include_package {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file, ".rs"));
        include!(concat!(env!("OUT_DIR"), "/", $file, ".serde.rs"));
    };
}

/// Generated code for the `google.*` proto packages.
pub mod google {
    /// `google.api`: resource and field annotations.
    pub mod api {
        include_package!("google.api");
    }
    /// `google.cloud`.
    pub mod cloud {
        /// `google.cloud.aiplatform`.
        pub mod aiplatform {
            /// `google.cloud.aiplatform.v1`: `JobService` and its messages.
            pub mod v1 {
                include_package!("google.cloud.aiplatform.v1");
            }
        }
        /// `google.cloud.bigquery`.
        pub mod bigquery {
            /// `google.cloud.bigquery.storage`.
            pub mod storage {
                /// `google.cloud.bigquery.storage.v1`: the Storage Read API
                /// (`BigQueryRead`: `CreateReadSession`, `ReadRows`).
                pub mod v1 {
                    include_package!("google.cloud.bigquery.storage.v1");
                }
            }
        }
    }
    /// `google.longrunning`: the `Operations` service.
    pub mod longrunning {
        include_package!("google.longrunning");
    }
    /// `google.rpc`: `Status` and its error details.
    pub mod rpc {
        include_package!("google.rpc");
    }
    /// `google.type`.
    pub mod r#type {
        include_package!("google.r#type");
    }
}

pub use google::cloud::aiplatform::v1 as aiplatform;
pub use google::longrunning;
pub use google::rpc;
