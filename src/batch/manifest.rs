//! The truth a batch starts from: `STAGING/KEY/manifest.json` (or a
//! BigQuery table description), its parts and rounds, the digest of the
//! staged prompts, and the checks a re-run passes before it submits.

use super::spec::BatchSpec;

use serde::{Deserialize, Serialize};

use crate::{
    batch::stage::{Area, Version},
    format::input::{BatchRequest, InputEncoder},
};
use crate::{
    client::Client,
    error::{Error, Result},
};

/// What `STAGING/KEY/manifest.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(super) version: u32,
    pub(super) request_key: String,
    /// The location the jobs run in (`projects/P/locations/L`); absent in
    /// version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) parent: Option<String>,
    /// The job template's fingerprint (what the caller asked for, not
    /// what the crate defaulted); absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) spec: Option<String>,
    /// What was staged; absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) prompts: Option<PromptsDigest>,
    /// The staged input files, in order.
    pub(crate) inputs: Vec<StagedFile>,
    /// Round 0 runs the inputs; each later round retries what failed.
    pub(crate) rounds: Vec<Round>,
}

/// The staged prompts: how many, and the SHA-256 of their request lines
/// in order (the lines as staged, whatever the parts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PromptsDigest {
    pub(super) rows: u64,
    pub(super) sha256: String,
}

/// The manifest's version now; version 1 (no parent, spec or prompts
/// digest) is still read.
pub(super) const MANIFEST_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StagedFile {
    pub(crate) uri: String,
    pub(super) rows: u64,
    pub(super) bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Round {
    pub(crate) parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Part {
    pub(crate) input: String,
    pub(crate) output_prefix: String,
    pub(crate) rows: u64,
    pub(super) request_key: String,
}

/// The batch's prompts encoded one line at a time, as they are staged,
/// and the SHA-256 of every line: the digest a manifest records and a
/// re-run is checked against.
pub(super) struct PromptsDigester {
    pub(super) enc: InputEncoder,
    digest: ring::digest::Context,
    /// The line [`PromptsDigester::encode`] encoded last.
    pub(super) line: Vec<u8>,
}

impl PromptsDigester {
    pub(super) fn new(spec: &BatchSpec) -> Result<Self> {
        Ok(PromptsDigester {
            enc: spec.encoder()?,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            line: Vec::with_capacity(4096),
        })
    }

    /// Encodes one prompt into [`PromptsDigester::line`], digests it, and
    /// returns the part it belongs to.
    pub(super) fn encode(&mut self, key: &str, request: impl Into<BatchRequest>) -> Result<usize> {
        self.line.clear();
        let part = self.enc.encode(key, request, &mut self.line)?;
        self.digest.update(&self.line);
        Ok(part)
    }

    pub(super) fn finish(self) -> PromptsDigest {
        let sha256 = self
            .digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PromptsDigest {
            rows: self.enc.rows(),
            sha256,
        }
    }
}

/// The digest [`stage`](super::start::stage) would record for `prompts`,
/// without uploading.
pub(super) fn digest_prompts<I, K, R>(spec: &BatchSpec, prompts: I) -> Result<PromptsDigest>
where
    I: IntoIterator<Item = (K, R)>,
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let mut d = PromptsDigester::new(spec)?;
    for (key, request) in prompts {
        d.encode(key.as_ref(), request)?;
    }
    Ok(d.finish())
}

/// Placeholders for a part's input and output while the template is
/// checked and fingerprinted (every part's are set when it is submitted).
pub(super) const TEMPLATE_INPUT: &str = "gs://vertex-batch-template/input.jsonl";
pub(super) const TEMPLATE_OUTPUT: &str = "gs://vertex-batch-template/output";

/// An error unless the staged batch `m` can be resumed by `client` with
/// the template of `fingerprint`. Errors name the batch's key — the one
/// the caller gave — and say how to resume, never to start over.
pub(super) fn check_resume(
    m: &Manifest,
    key: &str,
    root: &str,
    client: &Client,
    fingerprint: &str,
) -> Result<()> {
    if m.request_key != key {
        return Err(Error::Output {
            file: format!("{root}: {MANIFEST}"),
            line: 1,
            message: format!("the manifest is for batch {:?}, not {key:?}", m.request_key),
        });
    }
    let here = client.parent().to_string();
    if let Some(there) = m.parent.as_deref().filter(|p| *p != here) {
        return Err(Error::validation(
            "location",
            format!(
                "batch {key:?} under {root} runs its jobs in {there}, and this client is for \
                 {here}: resume it with a client for {there}"
            ),
        ));
    }
    if let Some(theirs) = m.spec.as_deref().filter(|s| *s != fingerprint) {
        return Err(Error::validation(
            "request_key",
            format!(
                "batch {key:?} under {root} was started with another job spec (spec {theirs}, \
                 this one {fingerprint}: the model, parameters, labels, display name, service \
                 account or encryption key differ); resume it with the spec it was started with"
            ),
        ));
    }
    Ok(())
}

pub(super) fn other_prompts(
    key: &str,
    root: &str,
    staged: &PromptsDigest,
    given: &PromptsDigest,
) -> Error {
    let what = if staged.rows == given.rows {
        format!("{} prompts, but not the same ones", given.rows)
    } else {
        format!("{} prompts, not {}", given.rows, staged.rows)
    };
    Error::validation(
        "prompts",
        format!(
            "batch {key:?} under {root} was staged from other prompts: these are {what}. \
             Resume it with the prompts it was staged from (or with Client::resume_batch); \
             new prompts need a new request key"
        ),
    )
}

/// The batch's manifest document.
pub(super) const MANIFEST: &str = "manifest.json";

/// The manifest and its version, or `None` when there is none.
pub(super) async fn read_manifest(area: &Area) -> Result<Option<(Manifest, Option<Version>)>> {
    let Some((bytes, version)) = area.read_doc(MANIFEST).await? else {
        return Ok(None);
    };
    let at = area.doc_name(MANIFEST);
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Output {
        file: at.clone(),
        line: 1,
        message: format!("not a batch manifest: {e}"),
    })?;
    if !(1..=MANIFEST_VERSION).contains(&m.version) || m.rounds.is_empty() {
        return Err(Error::Output {
            file: at,
            line: 1,
            message: format!("unsupported batch manifest (version {})", m.version),
        });
    }
    Ok(Some((m, version)))
}

/// Writes `m` over the manifest at `version` (the one last read), and
/// returns the new version. An error when another process wrote the
/// manifest since: the caller reads it again. Without a known version the
/// write is unconditional.
pub(super) async fn write_manifest(
    area: &Area,
    m: &Manifest,
    version: Option<&Version>,
) -> Result<Option<Version>> {
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::config(format!("writing the batch manifest: {e}")))?;
    let written = match version {
        Some(v) => area.replace_doc(MANIFEST, json, v).await?,
        None => Some(area.put_doc(MANIFEST, json).await?),
    };
    match written {
        Some(version) => Ok(version),
        None => Err(Error::Storage {
            message: format!(
                "{} changed while this process was retrying the batch (another process \
                 retried it too?); nothing was submitted: start the batch again to see its rounds",
                area.doc_name(MANIFEST)
            ),
            http_status: Some(412),
            source: None,
        }),
    }
}
