//! Cloud Storage for the data plane: upload, list and stream-read objects.
//!
//! Built on the `tame-gcs` crate, which builds Cloud Storage JSON API
//! requests (uploads, listing, downloads), so every call the crate makes
//! can be tested offline against fake-gcs-server. (`object_store` writes
//! through the XML API, which fake-gcs-server does not accept, and Google's
//! own `google-cloud-storage` lists over gRPC, which it does not serve.)
//! tame-gcs does no I/O: its requests go out over hyper with rustls on
//! *ring* — the HTTP stack and crypto the crate already has for gcp_auth
//! and gRPC — with the trust roots the features select. Written here
//! rather than taken from tame-gcs: object names in URLs (it leaves
//! reserved characters unescaped, so it is given a placeholder), the
//! reading of answers (only bucket, name and size, so nothing newer than
//! its model of an object fails a call), the resumable chunk protocol
//! (`Content-Range`, `308`, status queries) and bucket creation.

//! # Credentials and emulators
//!
//! [`Storage::for_client`] shares the JobService client's token cache: one
//! token source, refreshed once, for both APIs (scope `cloud-platform`
//! covers both). `STORAGE_EMULATOR_HOST` (Google's convention, e.g.
//! `http://127.0.0.1:4443` or `127.0.0.1:4443`) points storage at an
//! emulator over plaintext and sends no credentials.
//!
//! # Retries, stalled connections and proxies
//!
//! Every call that is safe to repeat runs under the crate's
//! [`RetryPolicy`](crate::policy::RetryPolicy) — the JobService client's,
//! for a client built with [`Storage::for_client`] or
//! [`StorageBuilder::credentials_of`], so one budget governs both APIs
//! ([`StorageBuilder::retry_policy`] sets another). A request that makes
//! no progress for the idle timeout ([`StorageBuilder::idle_timeout`],
//! 60 s) fails retryably. `HTTPS_PROXY` / `NO_PROXY`, or
//! [`StorageBuilder::proxy`], route connections through an HTTP `CONNECT`
//! tunnel, TLS inside it.
//!
//! # Memory
//!
//! Uploads are resumable and chunked ([`ObjectWriter`]): memory holds one
//! chunk (8 MiB by default) whatever the object's size. Downloads are streams
//! of chunks as they arrive.

mod builder;
mod handle;
pub(crate) mod local;
mod objects;
pub(crate) mod retry;
pub(crate) mod upload;
pub(crate) mod wire;

pub use builder::{
    StorageBuilder, DEFAULT_ENDPOINT, DEFAULT_IDLE_TIMEOUT, ENV_STORAGE_EMULATOR_HOST,
};
pub use handle::{ObjectInfo, Storage, StorageCalls};
pub use upload::{ObjectWriter, CHUNK_QUANTUM, DEFAULT_CHUNK_SIZE};

#[cfg(test)]
mod tests {
    use super::{builder::*, handle::*};
    use crate::{error::Error, transport::auth::Credentials, uri::GcsUri};
    use bytes::Bytes;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn a_local_directory_stands_in_for_cloud_storage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path());
        let u: GcsUri = "gs://bkt/a/b.jsonl".parse().unwrap();
        let mut w = s.writer(&u).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(
            s.metadata(&u).await.unwrap(),
            None,
            "not visible before finish"
        );
        assert_eq!(w.finish().await.unwrap().size(), 11);
        assert!(dir.path().join("bkt/a/b.jsonl").is_file());
        let part: Vec<Bytes> = s
            .read(&u, Some(6..11))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(part.concat(), b"world");
        // Past the end: a 416, as Cloud Storage answers.
        assert!(matches!(
            s.read(&u, Some(11..20)).await.err(),
            Some(Error::Storage {
                http_status: Some(416),
                ..
            })
        ));
        s.upload_bytes(&"gs://bkt/a/c".parse().unwrap(), &b"x"[..])
            .await
            .unwrap();
        s.upload_bytes(&"gs://bkt/ab".parse().unwrap(), &b"x"[..])
            .await
            .unwrap();
        let listed: Vec<ObjectInfo> = s
            .list(&"gs://bkt/a/".parse().unwrap())
            .try_collect()
            .await
            .unwrap();
        let names: Vec<String> = listed.iter().map(|o| o.uri().to_string()).collect();
        assert_eq!(names, ["gs://bkt/a/b.jsonl", "gs://bkt/a/c"]);
        let all: Vec<ObjectInfo> = s
            .list(&"gs://bkt/a".parse().unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        s.delete(&u).await.unwrap();
        assert!(matches!(
            s.read(&u, None).await.err(),
            Some(Error::Storage {
                http_status: Some(404),
                ..
            })
        ));
    }

    #[test]
    fn emulator_hosts_parse_and_userinfo_is_refused() {
        assert_eq!(
            emulator_url("127.0.0.1:4443").unwrap(),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            emulator_url("http://localhost:4443/").unwrap(),
            "http://localhost:4443"
        );
        assert!(emulator_url("http://127.0.0.1:1@evil.example:80").is_err());
        assert!(emulator_url("127.0.0.1:4443/storage").is_err());
        assert!(is_loopback_url("http://[::1]:80"));
        assert!(!is_loopback_url("http://10.0.0.1:80"));
        assert!(https_url("http://storage.example:80").is_err());
        assert!(https_url("https://storage.example/prefix").is_err());
        assert!(https_url("https://user@storage.example").is_err());
        assert!(https_url("https://storage.example/?x=1").is_err());
        assert_eq!(
            https_url("storage.example").unwrap(),
            "https://storage.example"
        );
    }

    #[tokio::test]
    async fn credentials_never_go_in_plaintext_to_a_remote_emulator() {
        let err = Storage::builder()
            .ignore_env()
            .emulator_host("http://10.1.2.3:4443")
            .credentials(Credentials::access_token("secret-token"))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(!err.to_string().contains("secret-token"));
        let ok = Storage::builder()
            .ignore_env()
            .emulator_host("10.1.2.3:4443")
            .build()
            .unwrap();
        assert_eq!(ok.endpoint(), "http://10.1.2.3:4443");
        let s = Storage::builder()
            .ignore_env()
            .credentials(Credentials::access_token("secret-token"))
            .build()
            .unwrap();
        assert!(!format!("{s:?}").contains("secret-token"));
        assert_eq!(s.endpoint(), DEFAULT_ENDPOINT);
    }
}
