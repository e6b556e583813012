//! Typed storage locations: Cloud Storage (`gs://`) and BigQuery (`bq://`)
//! URIs, and the job's input source and output destination built from them.

use std::{fmt, str::FromStr};

use crate::{names::check_project, validation::ValidationError};

type Result<T, E = ValidationError> = std::result::Result<T, E>;

/// A Cloud Storage location `gs://bucket[/object]`.
///
/// The object may hold the wildcards `*`, `?` and `[...]` (Vertex AI expands
/// them for inputs).
///
/// ```
/// use vertex_batch::GcsUri;
/// let uri: GcsUri = "gs://my-bucket/prompts/*.jsonl".parse()?;
/// assert_eq!(uri.bucket(), "my-bucket");
/// assert_eq!(uri.object(), "prompts/*.jsonl");
/// assert!(uri.has_wildcard());
/// assert!("gs://Bad_Bucket!/x".parse::<GcsUri>().is_err());
/// # Ok::<_, vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GcsUri {
    bucket: String,
    object: String,
}

impl GcsUri {
    /// Parses `uri`, naming `field` in any error.
    ///
    /// ```
    /// use vertex_batch::GcsUri;
    /// let out = GcsUri::parse_field("gs://bkt/results", "output_uri")?;
    /// assert_eq!(out.to_string(), "gs://bkt/results");
    /// assert_eq!(GcsUri::parse_field("s3://bkt/x", "output_uri").unwrap_err().field(), "output_uri");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn parse_field(uri: &str, field: &str) -> Result<Self> {
        let bad = |why: String| ValidationError::new(field, format!("{uri:?}: {why}"));
        let rest = uri
            .strip_prefix("gs://")
            .ok_or_else(|| bad("a Cloud Storage URI starts with gs://".into()))?;
        let (bucket, object) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name after gs://".into()));
        }
        let bucket_ok = (3..=222).contains(&bucket.len())
            && bucket.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            return Err(bad(format!(
                "bucket {bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '_' or '.')"
            )));
        }
        if object.len() > 1024 {
            return Err(bad("object names are at most 1024 bytes".into()));
        }
        if object.chars().any(|c| c.is_control()) {
            return Err(bad("object names cannot contain control characters".into()));
        }
        if object.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad(
                "object names cannot contain '.' or '..' segments".into()
            ));
        }
        Ok(GcsUri {
            bucket: bucket.to_owned(),
            object: object.to_owned(),
        })
    }

    /// The bucket.
    ///
    /// ```
    /// use vertex_batch::GcsUri;
    /// assert_eq!("gs://bkt/prompts/a.jsonl".parse::<GcsUri>()?.bucket(), "bkt");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object name or prefix (may be empty).
    ///
    /// ```
    /// use vertex_batch::GcsUri;
    /// assert_eq!("gs://bkt/prompts/a.jsonl".parse::<GcsUri>()?.object(), "prompts/a.jsonl");
    /// assert_eq!("gs://bkt".parse::<GcsUri>()?.object(), "");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Whether the object holds a wildcard (`*`, `?`, `[`).
    ///
    /// ```
    /// use vertex_batch::GcsUri;
    /// assert!("gs://bkt/prompts/*.jsonl".parse::<GcsUri>()?.has_wildcard());
    /// assert!(!"gs://bkt/prompts/a.jsonl".parse::<GcsUri>()?.has_wildcard());
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn has_wildcard(&self) -> bool {
        self.object.contains(['*', '?', '['])
    }
}

impl fmt::Display for GcsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object.is_empty() {
            write!(f, "gs://{}", self.bucket)
        } else {
            write!(f, "gs://{}/{}", self.bucket, self.object)
        }
    }
}

impl FromStr for GcsUri {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self> {
        GcsUri::parse_field(s, "uri")
    }
}

/// A BigQuery location `bq://project.dataset[.table]`.
///
/// ```
/// use vertex_batch::uri::BigQueryUri;
/// let t: BigQueryUri = "bq://my-project.my_dataset.requests".parse()?;
/// assert_eq!((t.project(), t.dataset(), t.table()), ("my-project", "my_dataset", Some("requests")));
/// assert!("bq://only-project".parse::<BigQueryUri>().is_err());
/// # Ok::<_, vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BigQueryUri {
    project: String,
    dataset: String,
    table: Option<String>,
}

impl BigQueryUri {
    /// Parses `uri`, naming `field` in any error. `table_required` says
    /// whether `bq://project.dataset` (no table) is acceptable.
    ///
    /// ```
    /// use vertex_batch::uri::BigQueryUri;
    /// let t = BigQueryUri::parse_field("bq://p1.ds.requests", "input_uri", true)?;
    /// assert_eq!(t.table(), Some("requests"));
    /// assert!(BigQueryUri::parse_field("bq://p1.ds", "input_uri", true).is_err());
    /// assert!(BigQueryUri::parse_field("bq://p1.ds", "output_uri", false).is_ok());
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn parse_field(uri: &str, field: &str, table_required: bool) -> Result<Self> {
        let bad = |why: String| ValidationError::new(field, format!("{uri:?}: {why}"));
        let rest = uri
            .strip_prefix("bq://")
            .ok_or_else(|| bad("a BigQuery URI starts with bq://".into()))?;
        // A domain-scoped project ("example.com:proj") holds a dot of its own.
        let (project, rest) = match rest.find(':') {
            Some(colon) => {
                let after = &rest[colon..];
                let dot = after
                    .find('.')
                    .ok_or_else(|| bad("expected bq://project.dataset[.table]".into()))?;
                (&rest[..colon + dot], &rest[colon + dot + 1..])
            }
            None => rest
                .split_once('.')
                .ok_or_else(|| bad("expected bq://project.dataset[.table]".into()))?,
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let (dataset, table) = match parts.as_slice() {
            [d] if !table_required => (*d, None),
            [d, t] => (*d, Some(*t)),
            _ if table_required => {
                return Err(bad(format!(
                    "expected bq://project.dataset.table (3 parts), got {} part(s)",
                    parts.len() + 1
                )))
            }
            _ => {
                return Err(bad(format!(
                    "expected bq://project.dataset or bq://project.dataset.table, got {} parts",
                    parts.len() + 1
                )))
            }
        };
        if check_project(project).is_err() {
            return Err(bad(format!("{project:?} is not a valid project id")));
        }
        let ident_ok = |s: &str, dash: bool| {
            !s.is_empty()
                && s.len() <= 1024
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || (dash && c == '-'))
        };
        if !ident_ok(dataset, false) {
            return Err(bad(format!(
                "dataset {dataset:?} may hold only letters, digits and '_'"
            )));
        }
        if let Some(t) = table {
            if !ident_ok(t, true) {
                return Err(bad(format!(
                    "table {t:?} may hold only letters, digits, '_' and '-'"
                )));
            }
        }
        Ok(BigQueryUri {
            project: project.to_owned(),
            dataset: dataset.to_owned(),
            table: table.map(str::to_owned),
        })
    }

    /// The project id.
    ///
    /// ```
    /// use vertex_batch::uri::BigQueryUri;
    /// assert_eq!("bq://my-project.ds.t".parse::<BigQueryUri>()?.project(), "my-project");
    /// assert_eq!("bq://example.com:proj.ds".parse::<BigQueryUri>()?.project(), "example.com:proj");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The dataset.
    ///
    /// ```
    /// use vertex_batch::uri::BigQueryUri;
    /// assert_eq!("bq://my-project.my_dataset".parse::<BigQueryUri>()?.dataset(), "my_dataset");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// The table, when one is given.
    ///
    /// ```
    /// use vertex_batch::uri::BigQueryUri;
    /// assert_eq!("bq://p1.ds.requests".parse::<BigQueryUri>()?.table(), Some("requests"));
    /// assert_eq!("bq://p1.ds".parse::<BigQueryUri>()?.table(), None);
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn table(&self) -> Option<&str> {
        self.table.as_deref()
    }
}

impl fmt::Display for BigQueryUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bq://{}.{}", self.project, self.dataset)?;
        if let Some(t) = &self.table {
            write!(f, ".{t}")?;
        }
        Ok(())
    }
}

impl FromStr for BigQueryUri {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self> {
        BigQueryUri::parse_field(s, "uri", false)
    }
}

/// Where a job reads its prompts.
///
/// ```
/// use vertex_batch::uri::InputSource;
/// let gcs = InputSource::parse(["gs://bkt/part-1.jsonl", "gs://bkt/part-2.jsonl"])?;
/// assert_eq!(gcs.format(), "jsonl");
/// let bq = InputSource::parse(["bq://p.dataset.requests"])?;
/// assert_eq!(bq.format(), "bigquery");
/// # Ok::<_, vertex_batch::error::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// One or more JSONL files in Cloud Storage (`instances_format = "jsonl"`).
    Gcs(Vec<GcsUri>),
    /// A BigQuery table (`instances_format = "bigquery"`).
    BigQuery(BigQueryUri),
}

impl InputSource {
    /// Parses one or more input URIs: all `gs://` (any number) or a single
    /// `bq://project.dataset.table`.
    ///
    /// ```
    /// use vertex_batch::uri::InputSource;
    /// let src = InputSource::parse(["gs://bkt/a.jsonl", "gs://bkt/more/*.jsonl"])?;
    /// assert!(matches!(src, InputSource::Gcs(ref v) if v.len() == 2));
    /// assert!(InputSource::parse(["gs://bkt/a.jsonl", "bq://p.d.t"]).is_err());
    /// # Ok::<_, vertex_batch::Error>(())
    /// ```
    pub fn parse<I, S>(uris: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let uris: Vec<String> = uris.into_iter().map(|s| s.as_ref().to_owned()).collect();
        match uris.as_slice() {
            [] => Err(ValidationError::new(
                "input_uri",
                "no input given: use gs://bucket/file.jsonl or bq://project.dataset.table",
            )),
            [one] if one.starts_with("bq://") => Ok(InputSource::BigQuery(
                BigQueryUri::parse_field(one, "input_uri", true)?,
            )),
            many => {
                if many.iter().any(|u| u.starts_with("bq://")) {
                    return Err(ValidationError::new(
                        "input_uri",
                        "a job reads either Cloud Storage files or one BigQuery table, not both",
                    ));
                }
                let gcs = many
                    .iter()
                    .map(|u| {
                        let g = GcsUri::parse_field(u, "input_uri")?;
                        if g.object().is_empty() {
                            return Err(ValidationError::new(
                                "input_uri",
                                format!("{u:?}: name an object (a JSONL file), not just a bucket"),
                            ));
                        }
                        Ok(g)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(InputSource::Gcs(gcs))
            }
        }
    }

    /// The `instances_format` this source implies.
    ///
    /// ```
    /// use vertex_batch::uri::InputSource;
    /// assert_eq!(InputSource::parse(["gs://bkt/a.jsonl"])?.format(), "jsonl");
    /// assert_eq!(InputSource::parse(["bq://p1.ds.requests"])?.format(), "bigquery");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn format(&self) -> &'static str {
        match self {
            InputSource::Gcs(_) => "jsonl",
            InputSource::BigQuery(_) => "bigquery",
        }
    }
}

/// Where a job writes its predictions.
///
/// ```
/// use vertex_batch::uri::OutputDestination;
/// let out = OutputDestination::parse("gs://bkt/out")?;
/// assert_eq!((out.format(), out.to_string().as_str()), ("jsonl", "gs://bkt/out"));
/// assert_eq!(OutputDestination::parse("bq://p.d")?.format(), "bigquery");
/// # Ok::<_, vertex_batch::error::ValidationError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputDestination {
    /// A Cloud Storage prefix (`predictions_format = "jsonl"`).
    Gcs(GcsUri),
    /// A BigQuery dataset or table (`predictions_format = "bigquery"`).
    BigQuery(BigQueryUri),
}

impl OutputDestination {
    /// Parses `gs://bucket/prefix`, `bq://project.dataset` or
    /// `bq://project.dataset.table`.
    ///
    /// ```
    /// use vertex_batch::uri::OutputDestination;
    /// assert!(matches!(OutputDestination::parse("gs://bkt/out")?, OutputDestination::Gcs(_)));
    /// assert!(matches!(OutputDestination::parse("bq://p1.ds")?, OutputDestination::BigQuery(_)));
    /// assert!(OutputDestination::parse("gs://bkt/out/*").is_err()); // no wildcards in a prefix
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn parse(uri: &str) -> Result<Self> {
        if uri.starts_with("bq://") {
            Ok(OutputDestination::BigQuery(BigQueryUri::parse_field(
                uri,
                "output_uri",
                false,
            )?))
        } else if uri.starts_with("gs://") {
            let g = GcsUri::parse_field(uri, "output_uri")?;
            if g.has_wildcard() {
                return Err(ValidationError::new(
                    "output_uri",
                    format!("{uri:?}: an output prefix cannot hold wildcards"),
                ));
            }
            Ok(OutputDestination::Gcs(g))
        } else {
            Err(ValidationError::new(
                "output_uri",
                format!("{uri:?}: expected gs://bucket/prefix or bq://project.dataset[.table]"),
            ))
        }
    }

    /// The `predictions_format` this destination implies.
    ///
    /// ```
    /// use vertex_batch::uri::OutputDestination;
    /// assert_eq!(OutputDestination::parse("gs://bkt/out")?.format(), "jsonl");
    /// assert_eq!(OutputDestination::parse("bq://p1.ds.results")?.format(), "bigquery");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn format(&self) -> &'static str {
        match self {
            OutputDestination::Gcs(_) => "jsonl",
            OutputDestination::BigQuery(_) => "bigquery",
        }
    }
}

impl fmt::Display for OutputDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputDestination::Gcs(g) => g.fmt(f),
            OutputDestination::BigQuery(b) => b.fmt(f),
        }
    }
}

/// Whether `host` (as `http::uri::Authority::host` gives it, IPv6 in
/// brackets) is a loopback address.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `text` for an error message, with any userinfo (`user:password@`) of a
/// URL or host replaced by `…@`: a password must not reach logs.
pub(crate) fn without_userinfo(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}…{}", &rest[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_reaches_a_message() {
        assert_eq!(without_userinfo("http://u:secret@h:1/x"), "http://…@h:1/x");
        assert_eq!(without_userinfo("u:secret@h:1"), "…@h:1");
        assert_eq!(without_userinfo("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(without_userinfo("127.0.0.1:8080"), "127.0.0.1:8080");
    }

    fn field_of(e: ValidationError) -> String {
        e.field().to_owned()
    }

    #[test]
    fn gcs_uris_validate() {
        for bad in [
            "gs://",
            "gs:///obj",
            "s3://bucket/x",
            "gs://ab/x",
            "gs://UPPER/x",
            "gs://bucket/a/../b",
            "gs://-bucket/x",
        ] {
            assert!(bad.parse::<GcsUri>().is_err(), "{bad}");
        }
        let ok: GcsUri = "gs://bucket_1.example/a/b.jsonl".parse().unwrap();
        assert_eq!(ok.to_string(), "gs://bucket_1.example/a/b.jsonl");
    }

    #[test]
    fn bigquery_uris_validate() {
        assert_eq!(
            field_of(BigQueryUri::parse_field("bq://p.d", "input_uri", true).unwrap_err()),
            "input_uri"
        );
        assert!(BigQueryUri::parse_field("bq://p.d.t.x", "f", false).is_err());
        assert!(BigQueryUri::parse_field("bq://p.d-x.t", "f", false).is_err());
        let scoped = BigQueryUri::parse_field("bq://example.com:proj.ds.t", "f", true).unwrap();
        assert_eq!(scoped.project(), "example.com:proj");
        assert_eq!(scoped.to_string(), "bq://example.com:proj.ds.t");
    }

    #[test]
    fn outputs_parse() {
        assert!(matches!(
            OutputDestination::parse("bq://p.d").unwrap(),
            OutputDestination::BigQuery(_)
        ));
        assert_eq!(
            field_of(OutputDestination::parse("gs://b/x/*").unwrap_err()),
            "output_uri"
        );
        assert_eq!(
            field_of(OutputDestination::parse("/tmp/out").unwrap_err()),
            "output_uri"
        );
    }
}

#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text: no panic; what is accepted reads back the same.
        #[test]
        fn gcs_uris_never_panic_and_round_trip(s in "(gs://)?[a-z0-9._/*?\\[\\]%-]{0,40}|.{0,60}") {
            if let Ok(u) = GcsUri::parse_field(&s, "uri") {
                prop_assert_eq!(GcsUri::parse_field(&u.to_string(), "uri").unwrap(), u);
            }
        }

        #[test]
        fn valid_gcs_uris_round_trip(
            bucket in "[a-z0-9][a-z0-9_-]{1,20}[a-z0-9]",
            object in "[a-zA-Z0-9_ -]{1,10}(/[a-zA-Z0-9_*? -]{1,8}(\\.[a-z]{1,4})?){0,3}",
        ) {
            let s = format!("gs://{bucket}/{object}");
            let u = GcsUri::parse_field(&s, "uri").unwrap();
            prop_assert_eq!(u.bucket(), bucket.as_str());
            prop_assert_eq!(u.to_string(), s);
        }

        #[test]
        fn bigquery_uris_never_panic_and_round_trip(s in "(bq://)?[a-zA-Z0-9._:-]{0,40}|.{0,60}", table in any::<bool>()) {
            if let Ok(u) = BigQueryUri::parse_field(&s, "uri", table) {
                prop_assert_eq!(BigQueryUri::parse_field(&u.to_string(), "uri", table).unwrap(), u);
            }
            let _ = OutputDestination::parse(&s);
            let _ = InputSource::parse([s.as_str()]);
        }

        #[test]
        fn valid_bigquery_uris_round_trip(
            p in "[a-z][a-z0-9-]{4,20}[a-z0-9]",
            d in "[A-Za-z0-9_]{1,20}",
            t in "[A-Za-z0-9_]{1,20}",
        ) {
            let s = format!("bq://{p}.{d}.{t}");
            let u = BigQueryUri::parse_field(&s, "uri", true).unwrap();
            prop_assert_eq!((u.project(), u.dataset(), u.table()), (p.as_str(), d.as_str(), Some(t.as_str())));
            prop_assert_eq!(u.to_string(), s);
        }
    }
}
