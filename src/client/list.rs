//! Listing jobs: [`ListOptions`] (filters built safely), one page at a
//! time or as a stream.

use std::time::SystemTime;

use futures::{stream, Stream, TryStreamExt};

use super::{call::Routing, handle::Client};
use crate::{
    error::{Error, Result},
    job::{Job, JobState},
    proto::aiplatform as pb,
    spec::check_label,
    time,
};

/// What to list: filters (joined by `AND`) and a page size.
///
/// ```
/// use vertex_batch::{JobState, ListOptions};
/// let opts = ListOptions::new()
///     .state(JobState::Running)
///     .label("team", "search")
///     .page_size(50);
/// assert_eq!(opts.filter(), "state=JOB_STATE_RUNNING AND labels.team=\"search\"");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    terms: Vec<String>,
    page_size: i32,
    /// Why a term given is invalid; listing then fails before any call.
    invalid: Option<String>,
}

impl ListOptions {
    /// No filter, the service's default page size.
    ///
    /// ```
    /// use vertex_batch::ListOptions;
    /// assert_eq!(ListOptions::new().filter(), ""); // every job
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Only jobs in `state`.
    ///
    /// ```
    /// use vertex_batch::{JobState, ListOptions};
    /// let opts = ListOptions::new().state(JobState::Failed);
    /// assert_eq!(opts.filter(), "state=JOB_STATE_FAILED");
    /// ```
    pub fn state(mut self, state: JobState) -> Self {
        self.terms.push(format!("state={}", state.as_str()));
        self
    }

    /// Only jobs with exactly this display name. It is sent as a quoted
    /// string, `"` and `\` escaped with a backslash as AIP-160 prescribes.
    ///
    /// ```
    /// use vertex_batch::ListOptions;
    /// let opts = ListOptions::new().display_name(r#"say "hi" \o/"#);
    /// assert_eq!(opts.filter(), r#"display_name="say \"hi\" \\o/""#);
    /// ```
    pub fn display_name(mut self, name: &str) -> Self {
        let escaped = name.replace('\\', "\\\\").replace('"', "\\\"");
        self.terms.push(format!("display_name=\"{escaped}\""));
        self
    }

    /// Only jobs carrying label `key=value`. A key or value that breaks the
    /// service's label rules (which [`JobSpec::label`](crate::JobSpec::label)
    /// checks too) makes listing fail with a validation error before any
    /// call, rather than send a filter that means something else.
    ///
    /// ```
    /// use vertex_batch::ListOptions;
    /// assert_eq!(ListOptions::new().label("team", "search").filter(), r#"labels.team="search""#);
    /// // An invalid key is left out of the filter; listing with it fails.
    /// assert_eq!(ListOptions::new().label("Team", "search").filter(), "");
    /// ```
    pub fn label(mut self, key: &str, value: &str) -> Self {
        match check_label(key, value) {
            // The value quoted (AIP-160), so every filter parser reads it
            // as one string whatever it holds.
            Ok(()) => self.terms.push(format!(
                "labels.{key}=\"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            )),
            Err(why) => {
                self.invalid.get_or_insert(why);
            }
        }
        self
    }

    /// Only jobs created after `t`.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::ListOptions;
    /// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let opts = ListOptions::new().created_after(t);
    /// assert_eq!(opts.filter(), r#"create_time>"2023-11-14T22:13:20.000Z""#);
    /// ```
    pub fn created_after(mut self, t: SystemTime) -> Self {
        self.terms
            .push(format!("create_time>\"{}\"", time::format_millis(t)));
        self
    }

    /// Only jobs created before `t`.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use vertex_batch::ListOptions;
    /// let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let opts = ListOptions::new().created_before(t);
    /// assert_eq!(opts.filter(), r#"create_time<"2023-11-14T22:13:20.000Z""#);
    /// ```
    pub fn created_before(mut self, t: SystemTime) -> Self {
        self.terms
            .push(format!("create_time<\"{}\"", time::format_millis(t)));
        self
    }

    /// Adds a raw filter term in the service's syntax.
    ///
    /// ```
    /// use vertex_batch::{JobState, ListOptions};
    /// let opts = ListOptions::new().state(JobState::Running).raw_filter("labels.env:*");
    /// assert_eq!(opts.filter(), "state=JOB_STATE_RUNNING AND labels.env:*");
    /// ```
    pub fn raw_filter(mut self, term: impl Into<String>) -> Self {
        self.terms.push(term.into());
        self
    }

    /// Jobs per page (the service caps it).
    ///
    /// ```
    /// use vertex_batch::ListOptions;
    /// let opts = ListOptions::new().page_size(100);
    /// assert_eq!(opts.filter(), ""); // the page size is not part of the filter
    /// ```
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = i32::try_from(n).unwrap_or(i32::MAX);
        self
    }

    /// The filter string sent to the service. An invalid label term is left
    /// out of it; listing with such options fails instead (see
    /// [`ListOptions::label`]).
    ///
    /// ```
    /// use vertex_batch::{JobState, ListOptions};
    /// let opts = ListOptions::new().state(JobState::Succeeded).display_name("nightly");
    /// assert_eq!(opts.filter(), r#"state=JOB_STATE_SUCCEEDED AND display_name="nightly""#);
    /// ```
    pub fn filter(&self) -> String {
        self.terms.join(" AND ")
    }
}

/// One page of jobs, from [`Client::list_page`].
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
/// use vertex_batch::ListOptions;
/// let opts = ListOptions::new().page_size(50);
/// let mut token: Option<String> = None;
/// loop {
///     let page = client.list_page(&opts, token.as_deref()).await?;
///     for job in &page.jobs {
///         println!("{} {}", job.name(), job.state());
///     }
///     match page.next_page_token {
///         Some(t) => token = Some(t),
///         None => break,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// # Listing, cancelling and deleting
impl Client {
    /// One page of jobs; pass the previous page's `next_page_token` to go on.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let opts = vertex_batch::ListOptions::new().page_size(10);
    /// let first = client.list_page(&opts, None).await?;
    /// if let Some(token) = first.next_page_token.as_deref() {
    ///     let second = client.list_page(&opts, Some(token)).await?;
    ///     println!("{} more jobs", second.jobs.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_page(&self, opts: &ListOptions, page_token: Option<&str>) -> Result<JobPage> {
        if let Some(why) = &opts.invalid {
            return Err(Error::validation("filter", format!("label {why}")));
        }
        let request = pb::ListBatchPredictionJobsRequest {
            parent: self.parent_path().to_owned(),
            filter: opts.filter(),
            page_size: opts.page_size,
            page_token: page_token.unwrap_or_default().to_owned(),
            read_mask: None,
        };
        let resp = self
            .call(
                "ListBatchPredictionJobs",
                Routing::parent(self.parent_path()),
                true,
                request,
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.list_batch_prediction_jobs(r).await }
                },
            )
            .await?;
        Ok(JobPage {
            jobs: resp
                .batch_prediction_jobs
                .into_iter()
                .map(Job::from)
                .collect(),
            next_page_token: Some(resp.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    /// Every matching job, newest first, as a stream; pages are fetched as
    /// the stream is read.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use futures::TryStreamExt;
    /// use vertex_batch::{JobState, ListOptions};
    /// let running: Vec<_> = client
    ///     .list(&ListOptions::new().state(JobState::Running))
    ///     .try_collect()
    ///     .await?;
    /// println!("{} jobs running", running.len());
    /// # Ok(()) }
    /// ```
    pub fn list(&self, opts: &ListOptions) -> impl Stream<Item = Result<Job>> + Send + 'static {
        enum Next {
            Page(Option<String>),
            Done,
        }
        let client = self.clone();
        let opts = opts.clone();
        // Every token sent so far: a service answering one of them again
        // (the one it was sent, or an older one) would be read forever.
        let sent = std::collections::HashSet::<String>::new();
        let pages = stream::try_unfold((Next::Page(None), sent), move |(next, mut sent)| {
            let client = client.clone();
            let opts = opts.clone();
            async move {
                let token = match next {
                    Next::Done => return Ok(None),
                    Next::Page(t) => t,
                };
                let page = client.list_page(&opts, token.as_deref()).await?;
                if let Some(t) = token {
                    sent.insert(t);
                }
                let next = match page.next_page_token {
                    // A service answering a token it was sent would be
                    // read forever: an error, not a loop.
                    Some(t) if sent.contains(&t) => {
                        return Err(Error::from_status(
                            tonic::Status::internal(
                                "ListBatchPredictionJobs answered a page token it was sent \
                                 (the last one or an earlier one) as the next one; stopped \
                                 instead of reading those pages forever",
                            ),
                            client.endpoint(),
                        ))
                    }
                    Some(t) => Next::Page(Some(t)),
                    None => Next::Done,
                };
                Ok::<_, Error>(Some((page.jobs, (next, sent))))
            }
        });
        pages
            .map_ok(|jobs| stream::iter(jobs.into_iter().map(Ok::<Job, Error>)))
            .try_flatten()
    }
}
