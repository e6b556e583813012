//! Live results: a batch's answers while its jobs run, follow-up rounds
//! before they end.
//!
//! The service exports completed rows while a job runs (chunks under
//! `incremental_predictions/` in the job's output directory) and writes the
//! final files when it ends; a row may be in both. [`Batch::live`] follows a
//! batch's jobs and, every poll, lists each part's output directory — the
//! job's `output_info` directory, or, when the service has not filled it
//! yet, the part's own output prefix, which holds nothing else — and reads
//! every prediction file it has not read yet, once (a file is known by its
//! name and generation: nothing is downloaded twice).
//!
//! Rows are joined to the staged inputs exactly as a finished read joins
//! them ([`Batch::results`]): each input key comes out once, as soon as any
//! copy of its row lands; repeats count as duplicates, rows of no input as
//! unexpected; when every job has ended, the inputs never seen come out
//! [`Outcome::Missing`](crate::format::Outcome::Missing). Memory: the inputs'
//! fingerprints (12 bytes a prompt), one bit a prompt, and the rows held
//! for a retry (below).
//!
//! # Retries before the end
//!
//! With [`LiveOptions::retry_rounds`], a row that failed for a passing cause
//! ([`RowError::is_retryable`](crate::format::RowError::is_retryable): 429, 5xx) is
//! held back instead of handed out, and sent again in a follow-up round
//! while the other rows still run, as soon as
//! [`LiveOptions::retry_min_rows`] of them wait. The last round is kept for
//! when every job has ended: it resends what still failed and what never
//! came back. A key's later outcome replaces its earlier one, so the stream
//! hands out each key's latest outcome, once; a copy of an old round's row
//! arriving late is a duplicate. Held rows are failed rows (their request
//! echoed, no answer); when no round is left for them they come out as
//! they are.
//!
//! # BigQuery
//!
//! A table is not a set of files a reader can take in pieces without
//! reading it again, so on a BigQuery staging area the stream follows the
//! jobs (progress by the jobs' counts) and hands out the rows once they end
//! (retry rounds as [`Batch::retry_failed`] makes them).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::{stream::BoxStream, StreamExt, TryStreamExt};

use crate::batch::read::stream::{ReadOptions, ResultStream};
use crate::{
    batch::{
        follow::Batch,
        read::{
            join::{index_inputs, missing_rows, Bits, Inputs, KeyIndex},
            open::dir_prefix,
            stream::{is_incremental, is_prediction_file, parse_lines, SourceFile, Totals},
        },
        stage::Area,
    },
    format::{
        fingerprint::{fingerprint, FingerprintSet},
        results::{parse_line, ParsedLine, ResultRow},
    },
};
use crate::{
    cost::{Cost, ModelPrice},
    error::{Error, Result},
    job::{Job, OutputLocation},
    uri::GcsUri,
};

/// How [`Batch::live`] follows a batch.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::batch::LiveOptions;
///
/// let opts = LiveOptions::new()
///     .poll(Duration::from_secs(2))
///     .retry_rounds(2)
///     .retry_min_rows(100);
/// assert_eq!(opts.rounds(), 2);
/// ```
#[derive(Clone)]
pub struct LiveOptions {
    poll: Duration,
    retry_rounds: usize,
    retry_min_rows: u64,
    budget: Option<(Cost, Arc<ModelPrice>)>,
}

impl std::fmt::Debug for LiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveOptions")
            .field("poll", &self.poll)
            .field("retry_rounds", &self.retry_rounds)
            .field("retry_min_rows", &self.retry_min_rows)
            .field("budget", &self.budget.as_ref().map(|b| b.0))
            .finish()
    }
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            poll: Duration::from_secs(5),
            retry_rounds: 0,
            retry_min_rows: 1,
            budget: None,
        }
    }
}

impl LiveOptions {
    /// Polls every 5 s, no follow-up rounds, no budget.
    ///
    /// ```
    /// let opts = vertex_batch::batch::LiveOptions::new();
    /// assert_eq!(opts.rounds(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// How often the jobs are looked at and their output directories listed
    /// (default 5 s; at least 10 ms). A row is handed out within about this
    /// long of its export.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let opts = vertex_batch::batch::LiveOptions::new().poll(Duration::from_secs(1));
    /// ```
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// Up to `n` follow-up rounds (default 0): rows that fail for a passing
    /// cause are resent while the batch runs, the last round kept for the
    /// end (see the module docs).
    ///
    /// ```
    /// let opts = vertex_batch::batch::LiveOptions::new().retry_rounds(3);
    /// assert_eq!(opts.rounds(), 3);
    /// ```
    pub fn retry_rounds(mut self, n: usize) -> Self {
        self.retry_rounds = n;
        self
    }

    /// A round is made while the batch runs once this many rows wait for
    /// it (default 1; at least 1).
    ///
    /// ```
    /// let opts = vertex_batch::batch::LiveOptions::new().retry_rounds(2).retry_min_rows(500);
    /// ```
    pub fn retry_min_rows(mut self, n: u64) -> Self {
        self.retry_min_rows = n.max(1);
        self
    }

    /// Stops the batch when the cost of the rows read passes `max`: every
    /// job still running is cancelled, and every row it completed is still
    /// read and handed out. Each row is priced with `price`
    /// ([`ModelPrice::row_cost`]).
    ///
    /// ```
    /// use vertex_batch::cost::{Cost, Prices};
    ///
    /// let price = Prices::builtin().lookup("gemini-2.5-flash").unwrap().clone();
    /// let opts = vertex_batch::batch::LiveOptions::new().budget(Cost::from_usd(5.0), price);
    /// ```
    pub fn budget(mut self, max: Cost, price: ModelPrice) -> Self {
        self.budget = Some((max, Arc::new(price)));
        self
    }

    /// The follow-up rounds asked for.
    ///
    /// ```
    /// assert_eq!(vertex_batch::batch::LiveOptions::new().rounds(), 0);
    /// ```
    pub fn rounds(&self) -> usize {
        self.retry_rounds
    }
}

/// What [`Live::next`] hands out.
#[derive(Debug)]
#[non_exhaustive]
pub enum LiveEvent {
    /// A prompt's result: each key once, its latest outcome.
    Row(ResultRow),
    /// Counts after a look at the jobs and their outputs (the last one has
    /// `done` set).
    Progress(LiveProgress),
    /// A follow-up round was submitted with this many rows.
    RetryRound {
        /// The round's number (1 is the first follow-up).
        round: usize,
        /// Its rows.
        rows: u64,
    },
    /// The cost of the rows read passed the budget: the jobs still running
    /// were cancelled.
    BudgetExceeded {
        /// The cost of the rows read when it was noticed.
        spent: Cost,
        /// The budget.
        max: Cost,
        /// Jobs cancelled (0 when every job had ended already).
        cancelled: usize,
    },
}

/// One part's rows as read so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartProgress {
    /// The round (0: the first).
    pub round: usize,
    /// The part within its round.
    pub part: usize,
    /// Rows sent in this part.
    pub rows: u64,
    /// Distinct rows read from its output.
    pub read: u64,
    /// Of those, rows that failed.
    pub failed: u64,
}

/// A batch's progress by rows actually read.
#[derive(Debug, Clone)]
pub struct LiveProgress {
    /// The prompts of the batch.
    pub rows: u64,
    /// Prompts handed out so far (their latest outcome).
    pub done: u64,
    /// Counts of what was handed out (succeeded, failed, blocked,
    /// missing, duplicates, tokens).
    pub totals: Totals,
    /// The cost of the rows read (when a price was given).
    pub cost: Option<Cost>,
    /// Failed rows held back for a follow-up round.
    pub awaiting_retry: u64,
    /// Every part of every round.
    pub parts: Vec<PartProgress>,
    /// The latest snapshot of every job.
    pub jobs: Vec<Job>,
    /// Prediction files read so far.
    pub files: u64,
    /// Whether the batch is over: every job ended and every row out.
    pub finished: bool,
}

/// How an output row fared in [`LiveJoin::offer`] (short-lived: the
/// row is moved out at once).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Offer {
    /// Hand it out.
    Out(ResultRow),
    /// Held for a follow-up round.
    Held,
    /// A repeat, a stale copy, or a row of no input.
    Dropped,
}

/// The join of output rows, arriving in pieces, to the inputs.
pub(crate) struct LiveJoin {
    index: Arc<KeyIndex>,
    /// Inputs handed out.
    out: Bits,
    /// Failed rows held for a retry: input → (round it came from, row).
    held: HashMap<u32, (usize, ResultRow)>,
    /// Inputs resent: input → the latest round that holds it.
    queued: HashMap<u32, usize>,
    pub(crate) totals: Totals,
    /// What rows handed out are priced at.
    price: Option<Arc<ModelPrice>>,
}

impl LiveJoin {
    pub(crate) fn new(index: Arc<KeyIndex>) -> Self {
        LiveJoin {
            out: Bits::new(index.len()),
            index,
            held: HashMap::new(),
            queued: HashMap::new(),
            totals: Totals::default(),
            price: None,
        }
    }

    /// Prices the rows handed out (for [`Totals::cost`]).
    pub(crate) fn priced(mut self, price: Option<Arc<ModelPrice>>) -> Self {
        if price.is_some() {
            self.totals.cost = Some(Cost::default());
        }
        self.price = price;
        self
    }

    /// Counts a row handed out.
    pub(crate) fn count(&mut self, row: &ResultRow) {
        self.totals.count_priced(row, self.price.as_deref());
    }

    /// Takes an output line of round `round`. A failed row whose cause is
    /// passing is held when `hold`.
    pub(crate) fn offer(&mut self, round: usize, line: ParsedLine, hold: bool) -> Offer {
        let (row, index) = self.index.locate(line);
        let Some(i) = index else {
            tracing::warn!(
                key = row.key().unwrap_or("<none>"),
                "an output row matches no input; left out of the results"
            );
            self.totals.unexpected += 1;
            return Offer::Dropped;
        };
        // A copy from a round older than the key's latest is stale — unless
        // it is an answer: a billed success is never thrown away.
        let stale = self.queued.get(&i).is_some_and(|&q| round < q) && !row.outcome().is_success();
        let repeat = self.held.get(&i).is_some_and(|(r, _)| *r == round);
        if self.out.get(i) || stale || repeat {
            self.totals.duplicates += 1;
            return Offer::Dropped;
        }
        if hold && row.outcome().is_retryable_failure() {
            self.held.insert(i, (round, row));
            return Offer::Held;
        }
        self.held.remove(&i);
        self.out.set(i);
        self.count(&row);
        Offer::Out(row)
    }

    /// The held inputs not resent since they failed.
    pub(crate) fn pending(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self
            .held
            .iter()
            .filter(|(i, (r, _))| self.queued.get(i).is_none_or(|q| q <= r))
            .map(|(i, _)| *i)
            .collect();
        p.sort_unstable();
        p
    }

    /// Every input not handed out yet (held or never seen).
    pub(crate) fn unresolved(&self) -> Vec<u32> {
        (0..u32::try_from(self.index.len()).unwrap_or(u32::MAX))
            .filter(|&i| !self.out.get(i))
            .collect()
    }

    /// Notes that `inputs` were resent in round `round`.
    pub(crate) fn queue(&mut self, inputs: &[u32], round: usize) {
        for &i in inputs {
            self.queued.insert(i, round);
        }
    }

    /// The fingerprints of `inputs`, to stage a round with.
    pub(crate) fn fingerprints(&self, inputs: &[u32]) -> FingerprintSet {
        let mut set = FingerprintSet::with_capacity(inputs.len());
        for &i in inputs {
            if let Some(fp) = self.index.fingerprint_at(i) {
                set.insert(fp);
            }
        }
        set
    }

    /// Hands out every held row (no round is left for them).
    pub(crate) fn release_held(&mut self) -> Vec<ResultRow> {
        let mut held: Vec<(u32, ResultRow)> =
            self.held.drain().map(|(i, (_, row))| (i, row)).collect();
        held.sort_unstable_by_key(|(i, _)| *i);
        held.into_iter()
            .map(|(i, row)| {
                self.out.set(i);
                self.count(&row);
                row
            })
            .collect()
    }

    /// Rows held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.len() as u64
    }

    /// The inputs handed out, for the missing rows' pass.
    fn take_out(&mut self) -> Bits {
        std::mem::replace(&mut self.out, Bits::new(0))
    }
}

enum Phase {
    Following,
    Missing(BoxStream<'static, Result<ResultRow>>),
    /// BigQuery: the rows of a finished read.
    Rows(ResultStream),
    Done,
}

/// A prediction file as listed: its object name and generation.
type FileId = (String, Option<u64>);

/// A file to read: its round, its part, the file, its id.
type Queued = (usize, usize, SourceFile, FileId);

/// A file being read: its round and part, and its lines.
struct Reading {
    round: usize,
    part: usize,
    key: FileId,
    lines: BoxStream<'static, Result<ParsedLine>>,
}

/// A batch followed live; see [`Batch::live`].
pub struct Live<'a> {
    batch: &'a mut Batch,
    opts: LiveOptions,
    join: LiveJoin,
    inputs: Inputs,
    /// Files read (or being read), by name and generation.
    read: HashSet<FileId>,
    /// Jobs whose output was listed after they ended (not listed again).
    listed_ended: HashSet<String>,
    todo: VecDeque<Queued>,
    current: Option<Reading>,
    parts: Vec<Vec<PartProgress>>,
    events: VecDeque<LiveEvent>,
    phase: Phase,
    /// Follow-up rounds made by this follower.
    rounds_made: usize,
    /// Whether every job had ended at the last look (whose listing is
    /// read once the queue of files is empty).
    ended: bool,
    looked: bool,
    /// A look whose progress is not out yet.
    fresh: bool,
    files: u64,
    spent: Cost,
    over_budget: bool,
}

impl std::fmt::Debug for Live<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("batch", &self.batch.request_key())
            .field("totals", &self.join.totals)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Follows the batch live: each prompt's result as soon as its row is
    /// exported, progress by rows read, follow-up rounds before the end
    /// (see [`LiveOptions`] and the module docs of `data::live`).
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
    /// use vertex_batch::batch::{LiveEvent, LiveOptions};
    ///
    /// let mut live = batch.live(LiveOptions::new().retry_rounds(2)).await?;
    /// while let Some(event) = live.next().await {
    ///     match event? {
    ///         LiveEvent::Row(row) => println!("{}: {}", row.key().unwrap_or("?"), row.outcome().kind()),
    ///         LiveEvent::Progress(p) => eprintln!("{}/{} rows", p.done, p.rows),
    ///         _ => {}
    ///     }
    /// }
    /// println!("{:?}", live.totals());
    /// # Ok(()) }
    /// ```
    pub async fn live(&mut self, opts: LiveOptions) -> Result<Live<'_>> {
        let inputs = self.area.inputs(&self.input_targets())?;
        let index = Arc::new(index_inputs(&inputs, &self.spec.read).await?);
        let mut join = LiveJoin::new(index.clone()).priced(self.spec.read.price_arc());
        // Rounds made before (by this process or another): their rows are
        // the keys' latest.
        for r in 1..self.manifest.rounds.len() {
            let positions = self.round_positions(&index, r).await?;
            join.queue(&positions, r);
        }
        let mut live = Live {
            opts,
            join,
            inputs,
            read: HashSet::new(),
            listed_ended: HashSet::new(),
            todo: VecDeque::new(),
            current: None,
            parts: Vec::new(),
            events: VecDeque::new(),
            phase: Phase::Following,
            // Rounds made before count against the rounds asked for.
            rounds_made: self.manifest.rounds.len().saturating_sub(1),
            ended: false,
            looked: false,
            fresh: false,
            files: 0,
            spent: Cost::default(),
            over_budget: false,
            batch: self,
        };
        live.sync_parts();
        Ok(live)
    }

    /// The inputs round `r` sends again.
    async fn round_positions(&self, index: &KeyIndex, r: usize) -> Result<Vec<u32>> {
        let mut positions = Vec::new();
        let Some(round) = self.manifest.rounds.get(r) else {
            return Ok(positions);
        };
        for part in &round.parts {
            let src = self.area.source(&part.input)?;
            let mut keys = Box::pin(parse_lines(vec![src], self.spec.read.clone(), |raw| {
                let line = std::str::from_utf8(&raw).map_err(|e| e.to_string())?;
                crate::format::input::line_key(line).map(|k| fingerprint(&k))
            }));
            while let Some(fp) = keys.next().await {
                if let Some(i) = index.position_of(fp?) {
                    positions.push(i);
                }
            }
        }
        Ok(positions)
    }

    /// Makes a follow-up round, now, of the rows exported so far that
    /// failed for a passing cause (see [`Batch::retry_failed`]).
    pub(crate) async fn retry_early(&mut self) -> Result<u64> {
        let mut live = self.live(LiveOptions::new().retry_rounds(2)).await?;
        live.list_outputs().await?;
        loop {
            match live.read_one().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // An unreadable line: its row is not retried now.
                Err(Error::Output { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let pending = live.join.pending();
        let set = live.join.fingerprints(&pending);
        drop(live);
        self.stage_round(set).await
    }
}

impl Live<'_> {
    /// The next event; `None` once the batch is over and every row out.
    /// An `Err` for an unreadable line leaves the stream going (its row
    /// comes out missing); other errors (the service or storage failing
    /// past their retries) may be tried again by calling `next` again.
    pub async fn next(&mut self) -> Option<Result<LiveEvent>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(Ok(e));
            }
            let item = match &mut self.phase {
                Phase::Done => return None,
                Phase::Missing(rows) => Some(rows.next().await),
                Phase::Rows(rows) => Some(rows.next().await),
                Phase::Following => None,
            };
            if let Some(item) = item {
                return Some(self.hand_out(item));
            }
            match self.read_one().await {
                Ok(Some(Some(row))) => return Some(Ok(LiveEvent::Row(row))),
                Ok(Some(None)) => continue,
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if std::mem::take(&mut self.fresh) {
                return Some(Ok(LiveEvent::Progress(self.progress(false))));
            }
            if let Err(e) = self.tick().await {
                return Some(Err(e));
            }
        }
    }

    /// A row of the last pass (the missing rows, or a BigQuery batch's
    /// rows) handed out; its end ends the stream.
    fn hand_out(&mut self, item: Option<Result<ResultRow>>) -> Result<LiveEvent> {
        match item {
            Some(Ok(row)) => {
                self.join.count(&row);
                Ok(LiveEvent::Row(row))
            }
            Some(Err(e)) => {
                self.join.totals.errors += 1;
                Err(e)
            }
            None => {
                if let Phase::Rows(rows) = &self.phase {
                    let t = rows.totals();
                    self.join.totals.duplicates += t.duplicates;
                    self.join.totals.unexpected += t.unexpected;
                }
                self.phase = Phase::Done;
                Ok(LiveEvent::Progress(self.progress(true)))
            }
        }
    }

    /// Counts of what was handed out so far (final once `next` returned
    /// `None`).
    pub fn totals(&self) -> Totals {
        self.join.totals
    }

    /// The cost of the rows read so far (with a budget's price).
    pub fn cost(&self) -> Option<Cost> {
        self.opts.budget.as_ref().map(|_| self.spent)
    }

    /// Reads one line of the files queued: `Some(Some(row))` to hand out,
    /// `Some(None)` for a line that gave nothing to hand out (or a file
    /// done), `None` when no file is left.
    async fn read_one(&mut self) -> Result<Option<Option<ResultRow>>> {
        let Some(cur) = &mut self.current else {
            let Some((round, part, src, key)) = self.todo.pop_front() else {
                return Ok(None);
            };
            let lines = parse_lines(vec![src], self.batch.spec.read.clone(), |raw| {
                parse_line(&raw)
            })
            .boxed();
            self.current = Some(Reading {
                round,
                part,
                key,
                lines,
            });
            return Ok(Some(None));
        };
        let (round, part) = (cur.round, cur.part);
        match cur.lines.next().await {
            None => {
                self.current = None;
                self.files += 1;
                Ok(Some(None))
            }
            Some(Err(e @ Error::Output { .. })) => {
                self.join.totals.errors += 1;
                Err(e)
            }
            Some(Err(e)) => {
                // Storage failed part way: the file is read again at the
                // next look (its rows seen already are repeats then), and
                // the batch is not over until that look.
                self.read.remove(&cur.key);
                self.current = None;
                self.ended = false;
                self.listed_ended.clear();
                Err(e)
            }
            Some(Ok(line)) => {
                let hold = self.rounds_made < self.opts.retry_rounds && !self.over_budget;
                let offer = self.join.offer(round, line, hold);
                let p = self.parts.get_mut(round).and_then(|r| r.get_mut(part));
                match offer {
                    Offer::Out(row) => {
                        if let Some(p) = p {
                            p.read += 1;
                            p.failed += u64::from(matches!(
                                row.outcome(),
                                crate::format::results::Outcome::Failed(_)
                            ));
                        }
                        if let Some((_, price)) = &self.opts.budget {
                            self.spent += price.result_cost(&row).unwrap_or_default();
                        }
                        Ok(Some(Some(row)))
                    }
                    Offer::Held => {
                        if let Some(p) = p {
                            p.read += 1;
                            p.failed += 1;
                        }
                        Ok(Some(None))
                    }
                    Offer::Dropped => Ok(Some(None)),
                }
            }
        }
    }

    /// One look: the budget, the end (a last round, or the rows never
    /// seen), a retry round, the jobs, their output directories.
    async fn tick(&mut self) -> Result<()> {
        self.check_budget().await?;
        let bigquery = matches!(self.batch.area, Area::Bq { .. });
        if self.batch.jobs.len() < self.batch.manifest.rounds.len() {
            // A round was recorded but its submit failed: submit it (never
            // a second round of the same rows).
            self.batch.submit_pending().await?;
            self.round_made().await?;
            self.ended = false;
        }
        // A job cancelled by someone (not a duplicate, which
        // `follow_winners` replaces) stops the follow-up rounds: its rows
        // are not sent again behind their back.
        let stopped = self.over_budget
            || self.batch.jobs.iter().flatten().any(|j| {
                matches!(
                    j.state(),
                    crate::job::JobState::Cancelled | crate::job::JobState::Cancelling
                )
            });
        if self.ended {
            // Every job had ended at the last look, and its listing is read.
            if self.batch.follow_winners().await? {
                self.ended = false;
                self.sync_parts();
                return Ok(());
            }
            if self.rounds_made < self.opts.retry_rounds && !stopped {
                let made = if bigquery {
                    let made = self.batch.retry_failed().await?;
                    if made > 0 {
                        self.round_made().await?;
                    }
                    made
                } else {
                    let unresolved = self.join.unresolved();
                    self.send_round(&unresolved).await?
                };
                if made > 0 {
                    self.ended = false;
                    return Ok(());
                }
            }
            if bigquery {
                let rows = self.batch.results().await?;
                self.phase = Phase::Rows(rows);
                return Ok(());
            }
            for row in self.join.release_held() {
                self.events.push_back(LiveEvent::Row(row));
            }
            let out = self.join.take_out();
            self.phase = Phase::Missing(missing_rows(
                self.inputs.clone(),
                self.batch.spec.read.clone(),
                self.join.index.clone(),
                Arc::new(std::sync::Mutex::new(out)),
            ));
            return Ok(());
        }
        // Early: resend what failed for a passing cause, keeping the last
        // round for the end.
        let pending = self.join.pending();
        if !bigquery
            && !pending.is_empty()
            && pending.len() as u64 >= self.opts.retry_min_rows
            && self.rounds_made + 1 < self.opts.retry_rounds
            && !stopped
        {
            self.send_round(&pending).await?;
        }
        if self.looked {
            tokio::time::sleep(self.opts.poll).await;
        }
        self.looked = true;
        self.refresh_jobs().await?;
        let ended = self.batch.jobs.iter().flatten().all(Job::has_ended);
        if !bigquery {
            self.list_outputs().await?;
        }
        // Only once the listing after the end has succeeded.
        self.ended = ended;
        // Progress comes once the files of this look are read.
        self.fresh = true;
        Ok(())
    }

    /// Stages and submits a round of `inputs` (nothing when empty);
    /// returns its rows.
    async fn send_round(&mut self, inputs: &[u32]) -> Result<u64> {
        let made = self
            .batch
            .stage_round(self.join.fingerprints(inputs))
            .await?;
        if made > 0 {
            self.round_made().await?;
        }
        Ok(made)
    }

    /// Takes in the manifest's newest round, just submitted: its inputs
    /// (as the manifest has them — another process may have recorded the
    /// round first) are the keys' latest from now on.
    async fn round_made(&mut self) -> Result<()> {
        let r = self.batch.manifest.rounds.len() - 1;
        if matches!(self.batch.area, Area::Gcs { .. }) {
            let positions = self.batch.round_positions(&self.join.index, r).await?;
            self.join.queue(&positions, r);
        }
        self.rounds_made += 1;
        self.sync_parts();
        let rows = self.batch.manifest.rounds[r]
            .parts
            .iter()
            .map(|p| p.rows)
            .sum();
        self.events
            .push_back(LiveEvent::RetryRound { round: r, rows });
        Ok(())
    }

    /// Cancels the jobs still running once the rows read cost more than
    /// the budget.
    async fn check_budget(&mut self) -> Result<()> {
        let Some((max, _)) = &self.opts.budget else {
            return Ok(());
        };
        let max = *max;
        if self.spent <= max {
            return Ok(());
        }
        let first = !self.over_budget;
        self.over_budget = true;
        // On every look while over: a job followed since (another
        // process's winner) is cancelled too.
        let running: Vec<String> = self
            .batch
            .jobs
            .iter()
            .flatten()
            .filter(|j| !j.has_ended() && j.state() != crate::job::JobState::Cancelling)
            .map(|j| j.name().to_owned())
            .collect();
        if !first && running.is_empty() {
            return Ok(());
        }
        let cancelled = running.len();
        tracing::warn!(spent = %self.spent, max = %max, jobs = running.len(), "over budget: cancelling the batch's jobs");
        for name in running {
            // One refused cancel does not keep the others running.
            if let Err(error) = self.batch.client.cancel(name.as_str()).await {
                tracing::warn!(job = name, %error, "could not cancel a job over budget");
            }
        }
        if first {
            self.events.push_back(LiveEvent::BudgetExceeded {
                spent: self.spent,
                max,
                cancelled,
            });
        }
        Ok(())
    }

    /// Fresh snapshots of the jobs that have not ended.
    async fn refresh_jobs(&mut self) -> Result<()> {
        for job in self.batch.jobs.iter_mut().flatten() {
            if !job.has_ended() {
                *job = self.batch.client.get(job.name()).await?;
            }
        }
        Ok(())
    }

    /// Queues every prediction file not read yet, newest round first.
    async fn list_outputs(&mut self) -> Result<()> {
        let Area::Gcs { storage, .. } = &self.batch.area else {
            return Ok(());
        };
        for (r, (jobs, round)) in self
            .batch
            .jobs
            .iter()
            .zip(&self.batch.manifest.rounds)
            .enumerate()
            .rev()
        {
            for (i, (job, part)) in jobs.iter().zip(&round.parts).enumerate() {
                if self.listed_ended.contains(job.name()) {
                    // Listed once after it ended: nothing new can come.
                    continue;
                }
                let dir = match job.output_location() {
                    Some(OutputLocation::Gcs(d)) => d,
                    _ => part.output_prefix.clone(),
                };
                let prefix = dir_prefix(&GcsUri::parse_field(&dir, "output_dir")?)?;
                // (a chunk?, name, file, id)
                let mut found: Vec<(bool, String, SourceFile, FileId)> = Vec::new();
                let mut objects = storage.list(&prefix);
                while let Some(o) = objects.try_next().await? {
                    let name = o.uri().object().to_owned();
                    if !is_prediction_file(&name) {
                        continue;
                    }
                    let key = (name.clone(), o.generation());
                    if self.read.contains(&key) {
                        continue;
                    }
                    let rel = name.strip_prefix(prefix.object()).unwrap_or(&name);
                    let mut src = SourceFile::gcs(storage.clone(), o.uri().clone());
                    src.size = Some(o.size());
                    found.push((is_incremental(rel), name, src, key));
                }
                // Final files first: a row of the final file wins over its
                // copy in a chunk.
                found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                for (_, _, src, key) in found {
                    self.read.insert(key.clone());
                    self.todo.push_back((r, i, src, key));
                }
                if job.has_ended() {
                    self.listed_ended.insert(job.name().to_owned());
                }
            }
        }
        Ok(())
    }

    /// One entry per part of every round the manifest holds.
    fn sync_parts(&mut self) {
        self.parts = self
            .batch
            .manifest
            .rounds
            .iter()
            .enumerate()
            .map(|(r, round)| {
                round
                    .parts
                    .iter()
                    .enumerate()
                    .map(|(i, part)| {
                        let old = self.parts.get(r).and_then(|p| p.get(i)).copied();
                        PartProgress {
                            round: r,
                            part: i,
                            rows: part.rows,
                            ..old.unwrap_or_default()
                        }
                    })
                    .collect()
            })
            .collect();
    }

    fn progress(&self, finished: bool) -> LiveProgress {
        let t = self.join.totals;
        LiveProgress {
            rows: self.batch.rows(),
            done: t.rows(),
            totals: t,
            cost: self.cost(),
            awaiting_retry: self.join.held(),
            parts: self.parts.iter().flatten().copied().collect(),
            jobs: self.batch.jobs(),
            files: self.files,
            finished,
        }
    }
}

/// Reads one job's output directory as it fills: every prediction file
/// once (by name and generation), every key once (rows without a key are
/// all handed out). For following a single job (`vertex-batch watch
/// --results`); a batch is followed with [`Batch::live`].
///
/// ```no_run
/// # async fn demo(storage: vertex_batch::storage::Storage, job: vertex_batch::Job) -> vertex_batch::Result<()> {
/// use vertex_batch::batch::JobOutput;
///
/// let mut output = JobOutput::new(storage);
/// let dir = JobOutput::dir_of(&job).expect("a Cloud Storage job");
/// let n = output.read_new(&dir, |row| println!("{:?}", row.key())).await?;
/// println!("{n} new rows");
/// # Ok(()) }
/// ```
pub struct JobOutput {
    storage: crate::storage::Storage,
    read: HashSet<FileId>,
    seen: FingerprintSet,
    opts: ReadOptions,
    totals: Totals,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobOutput")
            .field("files", &self.read.len())
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl JobOutput {
    /// A reader over `storage`, nothing read yet.
    ///
    /// ```
    /// # fn demo(storage: vertex_batch::storage::Storage) {
    /// let output = vertex_batch::batch::JobOutput::new(storage);
    /// assert_eq!(output.totals().rows(), 0);
    /// # }
    /// ```
    pub fn new(storage: crate::storage::Storage) -> Self {
        JobOutput {
            storage,
            read: HashSet::new(),
            seen: FingerprintSet::default(),
            opts: ReadOptions::new(),
            totals: Totals::default(),
        }
    }

    /// Keys handed out before (a results file being resumed): their rows
    /// are not handed out again.
    ///
    /// ```
    /// # fn demo(storage: vertex_batch::storage::Storage) {
    /// let mut output = vertex_batch::batch::JobOutput::new(storage);
    /// output.skip_key("q1");
    /// # }
    /// ```
    pub fn skip_key(&mut self, key: &str) {
        self.seen.insert(fingerprint(key));
    }

    /// Where a job's rows land: its output directory once the service
    /// names it, else its output prefix (which holds only its directory).
    /// `None` for a job that does not write to Cloud Storage.
    ///
    /// ```
    /// # fn demo(job: vertex_batch::Job) {
    /// if let Some(dir) = vertex_batch::batch::JobOutput::dir_of(&job) {
    ///     println!("rows land under {dir}");
    /// }
    /// # }
    /// ```
    pub fn dir_of(job: &Job) -> Option<GcsUri> {
        use crate::proto::aiplatform::batch_prediction_job::output_config::Destination;
        let dir = match job.output_location() {
            Some(OutputLocation::Gcs(d)) => d,
            Some(_) => return None,
            None => match job.proto().output_config.as_ref()?.destination.as_ref()? {
                Destination::GcsDestination(g) => g.output_uri_prefix.clone(),
                _ => return None,
            },
        };
        GcsUri::parse_field(&dir, "output_dir").ok()
    }

    /// Reads every prediction file below `dir` not read yet, handing each
    /// new key's row to `on_row`; returns how many it handed out. An
    /// unreadable line is counted in [`Totals::errors`] and skipped.
    pub async fn read_new(
        &mut self,
        dir: &GcsUri,
        mut on_row: impl FnMut(ResultRow),
    ) -> Result<u64> {
        let prefix = dir_prefix(dir)?;
        let mut found = Vec::new();
        let mut objects = self.storage.list(&prefix);
        while let Some(o) = objects.try_next().await? {
            let name = o.uri().object().to_owned();
            let key = (name.clone(), o.generation());
            if is_prediction_file(&name) && !self.read.contains(&key) {
                let rel = name.strip_prefix(prefix.object()).unwrap_or(&name);
                found.push((is_incremental(rel), name.clone(), o, key));
            }
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut n = 0;
        for (_, _, o, key) in found {
            let mut src = SourceFile::gcs(self.storage.clone(), o.uri().clone());
            src.size = Some(o.size());
            let mut lines = Box::pin(parse_lines(vec![src], self.opts.clone(), |raw| {
                parse_line(&raw)
            }));
            while let Some(line) = lines.next().await {
                let line = match line {
                    Ok(l) => l,
                    Err(Error::Output { .. }) => {
                        self.totals.errors += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut row = line.row;
                if row.key().is_none() {
                    let recovered = line
                        .key_label
                        .as_deref()
                        .and_then(crate::format::key::decode_exact);
                    row.set_key(recovered);
                }
                if let Some(k) = row.key() {
                    if !self.seen.insert(fingerprint(k)) {
                        self.totals.duplicates += 1;
                        continue;
                    }
                }
                self.totals.count(&row);
                on_row(row);
                n += 1;
            }
            self.read.insert(key);
        }
        Ok(n)
    }

    /// Counts of what was handed out so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::results::Outcome;

    async fn join(keys: &[&str]) -> LiveJoin {
        let lines: String = keys
            .iter()
            .map(|k| format!("{{\"key\":\"{k}\",\"request\":{{\"contents\":[]}}}}\n"))
            .collect();
        let inputs = Inputs::memory("in.jsonl", lines);
        LiveJoin::new(Arc::new(
            index_inputs(&inputs, &ReadOptions::new()).await.unwrap(),
        ))
    }

    fn ok(key: &str, text: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::from(format!(
            r#"{{"key":"{key}","status":"","response":{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}]}},"finishReason":"STOP"}}]}}}}"#
        )))
        .unwrap()
    }

    fn quota(key: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::from(format!(
            r#"{{"key":"{key}","status":"{{\"error\": {{\"code\": 429, \"message\": \"Quota\", \"status\": \"RESOURCE_EXHAUSTED\"}}}}"}}"#
        )))
        .unwrap()
    }

    fn invalid(key: &str) -> ParsedLine {
        parse_line(&bytes::Bytes::from(format!(
            r#"{{"key":"{key}","status":"{{\"error\": {{\"code\": 400, \"message\": \"Bad\"}}}}"}}"#
        )))
        .unwrap()
    }

    fn out(o: Offer) -> Option<ResultRow> {
        match o {
            Offer::Out(r) => Some(r),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_row_in_a_chunk_and_again_in_the_final_file_comes_out_once() {
        let mut j = join(&["a", "b"]).await;
        assert!(out(j.offer(0, ok("a", "chunk"), false)).is_some());
        assert!(out(j.offer(0, ok("a", "final"), false)).is_none());
        assert!(out(j.offer(0, ok("zz", "stray"), false)).is_none());
        assert_eq!(j.totals.duplicates, 1);
        assert_eq!(j.totals.unexpected, 1);
        assert_eq!(j.unresolved().len(), 1, "b is not out yet");
    }

    #[tokio::test]
    async fn a_retried_key_comes_out_once_with_its_latest_outcome() {
        let mut j = join(&["a", "b", "c"]).await;
        // Round 0: a failed for a passing cause (held), b invalid (out at
        // once: resending would not help), c succeeded.
        assert!(matches!(j.offer(0, quota("a"), true), Offer::Held));
        let b = out(j.offer(0, invalid("b"), true)).unwrap();
        assert!(matches!(b.outcome(), Outcome::Failed(_)));
        assert!(out(j.offer(0, ok("c", "C"), true)).is_some());
        // The held copy again (the final file) is a repeat, still held.
        assert!(matches!(j.offer(0, quota("a"), true), Offer::Dropped));
        let pending = j.pending();
        assert_eq!(pending.len(), 1);
        j.queue(&pending, 1);
        assert!(j.pending().is_empty(), "resent: not pending any more");
        // A late copy of round 0's failure is stale once a is in round 1.
        assert!(matches!(j.offer(0, quota("a"), true), Offer::Dropped));
        // Round 1 answers.
        let a = out(j.offer(1, ok("a", "second try"), true)).unwrap();
        assert_eq!(a.text(), Some("second try"));
        assert!(j.release_held().is_empty());
        assert!(j.unresolved().is_empty());
        let t = j.totals;
        assert_eq!((t.succeeded, t.failed, t.duplicates), (2, 1, 2));
    }

    #[tokio::test]
    async fn held_rows_come_out_failed_when_no_round_is_left() {
        let mut j = join(&["a", "b"]).await;
        assert!(matches!(j.offer(0, quota("a"), true), Offer::Held));
        j.queue(&j.pending(), 1);
        // Round 1 fails again, and no round is left: out as it is.
        let a = out(j.offer(1, quota("a"), false)).unwrap();
        assert!(a.outcome().is_retryable_failure());
        // b never came back: unresolved (the missing pass reads it).
        assert_eq!(j.unresolved().len(), 1);
        assert!(matches!(j.offer(0, quota("b"), true), Offer::Held));
        let released = j.release_held();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].key(), Some("b"));
        assert!(j.unresolved().is_empty());
        assert_eq!(j.totals.failed, 2);
    }
}
