//! Reading a job's output files as a stream of [`ResultRow`]s.
//!
//! # How it is fast and bounded
//!
//! Bytes arrive as a stream (a Cloud Storage download or a local file) and
//! are cut into blocks of about [`ReadOptions::block_size`] at line ends.
//! Each block is parsed on a blocking thread; up to
//! [`ReadOptions::parallelism`] blocks are parsed at once and their rows come
//! out in file order. Memory is the blocks in flight plus about 8 bytes of
//! key fingerprint per distinct key (for de-duplication), whatever the size
//! of the output.
//!
//! # Duplicates
//!
//! The service sometimes writes a row twice. Rows are de-duplicated by key:
//! the first row read for a key wins and later ones are counted in
//! [`Totals::duplicates`]. Keys are compared by the top 80 bits of their
//! xxh3 fingerprint, 8 bytes a key: two distinct keys collide with a
//! probability of about n²/2⁸¹ (4·10⁻¹³ for a million keys, 4·10⁻⁷ for a
//! billion), and a collision would count a row as a duplicate. Reads joined
//! to their inputs ([`Inputs`](crate::batch::Inputs)) compare all 96 bits.
//! Rows without a key are never de-duplicated, except by their key label:
//! a row whose key is only in a hashed label (a key longer than
//! [`MAX_EXACT_KEY_BYTES`](crate::format::MAX_EXACT_KEY_BYTES), whose
//! label cannot be read back) has no key in a read without inputs, and is
//! a duplicate of a row with that key or that label read before it — so a
//! key never comes out twice, once with its key and once without.
//!
//! # Which files, in what order
//!
//! A directory's files are read final files first, then
//! `incremental_predictions/` chunks (rows exported while the job ran,
//! which the final files hold again): the first row read for a key wins,
//! so the final file's row is the one kept.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{stream::BoxStream, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::format::fingerprint::{fingerprint, Fingerprint, FingerprintSet, Probe, SortedProbe};
use crate::format::results::{parse_line, plain_key, Outcome, ParsedLine, ResultRow, Usage};

/// How output is read.
///
/// ```
/// use vertex_batch::batch::{ReadOptions, ResultReader};
///
/// let options = ReadOptions::new()
///     .parallelism(2)           // two blocks parsed at once
///     .block_size(4 << 20)      // 4 MiB blocks
///     .max_line_bytes(16 << 20); // a longer line is an error, and reading goes on
/// let reader = ResultReader::new().output_local("out/").options(options);
/// ```
#[derive(Debug, Clone)]
pub struct ReadOptions {
    parallelism: usize,
    block_size: usize,
    max_line_bytes: usize,
    /// What each succeeded row is priced at, for [`Totals::cost`].
    price: Option<Arc<crate::cost::ModelPrice>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            parallelism: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 8),
            block_size: 1 << 20,
            max_line_bytes: 64 << 20,
            price: None,
        }
    }
}

impl ReadOptions {
    /// The defaults: one parsing thread per core (at most 8), 1 MiB blocks,
    /// lines up to 64 MiB.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{ReadOptions, ResultReader};
    ///
    /// let reader = ResultReader::new().output_local(dir.path()).options(ReadOptions::new());
    /// assert_eq!(reader.read().await?.collect_all().await.2.succeeded, 1);
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// How many blocks are parsed at once (at least 1).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{ReadOptions, ResultReader};
    ///
    /// // One parser thread, e.g. next to other busy work (0 counts as 1).
    /// let options = ReadOptions::new().parallelism(1);
    /// let (rows, _, _) = ResultReader::new().output_local(dir.path()).options(options).read().await?.collect_all().await;
    /// assert_eq!(rows.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// The size of the blocks handed to the parsers (at least 4 KiB).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{ReadOptions, ResultReader};
    ///
    /// let options = ReadOptions::new().block_size(64 << 10); // 64 KiB blocks
    /// let (rows, _, _) = ResultReader::new().output_local(dir.path()).options(options).read().await?.collect_all().await;
    /// assert_eq!(rows.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes.max(4096);
        self
    }

    /// The longest line accepted. A longer line is an
    /// [`Error::Output`] naming it, and reading goes on after it; memory
    /// never grows past this for one line.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let text = "x".repeat(20_000);
    /// # std::fs::write(dir.path().join("predictions.jsonl"), format!(
    /// #     "{{\"key\":\"q1\",\"status\":\"\",\"response\":{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{text}\"}}]}}}}]}}}}\n"
    /// # )).unwrap();
    /// use vertex_batch::batch::{ReadOptions, ResultReader};
    ///
    /// // `dir` holds one 20 KB line: over the limit, it is an error, not a row.
    /// let options = ReadOptions::new().block_size(4096).max_line_bytes(8192);
    /// let (rows, errors, _) = ResultReader::new().output_local(dir.path()).options(options).read().await?.collect_all().await;
    /// assert_eq!((rows.len(), errors.len()), (0, 1));
    /// # Ok(()) }
    /// ```
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes.max(1024);
        self
    }

    /// Prices every succeeded row at `price`, so the read's
    /// [`Totals::cost`] is the rows' cost (a batch prices its own model
    /// from the built-in table unless told otherwise:
    /// [`BatchSpec::price`](crate::batch::BatchSpec::price)).
    ///
    /// ```
    /// use vertex_batch::{cost::Prices, batch::ReadOptions};
    ///
    /// let price = Prices::builtin().lookup("gemini-2.5-flash").expect("in the table").clone();
    /// let opts = ReadOptions::new().price(price);
    /// assert!(opts.priced().is_some());
    /// ```
    pub fn price(mut self, price: crate::cost::ModelPrice) -> Self {
        self.price = Some(Arc::new(price));
        self
    }

    pub(crate) fn set_price(&mut self, price: Option<Arc<crate::cost::ModelPrice>>) {
        self.price = price;
    }

    pub(crate) fn price_arc(&self) -> Option<Arc<crate::cost::ModelPrice>> {
        self.price.clone()
    }

    /// The price rows are priced at, if any.
    ///
    /// ```
    /// assert!(vertex_batch::batch::ReadOptions::new().priced().is_none());
    /// ```
    pub fn priced(&self) -> Option<&crate::cost::ModelPrice> {
        self.price.as_deref()
    }
}

/// One parsed line with where it came from.
pub(crate) struct Parsed {
    pub(crate) line: ParsedLine,
    /// The fingerprint of the line's key, when it has one.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// What a look-up of `fingerprint` in the key set found.
    pub(crate) probe: Option<Probe>,
}

/// One file to read (an output or an input file): its name (for errors)
/// and where its bytes come from.
pub(crate) struct SourceFile {
    pub(crate) name: Arc<str>,
    source: Source,
    /// The file's size, when known before reading (sizes the key set).
    pub(crate) size: Option<u64>,
}

enum Source {
    /// Chunks from a download.
    Stream(BoxStream<'static, Result<Bytes>>),
    /// A local file, read straight into the block buffer on a blocking
    /// thread (opened on first read).
    Local {
        path: PathBuf,
        file: Option<std::fs::File>,
    },
}

impl SourceFile {
    /// A local file.
    pub(crate) fn local(path: PathBuf) -> SourceFile {
        SourceFile {
            name: path.display().to_string().into(),
            size: std::fs::metadata(&path).ok().map(|m| m.len()),
            source: Source::Local { path, file: None },
        }
    }

    /// A Cloud Storage object, downloaded when reading reaches it.
    pub(crate) fn gcs(storage: crate::storage::Storage, uri: crate::uri::GcsUri) -> Self {
        let name: Arc<str> = uri.to_string().into();
        // A broken download reads on from where it stopped: no row lost.
        SourceFile::stream(name, storage.read_resuming(&uri))
    }

    /// A file whose bytes arrive as a stream of chunks.
    pub(crate) fn stream(
        name: impl Into<Arc<str>>,
        bytes: BoxStream<'static, Result<Bytes>>,
    ) -> Self {
        SourceFile {
            name: name.into(),
            source: Source::Stream(bytes),
            size: None,
        }
    }
}

/// A block of whole lines to parse, and the number of its first line.
struct Block {
    file: Arc<str>,
    first_line: u64,
    /// How many lines `data` holds (its newlines, plus one for an
    /// unterminated last line).
    lines: usize,
    data: Bytes,
}

/// An item of the block stream: a block to parse, or an error that belongs
/// in the output at this point (a failed read, an over-long line).
enum Piece {
    Block(Block),
    Error(Error),
}

/// The state of cutting one file into blocks.
struct Cutter {
    name: Arc<str>,
    source: Source,
    /// Bytes read and not yet handed out (a pooled buffer).
    buf: Vec<u8>,
    pool: BlockPool,
    /// Lines handed out so far.
    line: u64,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    done: bool,
    /// A read error, handed out after the lines buffered before it.
    failed: Option<Error>,
    opts: ReadOptions,
}

impl Cutter {
    /// Splits off `buf[..end]` as the next block (the rest moves to a fresh
    /// buffer from the pool).
    fn block(&mut self, end: usize) -> Piece {
        let tail = self.buf.get(end..).unwrap_or_default();
        // Room for the tail and the next read, so filling never reallocates.
        let mut rest = self.pool.get(tail.len() + self.opts.block_size);
        rest.extend_from_slice(tail);
        let mut full = std::mem::replace(&mut self.buf, rest);
        full.truncate(end);
        let data = Bytes::from_owner(Pooled {
            buf: full,
            pool: self.pool.clone(),
        });
        let first_line = self.line + 1;
        let newlines = memchr::memchr_iter(b'\n', &data).count();
        self.line += newlines as u64;
        let lines = newlines + usize::from(data.last().is_some_and(|&b| b != b'\n'));
        Piece::Block(Block {
            file: self.name.clone(),
            first_line,
            lines,
            data,
        })
    }

    /// Appends more bytes to `buf`: `Ok(false)` at the end of the file.
    async fn fill(&mut self) -> Result<bool> {
        let from = self.buf.len();
        let more = match &mut self.source {
            Source::Stream(s) => match s.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    true
                }
                Some(Err(e)) => return Err(e),
                None => false,
            },
            Source::Local { path, file } => {
                let path = path.clone();
                let mut f = file.take();
                let mut buf = std::mem::take(&mut self.buf);
                let want = self.opts.block_size;
                let (buf, f, res) = tokio::task::spawn_blocking(move || {
                    use std::io::Read;
                    let res = (|| {
                        let file = match &mut f {
                            Some(file) => file,
                            None => f.insert(std::fs::File::open(&path)?),
                        };
                        // Into the buffer's spare room, which is not zeroed
                        // first.
                        buf.reserve(want);
                        file.take(want as u64).read_to_end(&mut buf)
                    })();
                    (buf, f, res)
                })
                .await
                .map_err(|e| Error::config(format!("a reading thread failed: {e}")))?;
                self.buf = buf;
                *file = f;
                let n = res.map_err(|e| Error::Storage {
                    message: format!("reading {}: {e}", self.name),
                    http_status: None,
                    source: Some(Box::new(e)),
                })?;
                n > 0
            }
        };
        if self.skipping {
            match memchr::memchr(b'\n', &self.buf[from..]) {
                Some(i) => {
                    self.skipping = false;
                    self.buf.drain(from..=from + i);
                }
                None => self.buf.truncate(from),
            }
        }
        Ok(more)
    }

    /// The next block or error of this file.
    async fn next_piece(&mut self) -> Option<Piece> {
        loop {
            if let Some(e) = self.failed.take() {
                return Some(Piece::Error(e));
            }
            if self.done {
                return None;
            }
            // Hand out a block when enough whole lines are buffered.
            if self.buf.len() >= self.opts.block_size {
                if let Some(end) = memchr::memrchr(b'\n', &self.buf) {
                    return Some(self.block(end + 1));
                }
                if self.buf.len() > self.opts.max_line_bytes {
                    // One line longer than allowed: report it and skip to
                    // its end without buffering it.
                    self.line += 1;
                    self.buf.clear();
                    self.skipping = true;
                    return Some(Piece::Error(Error::Output {
                        file: self.name.to_string(),
                        line: self.line,
                        message: format!(
                            "line longer than {} bytes; skipped",
                            self.opts.max_line_bytes
                        ),
                    }));
                }
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    if self.buf.is_empty() {
                        return None;
                    }
                    // The last line may lack its newline (or be truncated:
                    // the parser says so).
                    let end = self.buf.len();
                    return Some(self.block(end));
                }
                Err(e) => {
                    // The whole lines read before the failure still count;
                    // the error follows them.
                    self.done = true;
                    self.failed = Some(e);
                    if let Some(end) = memchr::memrchr(b'\n', &self.buf) {
                        return Some(self.block(end + 1));
                    }
                }
            }
        }
    }
}

/// Block buffers handed back once every row of their block is dropped, so
/// reading reuses a few resident buffers instead of allocating (and
/// faulting in) a fresh one per block.
#[derive(Clone)]
struct BlockPool {
    free: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    /// How many buffers to keep.
    keep: usize,
    /// The largest buffer worth keeping (one that grew around a long line
    /// is let go).
    max_capacity: usize,
}

impl BlockPool {
    fn new(keep: usize, block_size: usize) -> Self {
        BlockPool {
            free: Arc::default(),
            keep,
            max_capacity: block_size.saturating_mul(4),
        }
    }

    /// An empty buffer with room for `capacity` bytes.
    fn get(&self, capacity: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut buf = reused.unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    fn put(&self, mut buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep && buf.capacity() <= self.max_capacity {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A block's buffer, back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: BlockPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// Cuts a file's bytes into blocks of whole lines.
fn blocks(file: SourceFile, opts: ReadOptions) -> impl Stream<Item = Piece> + Send {
    let cutter = Cutter {
        name: file.name,
        source: file.source,
        buf: Vec::new(),
        pool: BlockPool::new(opts.parallelism + 2, opts.block_size),
        line: 0,
        skipping: false,
        done: false,
        failed: None,
        opts,
    };
    futures::stream::unfold(cutter, |mut c| async move {
        let piece = c.next_piece().await?;
        Some((piece, c))
    })
}

/// A UTF-8 byte-order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Whether a line is only whitespace (Unicode's, as `str::trim` sees it).
/// Cheap for the usual line, which starts with `{`.
fn is_blank(raw: &[u8]) -> bool {
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(&b) if b.is_ascii() && !char::from(b).is_whitespace() => false,
        Some(_) => std::str::from_utf8(raw).is_ok_and(|s| s.trim().is_empty()),
    }
}

/// Parses a block's lines with `parse` (blank lines are skipped); a line
/// that fails becomes an [`Error::Output`] naming its file and line.
fn parse_block<T>(
    block: Block,
    parse: &impl Fn(Bytes) -> std::result::Result<T, String>,
) -> Vec<Result<T>> {
    let mut out = Vec::with_capacity(block.lines);
    let mut line_no = block.first_line;
    let data = &block.data;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let n = line_no;
        line_no += 1;
        let mut raw = data.slice(start..end);
        start = end + 1;
        if raw.last() == Some(&b'\r') {
            raw.truncate(raw.len() - 1);
        }
        // As the input readers (`data::input`) read lines: a byte-order mark
        // opening the file is not content, and blank means Unicode
        // whitespace.
        if n == 1 && raw.starts_with(BOM) {
            raw = raw.slice(BOM.len()..);
        }
        if is_blank(&raw) {
            continue;
        }
        out.push(parse(raw).map_err(|message| Error::Output {
            file: block.file.to_string(),
            line: n,
            message,
        }));
    }
    out
}

/// Every line of `files`, in order, parsed by `parse` on up to
/// `parallelism` blocking threads at once, one batch (a block's lines) at a
/// time; `finish` then sees each whole batch, on the same thread.
pub(crate) fn parse_batches<T, F, G>(
    files: Vec<SourceFile>,
    opts: ReadOptions,
    parse: F,
    finish: G,
) -> impl Stream<Item = Vec<Result<T>>> + Send
where
    T: Send + 'static,
    F: Fn(Bytes) -> std::result::Result<T, String> + Clone + Send + Sync + 'static,
    G: Fn(&mut Vec<Result<T>>) + Clone + Send + Sync + 'static,
{
    let parallelism = opts.parallelism;
    futures::stream::iter(files)
        .flat_map(move |f| blocks(f, opts.clone()))
        .map(move |piece| {
            let (parse, finish) = (parse.clone(), finish.clone());
            async move {
                match piece {
                    Piece::Error(e) => vec![Err(e)],
                    Piece::Block(b) => tokio::task::spawn_blocking(move || {
                        let mut batch = parse_block(b, &parse);
                        finish(&mut batch);
                        batch
                    })
                    .await
                    .unwrap_or_else(|e| {
                        vec![Err(Error::config(format!("a parsing thread failed: {e}")))]
                    }),
                }
            }
        })
        .buffered(parallelism)
}

/// [`parse_batches`], one line at a time.
pub(crate) fn parse_lines<T, F>(
    files: Vec<SourceFile>,
    opts: ReadOptions,
    parse: F,
) -> impl Stream<Item = Result<T>> + Send
where
    T: Send + 'static,
    F: Fn(Bytes) -> std::result::Result<T, String> + Clone + Send + Sync + 'static,
{
    parse_batches(files, opts, parse, |_: &mut Vec<Result<T>>| {}).flat_map(futures::stream::iter)
}

/// Output lines parsed, with their key's fingerprint, a block at a time;
/// each fingerprint is looked up in `seen`'s sorted members on the parsing
/// thread, so the one thread that de-duplicates seldom has to.
fn parsed_lines(
    files: Vec<SourceFile>,
    opts: ReadOptions,
    seen: SortedProbe,
) -> impl Stream<Item = Vec<Result<Parsed>>> + Send {
    let finish = move |batch: &mut Vec<Result<Parsed>>| {
        seen.probe_all(
            batch
                .iter_mut()
                .flatten()
                .filter_map(|p| Some((p.fingerprint?, &mut p.probe))),
        )
    };
    parse_batches(
        files,
        opts,
        |raw| {
            let line = parse_line(&raw)?;
            let fingerprint = line.row.key().map(fingerprint);
            Ok(Parsed {
                line,
                fingerprint,
                probe: None,
            })
        },
        finish,
    )
}

/// Counts of what a read or a join produced.
///
/// ```
/// use vertex_batch::batch::Totals;
///
/// let totals = Totals { succeeded: 97, failed: 2, missing: 1, duplicates: 3, ..Totals::default() };
/// assert_eq!(totals.rows(), 100); // duplicates are not rows
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows that succeeded.
    pub succeeded: u64,
    /// Rows that failed.
    pub failed: u64,
    /// Prompts that were blocked.
    pub blocked: u64,
    /// Inputs with no output row (joined reads only).
    pub missing: u64,
    /// Output rows dropped as repeats of a key already read.
    pub duplicates: u64,
    /// Output lines that could not be read, and other errors in the stream.
    pub errors: u64,
    /// Output rows whose key is not among the inputs (joined reads only).
    pub unexpected: u64,
    /// Token usage summed over succeeded rows.
    pub usage: Usage,
    /// What the rows cost at batch rates (failed, blocked and missing
    /// rows cost nothing); `None` when no price was given
    /// ([`ReadOptions::price`]) — a model the price table lacks is
    /// unpriced, never free.
    pub cost: Option<crate::cost::Cost>,
    /// Succeeded rows the price could not be applied to (a per-character
    /// price and a row with no input text).
    pub unpriced: u64,
}

impl Totals {
    /// Rows with an outcome: succeeded + failed + blocked + missing. For a
    /// joined read this equals the number of inputs.
    ///
    /// ```
    /// use vertex_batch::batch::Totals;
    ///
    /// let totals = Totals { succeeded: 8, failed: 1, blocked: 1, errors: 4, ..Totals::default() };
    /// assert_eq!(totals.rows(), 10); // unreadable lines are not rows
    /// ```
    pub fn rows(&self) -> u64 {
        self.succeeded + self.failed + self.blocked + self.missing
    }

    /// Counts `row`, and prices it at `price`.
    pub(crate) fn count_priced(
        &mut self,
        row: &ResultRow,
        price: Option<&crate::cost::ModelPrice>,
    ) {
        self.count(row);
        if let Some(p) = price {
            match p.result_cost(row) {
                Some(c) => *self.cost.get_or_insert_with(Default::default) += c,
                None => {
                    self.cost.get_or_insert_with(Default::default);
                    self.unpriced += 1;
                }
            }
        }
    }

    pub(crate) fn count(&mut self, row: &ResultRow) {
        match row.outcome() {
            Outcome::Succeeded(a) => {
                self.succeeded += 1;
                self.usage += *a.usage();
            }
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Blocked(_) => self.blocked += 1,
            Outcome::Missing(_) => self.missing += 1,
        }
    }
}

/// A stream of results that keeps [`Totals`] as it goes.
///
/// Items are `Ok(row)` for each distinct request and `Err(..)` for lines
/// that could not be read (the stream goes on after them). Once the stream
/// has ended, [`ResultStream::totals`] holds the final counts.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let dir = tempfile::tempdir().unwrap();
/// # let file = dir.path().join("predictions.jsonl");
/// # std::fs::write(&file, concat!(
/// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
/// #     "not json\n",
/// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
/// # )).unwrap();
/// use futures::StreamExt;
/// use vertex_batch::batch::{read_local_files, ReadOptions};
///
/// // `file`: a row for q1, an unreadable line, and q1 again.
/// let mut rows = read_local_files(vec![file], ReadOptions::new());
/// while let Some(row) = rows.next().await {
///     match row {
///         Ok(row) => println!("{}: {}", row.key().unwrap_or("?"), row.outcome().kind()),
///         Err(e) => eprintln!("skipped: {e}"),
///     }
/// }
/// let totals = rows.totals();
/// assert_eq!((totals.succeeded, totals.errors, totals.duplicates), (1, 1, 1));
/// # }
/// ```
pub struct ResultStream {
    inner: BoxStream<'static, Vec<Result<ResultRow>>>,
    /// The batch being handed out.
    current: std::vec::IntoIter<Result<ResultRow>>,
    totals: Arc<std::sync::Mutex<Totals>>,
    price: Option<Arc<crate::cost::ModelPrice>>,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream")
            .field("totals", &self.totals())
            .finish_non_exhaustive()
    }
}

impl ResultStream {
    /// Wraps a stream whose producer updates `totals` for what it drops.
    pub(crate) fn new(
        inner: BoxStream<'static, Result<ResultRow>>,
        totals: Arc<std::sync::Mutex<Totals>>,
    ) -> Self {
        Self::batched(inner.ready_chunks(1024).boxed(), totals)
    }

    /// Wraps a stream of batches (rows are counted a batch at a time).
    pub(crate) fn batched(
        inner: BoxStream<'static, Vec<Result<ResultRow>>>,
        totals: Arc<std::sync::Mutex<Totals>>,
    ) -> Self {
        ResultStream {
            inner,
            current: Vec::new().into_iter(),
            totals,
            price: None,
        }
    }

    /// Prices the rows at `opts`' price, if it has one.
    pub(crate) fn priced_by(mut self, opts: &ReadOptions) -> Self {
        self.price = opts.price.clone();
        if self.price.is_some() {
            self.totals.lock().unwrap_or_else(|e| e.into_inner()).cost = Some(Default::default());
        }
        self
    }

    /// The counts so far (final once the stream has ended). Rows are
    /// counted as they are read from the files, a little ahead of the
    /// stream's consumer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("predictions.jsonl"), concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// # )).unwrap();
    /// use futures::StreamExt;
    /// use vertex_batch::batch::ResultReader;
    ///
    /// let mut rows = ResultReader::new().output_local(dir.path()).read().await?;
    /// while let Some(row) = rows.next().await { row?; }
    /// assert_eq!(rows.totals().succeeded, 1); // final once the stream has ended
    /// # Ok(()) }
    /// ```
    pub fn totals(&self) -> Totals {
        *self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads everything: the rows, the errors, and the totals.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let file = dir.path().join("predictions.jsonl");
    /// # std::fs::write(&file, concat!(
    /// #     r#"{"key":"q1","status":"","response":{"candidates":[{"content":{"parts":[{"text":"Blue."}]},"finishReason":"STOP"}]}}"#, "\n",
    /// #     "not json\n",
    /// # )).unwrap();
    /// use vertex_batch::batch::{read_local_files, ReadOptions};
    ///
    /// let (rows, errors, totals) = read_local_files(vec![file], ReadOptions::new()).collect_all().await;
    /// assert_eq!(rows[0].text(), Some("Blue."));
    /// assert_eq!(errors.len(), 1); // the unreadable line
    /// assert_eq!(totals.succeeded, 1);
    /// # }
    /// ```
    pub async fn collect_all(mut self) -> (Vec<ResultRow>, Vec<Error>, Totals) {
        let (mut rows, mut errors) = (Vec::new(), Vec::new());
        while let Some(item) = self.next().await {
            match item {
                Ok(r) => rows.push(r),
                Err(e) => errors.push(e),
            }
        }
        let totals = self.totals();
        (rows, errors, totals)
    }
}

impl Stream for ResultStream {
    type Item = Result<ResultRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(item) = self.current.next() {
                return Poll::Ready(Some(item));
            }
            match self.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(batch)) => {
                    {
                        let mut t = self.totals.lock().unwrap_or_else(|e| e.into_inner());
                        let price = self.price.as_deref();
                        for item in &batch {
                            match item {
                                Ok(row) => t.count_priced(row, price),
                                Err(_) => t.errors += 1,
                            }
                        }
                    }
                    self.current = batch.into_iter();
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What de-duplicates a row known only by a hashed key label (a key too
/// long to mirror reversibly, read without the inputs that name it).
fn label_fingerprint(label: &str) -> Fingerprint {
    fingerprint(&format!("\0label:{label}"))
}

/// Reads `files` without inputs: every distinct key once, in file order.
pub(crate) fn read_files(files: Vec<SourceFile>, opts: ReadOptions) -> ResultStream {
    let opts_price = opts.clone();
    let totals = Arc::new(std::sync::Mutex::new(Totals::default()));
    let t = totals.clone();
    // Sized up front from the files' sizes (output lines echo the request
    // and hold the response: rarely under 1 KiB), so the set seldom grows
    // while it is large.
    // Sizes come from a listing: added without overflow, and the set is
    // never sized past about a million keys up front, whatever they claim.
    let bytes = files
        .iter()
        .filter_map(|f| f.size)
        .fold(0u64, u64::saturating_add);
    let expected = usize::try_from(bytes / 1024).unwrap_or(0).min(1 << 20);
    let mut seen = FingerprintSet::with_capacity(expected);
    let rows = parsed_lines(files, opts, seen.probe())
        .map(move |batch| {
            let mut duplicates = 0;
            // Collected in place: the batch's allocation holds the rows.
            let out: Vec<Result<ResultRow>> = batch
                .into_iter()
                .filter_map(|item| {
                    let mut p = match item {
                        Err(e) => return Some(Err(e)),
                        Ok(p) => p,
                    };
                    let mut fp = p.fingerprint;
                    // A key too long for a reversible label also stands for
                    // its hashed label, so a copy of the row that lost its
                    // key (read by that label) is a duplicate, whichever
                    // comes first.
                    let alias = fp
                        .and_then(|_| p.line.row.key())
                        .and_then(crate::format::key::hashed_label)
                        .map(|label| label_fingerprint(&label));
                    if fp.is_none() {
                        // No top-level key: recover it from a reversible
                        // label, or tell repeats apart by the label itself.
                        let key = plain_key(&p.line);
                        fp = match (&key, &p.line.key_label) {
                            (Some(k), _) => Some(fingerprint(k)),
                            (None, Some(label)) => Some(label_fingerprint(label)),
                            (None, None) => None,
                        };
                        p.line.row.set_key(key);
                    }
                    let new = fp.is_none_or(|fp| seen.insert_probed(fp, p.probe));
                    let new_alias = alias.is_none_or(|a| seen.insert(a));
                    if !(new && new_alias) {
                        duplicates += 1;
                        None
                    } else {
                        Some(Ok(p.line.row))
                    }
                })
                .collect();
            if duplicates > 0 {
                t.lock().unwrap_or_else(|e| e.into_inner()).duplicates += duplicates;
            }
            out
        })
        .boxed();
    ResultStream::batched(rows, totals).priced_by(&opts_price)
}

/// Reads output files on the local disk (e.g. an emulator's data directory
/// or a downloaded output directory), in the order given.
///
/// ```no_run
/// # async fn demo() {
/// use futures::StreamExt;
/// use vertex_batch::batch::{read_local_files, ReadOptions};
/// let mut rows = read_local_files(vec!["predictions.jsonl".into()], ReadOptions::new());
/// while let Some(row) = rows.next().await {
///     match row {
///         Ok(row) => println!("{:?}: {}", row.key(), row.outcome().kind()),
///         Err(e) => eprintln!("{e}"),
///     }
/// }
/// println!("{:?}", rows.totals());
/// # }
/// ```
pub fn read_local_files(files: Vec<PathBuf>, opts: ReadOptions) -> ResultStream {
    read_files(files.into_iter().map(SourceFile::local).collect(), opts)
}

/// The prediction files below a local output directory: every `*.jsonl`
/// file at any depth (the service may write `incremental_predictions/`
/// chunks beside `predictions.jsonl`), sorted by path, the
/// `incremental_predictions/` chunks last (a row of the final file wins
/// over its copy in a chunk).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use vertex_batch::batch::local_output_files;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir_all(dir.path().join("incremental_predictions"))?;
/// std::fs::write(dir.path().join("predictions.jsonl"), "")?;
/// std::fs::write(dir.path().join("incremental_predictions/predictions_0001.jsonl"), "")?;
/// std::fs::write(dir.path().join(".partial.jsonl"), "")?; // hidden: left out
/// let files = local_output_files(dir.path())?;
/// assert_eq!(files.len(), 2);
/// assert!(files[0].ends_with("predictions.jsonl"));
/// assert!(files[1].ends_with("incremental_predictions/predictions_0001.jsonl"));
/// # Ok(()) }
/// ```
pub fn local_output_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(output_files_in_order(dir, local_files(dir)?))
}

/// The prediction files of `files` (below `dir`), in reading order.
pub(crate) fn output_files_in_order(dir: &Path, files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files
        .into_iter()
        .filter(|p| is_prediction_file(&p.to_string_lossy()))
        .collect();
    out.sort_by_cached_key(|p| {
        let rel = p.strip_prefix(dir).unwrap_or(p).to_string_lossy();
        (is_incremental(&rel), p.clone())
    });
    out
}

/// Every regular file below `dir`, at any depth, in no particular order.
pub(crate) fn local_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            let path = entry.path();
            if ty.is_dir() {
                walk(&path, out)?;
            } else if ty.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out).map_err(|e| Error::Storage {
        message: format!("listing {}: {e}", dir.display()),
        http_status: None,
        source: Some(Box::new(e)),
    })?;
    Ok(out)
}

/// Whether a file's path (relative to its output directory) is in an
/// `incremental_predictions/` chunk, read after the final files.
pub(crate) fn is_incremental(rel: &str) -> bool {
    rel.split(['/', '\\'])
        .rev()
        .skip(1)
        .any(|c| c == "incremental_predictions")
}

/// Whether an object or file name is a prediction file: a `.jsonl` file
/// that is not hidden (the emulator's partial files start with a dot).
pub(crate) fn is_prediction_file(name: &str) -> bool {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.ends_with(".jsonl") && !base.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, chunks: Vec<&'static [u8]>) -> SourceFile {
        SourceFile::stream(
            name,
            futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed(),
        )
    }

    fn ok_line(key: &str) -> String {
        format!(
            r#"{{"key":"{key}","status":"","response":{{"candidates":[{{"content":{{"parts":[{{"text":"a-{key}"}}]}},"finishReason":"STOP"}}],"usageMetadata":{{"totalTokenCount":2}}}}}}"#
        )
    }

    #[test]
    fn the_block_pool_keeps_a_few_buffers_of_block_size() {
        let pool = BlockPool::new(2, 1024);
        for _ in 0..3 {
            pool.put(Vec::with_capacity(1024));
        }
        pool.put(Vec::with_capacity(1 << 20)); // grew around a long line
        let kept = pool.free.lock().unwrap();
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|b| b.is_empty() && b.capacity() <= 4096));
        drop(kept);
        let reused = pool.get(10);
        assert!(reused.is_empty() && reused.capacity() >= 1024);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn blocks_split_lines_across_chunks_and_keep_line_numbers() {
        let mut text = String::new();
        for i in 0..500 {
            text.push_str(&ok_line(&format!("k{i}")));
            text.push('\n');
        }
        text.push_str("{\"key\":\"broken\",\"sta"); // truncated last line
        let leaked: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let chunks: Vec<&'static [u8]> = leaked.chunks(777).collect();
        let opts = ReadOptions::new().block_size(4096).parallelism(3);
        let (rows, errors, totals) = read_files(vec![file("f", chunks)], opts)
            .collect_all()
            .await;
        assert_eq!(rows.len(), 500);
        assert_eq!(rows[0].key(), Some("k0"));
        assert_eq!(rows[499].text(), Some("a-k499"));
        assert_eq!(errors.len(), 1);
        match &errors[0] {
            Error::Output {
                file,
                line,
                message,
            } => {
                assert_eq!((file.as_str(), *line), ("f", 501));
                assert!(message.contains("truncated"), "{message}");
            }
            e => panic!("{e}"),
        }
        assert_eq!(totals.succeeded, 500);
        assert_eq!(totals.errors, 1);
        assert_eq!(totals.usage.total_tokens, 1000);
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_counted() {
        let a = format!("{}\n{}\n\n{}\n", ok_line("a"), ok_line("b"), ok_line("a"));
        let b = format!("{}\n", ok_line("b"));
        let la: &'static [u8] = Box::leak(a.into_bytes().into_boxed_slice());
        let lb: &'static [u8] = Box::leak(b.into_bytes().into_boxed_slice());
        let (rows, errors, totals) = read_files(
            vec![file("1", vec![la]), file("2", vec![lb])],
            ReadOptions::new(),
        )
        .collect_all()
        .await;
        assert!(errors.is_empty());
        assert_eq!(rows.len(), 2);
        assert_eq!(totals.duplicates, 2);
    }

    #[tokio::test]
    async fn keyless_repeats_with_a_hashed_label_are_dropped_once() {
        let label = crate::format::key::key_label_value(&"long ".repeat(20));
        let line = format!(
            r#"{{"status":"","request":{{"labels":{{"{}":"{label}"}}}},"response":{{"candidates":[{{}}]}}}}"#,
            crate::format::key::KEY_LABEL
        );
        let text = format!("{line}\n{line}\n");
        let leaked: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let (rows, _, totals) = read_files(vec![file("f", vec![leaked])], ReadOptions::new())
            .collect_all()
            .await;
        assert_eq!((rows.len(), totals.duplicates), (1, 1));
    }

    #[tokio::test]
    async fn a_long_key_and_its_hashed_label_come_out_once_whichever_is_first() {
        let long = "a key far longer than a label can hold reversibly, so it is hashed";
        let keyed = ok_line(long);
        let labelled = format!(
            r#"{{"status":"","request":{{"labels":{{"{}":"{}"}}}},"response":{{"candidates":[{{}}]}}}}"#,
            crate::format::key::KEY_LABEL,
            crate::format::key::key_label_value(long)
        );
        for text in [
            format!("{keyed}\n{labelled}\n"),
            format!("{labelled}\n{keyed}\n"),
        ] {
            let leaked: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
            let (rows, errors, totals) =
                read_files(vec![file("f", vec![leaked])], ReadOptions::new())
                    .collect_all()
                    .await;
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!((rows.len(), totals.duplicates), (1, 1));
        }
    }

    #[test]
    fn blank_means_unicode_whitespace_and_a_leading_bom_is_not_content() {
        for blank in [
            &b""[..],
            b" \t",
            "\u{a0}\u{2003} ".as_bytes(),
            b"\x0b",
            "\u{2028}".as_bytes(),
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in [&b"{}"[..], b" x", "\u{a0}x".as_bytes(), b"\xff"] {
            assert!(!is_blank(text), "{text:?}");
        }
        let block = Block {
            file: "f".into(),
            first_line: 1,
            lines: 3,
            data: Bytes::from_static("\u{feff}{\"a\":1}\n\u{a0}\u{3000}\n\u{feff}{}\n".as_bytes()),
        };
        let parsed = parse_block(block, &|raw: Bytes| Ok::<_, String>(raw));
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            parsed[0].as_ref().unwrap(),
            &Bytes::from_static(b"{\"a\":1}")
        );
        // Only the file's first line loses its mark.
        assert!(parsed[1].as_ref().unwrap().starts_with(BOM));
    }

    #[tokio::test]
    async fn an_over_long_line_is_reported_and_skipped() {
        let long = format!("{{\"key\":\"x\",\"pad\":\"{}\"}}\n", "z".repeat(20_000));
        let text = format!("{}\n{long}{}\n", ok_line("a"), ok_line("b"));
        let leaked: &'static [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        let opts = ReadOptions::new().block_size(4096).max_line_bytes(8192);
        let (rows, errors, _) = read_files(vec![file("f", leaked.chunks(1000).collect())], opts)
            .collect_all()
            .await;
        let keys: Vec<_> = rows.iter().filter_map(|r| r.key()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(errors.len(), 1);
        assert!(
            matches!(&errors[0], Error::Output { line: 2, .. }),
            "{:?}",
            errors[0]
        );
    }

    #[tokio::test]
    async fn a_read_error_ends_that_file_with_an_error() {
        let good: &'static [u8] = b"{\"key\":\"a\",\"status\":\"boom\"}\n";
        let f = SourceFile::stream(
            "f",
            futures::stream::iter(vec![
                Ok(Bytes::from_static(good)),
                Err(Error::Storage {
                    message: "reset".into(),
                    http_status: None,
                    source: None,
                }),
            ])
            .boxed(),
        );
        let (rows, errors, totals) = read_files(vec![f], ReadOptions::new()).collect_all().await;
        assert_eq!(rows.len(), 1);
        assert_eq!(totals.failed, 1);
        assert!(matches!(errors[..], [Error::Storage { .. }]));
    }
}
