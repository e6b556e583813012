//! Resource names: [`LocationName`], [`JobName`], and model-name normalisation.

use std::{fmt, str::FromStr};

use crate::validation::ValidationError;

type Result<T, E = ValidationError> = std::result::Result<T, E>;

/// A project id: 6–30 characters of lowercase letters, digits and `-`,
/// starting with a letter. Domain-scoped ids (`example.com:my-project`) and
/// project numbers are accepted too.
pub(crate) fn check_project(project: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c);
    if project.is_empty() || project.len() > 100 || !project.chars().all(ok_char) {
        return Err(ValidationError::new(
            "project",
            format!(
                "{project:?} is not a project id (lowercase letters, digits and '-', e.g. \"my-project\")"
            ),
        ));
    }
    Ok(())
}

/// A location: a region (`us-central1`), `global`, or a multi-region (`us`, `eu`).
fn check_location(location: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if location.is_empty()
        || location.len() > 63
        || !location.chars().all(ok_char)
        || location.starts_with('-')
        || location.ends_with('-')
    {
        return Err(ValidationError::new(
            "location",
            format!(
                "{location:?} is not a location (a region like \"us-central1\", \"global\", \"us\" or \"eu\")"
            ),
        ));
    }
    Ok(())
}

/// `projects/{project}/locations/{location}`: the parent of batch jobs.
///
/// ```
/// use vertex_batch::LocationName;
/// let loc: LocationName = "projects/my-project/locations/us-central1".parse()?;
/// assert_eq!(loc.project(), "my-project");
/// assert_eq!(loc.location(), "us-central1");
/// assert_eq!(loc.to_string(), "projects/my-project/locations/us-central1");
/// # Ok::<_, vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationName {
    project: String,
    location: String,
}

impl LocationName {
    /// Builds and validates a location name.
    ///
    /// ```
    /// use vertex_batch::LocationName;
    /// let loc = LocationName::new("my-project", "us-central1")?;
    /// assert_eq!(loc.to_string(), "projects/my-project/locations/us-central1");
    /// assert!(LocationName::new("My Project", "us-central1").is_err());
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn new(project: impl Into<String>, location: impl Into<String>) -> Result<Self> {
        let (project, location) = (project.into(), location.into());
        check_project(&project)?;
        check_location(&location)?;
        Ok(LocationName { project, location })
    }

    /// The project id.
    ///
    /// ```
    /// use vertex_batch::LocationName;
    /// assert_eq!(LocationName::new("my-project", "europe-west4")?.project(), "my-project");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The location (region, `global`, or multi-region).
    ///
    /// ```
    /// use vertex_batch::LocationName;
    /// assert_eq!(LocationName::new("my-project", "global")?.location(), "global");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The job of this location with the given numeric id.
    ///
    /// ```
    /// use vertex_batch::LocationName;
    /// let loc = LocationName::new("p1", "us-central1")?;
    /// assert_eq!(loc.job("123")?.to_string(), "projects/p1/locations/us-central1/batchPredictionJobs/123");
    /// assert!(loc.job("not-a-number").is_err());
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn job(&self, id: impl Into<String>) -> Result<JobName> {
        JobName::new(self.clone(), id)
    }
}

impl fmt::Display for LocationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/locations/{}", self.project, self.location)
    }
}

impl FromStr for LocationName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "locations", l] => LocationName::new(*p, *l),
            _ => Err(ValidationError::new(
                "parent",
                format!("{s:?} is not of the form projects/PROJECT/locations/LOCATION"),
            )),
        }
    }
}

/// `projects/{project}/locations/{location}/batchPredictionJobs/{id}`.
///
/// ```
/// use vertex_batch::JobName;
/// let job: JobName = "projects/p1/locations/us-central1/batchPredictionJobs/123".parse()?;
/// assert_eq!(job.id(), "123");
/// assert_eq!(job.parent().location(), "us-central1");
/// # Ok::<_, vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobName {
    parent: LocationName,
    id: String,
}

impl JobName {
    /// Builds a job name from its parent and numeric id.
    ///
    /// ```
    /// use vertex_batch::{JobName, LocationName};
    /// let job = JobName::new(LocationName::new("p1", "us-central1")?, "123")?;
    /// assert_eq!(job.to_string(), "projects/p1/locations/us-central1/batchPredictionJobs/123");
    /// assert!(JobName::new(LocationName::new("p1", "us-central1")?, "").is_err());
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn new(parent: LocationName, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_job_id(&id)?;
        Ok(JobName { parent, id })
    }

    /// Parses a full name, or a bare numeric id resolved against `parent`.
    ///
    /// ```
    /// use vertex_batch::{JobName, LocationName};
    /// let here = LocationName::new("p1", "us-central1")?;
    /// assert_eq!(JobName::parse_in("123", &here)?.parent(), &here);
    /// let full = JobName::parse_in("projects/p2/locations/europe-west4/batchPredictionJobs/9", &here)?;
    /// assert_eq!(full.parent().project(), "p2");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn parse_in(s: &str, parent: &LocationName) -> Result<Self> {
        if is_bare_id(s) {
            return JobName::new(parent.clone(), s);
        }
        s.parse()
    }

    /// The `projects/*/locations/*` parent.
    ///
    /// ```
    /// use vertex_batch::JobName;
    /// let job: JobName = "projects/p1/locations/us-central1/batchPredictionJobs/123".parse()?;
    /// assert_eq!(job.parent().to_string(), "projects/p1/locations/us-central1");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn parent(&self) -> &LocationName {
        &self.parent
    }

    /// The numeric id.
    ///
    /// ```
    /// use vertex_batch::JobName;
    /// let job: JobName = "projects/p1/locations/us-central1/batchPredictionJobs/123".parse()?;
    /// assert_eq!(job.id(), "123");
    /// # Ok::<_, vertex_batch::error::ValidationError>(())
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/batchPredictionJobs/{}", self.parent, self.id)
    }
}

impl FromStr for JobName {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self> {
        let parts = JobNameRef::parse(s)?;
        Ok(JobName {
            parent: LocationName {
                project: parts.project.to_owned(),
                location: parts.location.to_owned(),
            },
            id: parts.id.to_owned(),
        })
    }
}

/// A batch prediction job id: 1–64 digits.
pub(crate) fn check_job_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            "name",
            format!("{id:?} is not a batch prediction job id (digits only)"),
        ));
    }
    Ok(())
}

/// Whether `s` is a bare job id rather than a full name.
pub(crate) fn is_bare_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The parts of a full job name, borrowed and validated: the client checks
/// every name it sends without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobNameRef<'a> {
    pub(crate) project: &'a str,
    pub(crate) location: &'a str,
    pub(crate) id: &'a str,
}

impl<'a> JobNameRef<'a> {
    pub(crate) fn parse(s: &'a str) -> Result<Self> {
        let mut parts = s.split('/');
        let mut next = || parts.next();
        let shape = (next(), next(), next(), next(), next(), next(), next());
        let (
            Some("projects"),
            Some(project),
            Some("locations"),
            Some(location),
            Some("batchPredictionJobs"),
            Some(id),
            None,
        ) = shape
        else {
            return Err(ValidationError::new(
                "name",
                format!(
                    "{s:?} is not of the form projects/PROJECT/locations/LOCATION/batchPredictionJobs/ID \
                     (or a bare numeric id)"
                ),
            ));
        };
        check_project(project)?;
        check_location(location)?;
        check_job_id(id)?;
        Ok(JobNameRef {
            project,
            location,
            id,
        })
    }
}

/// Normalises a model name the way the service and Google's SDKs do.
///
/// * `gemini-2.0-flash-001` and `models/gemini-2.0-flash-001` become
///   `publishers/google/models/gemini-2.0-flash-001`;
/// * `publishers/*/models/*` (optionally `@version`) and tuned models
///   `projects/*/locations/*/models/*` pass through unchanged.
///
/// ```
/// use vertex_batch::names::normalize_model;
/// assert_eq!(normalize_model("gemini-2.5-flash")?, "publishers/google/models/gemini-2.5-flash");
/// assert_eq!(
///     normalize_model("projects/p/locations/us-central1/models/42")?,
///     "projects/p/locations/us-central1/models/42"
/// );
/// assert!(normalize_model("").is_err());
/// # Ok::<_, vertex_batch::Error>(())
/// ```
pub fn normalize_model(model: &str) -> Result<String> {
    let model = model.trim();
    if model.is_empty() {
        return Err(ValidationError::new(
            "model",
            format!("{model:?} is empty; give a Gemini model id such as \"gemini-2.0-flash-001\""),
        ));
    }
    let parts: Vec<&str> = model.split('/').collect();
    match parts.as_slice() {
        [id] | ["models", id] if model_id_ok(id) => Ok(format!("publishers/google/models/{id}")),
        _ => check_model_resource(model).map(|()| model.to_owned()),
    }
}

/// Whether `id` can be a model (or publisher) id: letters, digits and
/// `-._`, starting with a letter or digit, with at most one `@version`
/// suffix of the same form (`gemini-2.5-flash@001`).
fn model_id_ok(id: &str) -> bool {
    let part_ok = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    };
    match id.split_once('@') {
        Some((name, version)) => part_ok(name) && part_ok(version),
        None => part_ok(id),
    }
}

/// Checks a full model resource name, `publishers/P/models/M` or
/// `projects/P/locations/L/models/ID`: the form the service (and the
/// emulator) accepts, and what [`normalize_model`] produces.
pub(crate) fn check_model_resource(model: &str) -> Result<()> {
    let bad = |why: &str| Err(ValidationError::new("model", format!("{model:?} {why}")));
    let parts: Vec<&str> = model.split('/').collect();
    match parts.as_slice() {
        ["publishers", publisher, "models", id] if model_id_ok(publisher) && model_id_ok(id) => {
            Ok(())
        }
        ["projects", p, "locations", l, "models", id] if model_id_ok(id) => {
            if check_project(p).is_err() {
                return bad("has an invalid project");
            }
            if check_location(l).is_err() {
                return bad("has an invalid location");
            }
            Ok(())
        }
        _ => bad(
            "is not a model: use a Gemini id (\"gemini-2.0-flash-001\"), \
             publishers/PUBLISHER/models/MODEL, or projects/P/locations/L/models/ID",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_name_round_trips_and_rejects_garbage() {
        let s = "projects/p-1/locations/europe-west4/batchPredictionJobs/987";
        let name: JobName = s.parse().unwrap();
        assert_eq!(name.to_string(), s);
        for bad in [
            "",
            "projects/p/locations/l/batchPredictionJobs/abc",
            "projects/p/locations/l/jobs/1",
            "projects//locations/l/batchPredictionJobs/1",
            "projects/P/locations/l/batchPredictionJobs/1",
            "projects/p/locations/l/batchPredictionJobs/1/extra",
            "projects/p/locations/l/batchPredictionJobs",
            "projects/p/locations/l/batchPredictionJobs/",
        ] {
            assert!(bad.parse::<JobName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bare_id_resolves_against_parent() {
        let parent = LocationName::new("p", "us-central1").unwrap();
        let name = JobName::parse_in("42", &parent).unwrap();
        assert_eq!(
            name.to_string(),
            "projects/p/locations/us-central1/batchPredictionJobs/42"
        );
    }

    #[test]
    fn models_normalise() {
        assert_eq!(
            normalize_model("models/gemini-2.0-flash-001").unwrap(),
            "publishers/google/models/gemini-2.0-flash-001"
        );
        assert_eq!(
            normalize_model("publishers/google/models/gemini-2.5-flash@001").unwrap(),
            "publishers/google/models/gemini-2.5-flash@001"
        );
        for bad in [
            "a/b",
            "gemini 2",
            "publishers/google/models/",
            "projects/p/models/1",
            "publishers/google/models/@",
            "publishers/./models/..",
            "projects/p/locations/us-central1/models/-",
            "publishers/google/models/@001",
            "publishers/google/models/gemini@",
            "publishers/google/models/a@b@c",
        ] {
            let err = normalize_model(bad).unwrap_err();
            assert!(err.field() == "model", "{bad}");
        }
    }
}

#[cfg(test)]
mod prop_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Resource names: no panic on any text; accepted names read back
        /// the same.
        #[test]
        fn resource_names_never_panic_and_round_trip(s in "(projects/[a-z0-9-]{0,12}/locations/[a-z0-9-]{0,12}(/batchPredictionJobs/[0-9a-z]{0,12})?)|.{0,80}") {
            if let Ok(l) = s.parse::<LocationName>() {
                prop_assert_eq!(l.to_string().parse::<LocationName>().unwrap(), l);
            }
            if let Ok(j) = s.parse::<JobName>() {
                prop_assert_eq!(j.to_string().parse::<JobName>().unwrap(), j.clone());
                let parent = j.parent().clone();
                prop_assert_eq!(JobName::parse_in(j.id(), &parent).unwrap(), j);
            }
            let _ = JobNameRef::parse(&s);
        }

        #[test]
        fn valid_job_names_round_trip(
            p in "[a-z][a-z0-9-]{4,20}[a-z0-9]",
            l in "[a-z]{2,8}-[a-z]{2,8}[0-9]",
            id in "[1-9][0-9]{0,18}",
        ) {
            let s = format!("projects/{p}/locations/{l}/batchPredictionJobs/{id}");
            let j: JobName = s.parse().unwrap();
            prop_assert_eq!((j.parent().project(), j.parent().location(), j.id()), (p.as_str(), l.as_str(), id.as_str()));
            prop_assert_eq!(j.to_string(), s);
        }

        /// Model names: no panic; normalising is idempotent.
        #[test]
        fn model_names_never_panic_and_normalise_once(s in "(publishers/google/models/|projects/[a-z0-9-]{1,10}/locations/[a-z0-9-]{1,10}/models/)?[a-z0-9.@_-]{0,30}|.{0,60}") {
            if let Ok(m) = normalize_model(&s) {
                prop_assert_eq!(normalize_model(&m).unwrap(), m);
            }
        }
    }
}
