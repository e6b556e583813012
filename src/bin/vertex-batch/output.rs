//! RESULTS files: JSONL, exactly one line per key. This is the tool's
//! contract with scripts:
//!
//! | field | when | what |
//! |---|---|---|
//! | `key` | always | the prompt's key (`null` only for an output row with no key at all) |
//! | `outcome` | always | `succeeded`, `failed`, `blocked` or `missing` |
//! | `response` | succeeded, blocked | the model's response, byte for byte as the job wrote it: Gemini's `GenerateContentResponse`, an embedding's `response`, a text embedding's `predictions`, Claude's Message, an open model's `response` envelope |
//! | `error` | failed | `{"code": …, "message": …}`: the code as the service gives it (usually an HTTP status such as 400 or 429), plus `status` (e.g. `RESOURCE_EXHAUSTED`) when known |
//! | `text` | succeeded, chat models | the answer's text (Gemini: the first candidate's; Claude: the text blocks'; open models: the first choice's) |
//! | `embedding` | succeeded, embedding models | the vector, an array of numbers as the job wrote it |
//! | `finish_reason` | succeeded (chat models); blocked when the answer was withheld | e.g. `STOP`, `MAX_TOKENS`; on a blocked row `SAFETY`, `PROHIBITED_CONTENT`, `RECITATION`, `BLOCKLIST`, `SPII`, …; Claude's `stop_reason` and OpenAI's `finish_reason` in the same names (`end_turn`, `stop_sequence`, `stop` → `STOP`; `max_tokens`, `length` → `MAX_TOKENS`; `refusal`, `content_filter` → `SAFETY`) |
//!
//! `blocked` is no answer, by the model's filters: the prompt was blocked
//! (`response.promptFeedback.blockReason`, no candidate, no
//! `finish_reason`), or the answer was withheld (a candidate with no content
//! that stopped for a reason other than `STOP` or `MAX_TOKENS`; its
//! `finish_reason` is given). Blocked rows have no `text`, are never
//! retried, and make the exit code 4.
//! | `processed_time` | when the job wrote one | as the job wrote it |
//! | `usage` | succeeded | the row's tokens by kind: `prompt` (cached ones included), `candidates`, `thoughts`, `cached`, `tool_use`, `total` (Claude and open models mapped onto the same kinds) |
//! | `cost_usd` | `run`, when the model is in the price table | what the row cost at batch rates, in US dollars (0 for rows not billed: failed, blocked, missing) |
//!
//! Fields that do not apply are left out. A file is written beside its
//! final name and renamed into place at the end, so a RESULTS file is never
//! half written; `-` writes to stdout.
//!
//! When reading the output fails part way (storage unreachable, an object
//! gone or changed — anything but an unreadable line, which is warned about
//! and its row comes back `missing`), RESULTS is not written: the lines
//! written so far are kept in `RESULTS.partial` (whole lines, as above, but
//! not every key) and the error names it. A later complete write removes a
//! `RESULTS.partial` left beside it.

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use futures::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use vertex_batch::{
    batch::{ResultStream, Totals},
    format::{Outcome, ResultRow},
};

use crate::{
    args::Global,
    fail::{clean, CliError, CliResult},
};

#[derive(Serialize)]
struct Line<'a> {
    key: Option<&'a str>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    processed_time: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
}

/// A succeeded row's tokens by kind.
#[derive(Serialize)]
struct UsageOut {
    prompt: u64,
    candidates: u64,
    thoughts: u64,
    cached: u64,
    tool_use: u64,
    total: u64,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: Option<i64>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

/// Where RESULTS go.
pub struct ResultsFile {
    out: Box<dyn Write>,
    /// The temporary file and the final path, for a file destination.
    file: Option<(tempfile::TempPath, PathBuf)>,
    name: String,
    /// Lines written so far.
    lines: u64,
    /// The file appended to, for fsync (`--results` of `watch`).
    synced: Option<std::fs::File>,
}

impl ResultsFile {
    /// Opens `dest` (`-`: stdout). For a file, the temporary file is made
    /// now, so an unwritable destination fails before any job starts.
    pub fn create(dest: &str) -> CliResult<Self> {
        if dest == "-" {
            return Ok(ResultsFile {
                out: Box::new(BufWriter::new(std::io::stdout())),
                file: None,
                name: "stdout".into(),
                lines: 0,
                synced: None,
            });
        }
        if dest.is_empty() || dest.ends_with('/') || dest.ends_with(std::path::MAIN_SEPARATOR) {
            return Err(CliError::usage(format!(
                "--output {dest:?} is not a file name (use - for stdout)"
            )));
        }
        let path = PathBuf::from(dest);
        // An existing destination that is not a regular file (a device such
        // as /dev/null, a FIFO) is written to directly, never replaced.
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| CliError::usage(format!("cannot write {dest}: {e}")))?;
            return Ok(ResultsFile {
                out: Box::new(BufWriter::new(f)),
                file: None,
                name: dest.to_owned(),
                lines: 0,
                synced: None,
            });
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if path.is_dir() {
            return Err(CliError::usage(format!(
                "--output {dest} is a directory; give a file name"
            )));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".vertex-batch-results-")
            .tempfile_in(&dir)
            .map_err(|e| {
                CliError::usage(format!(
                    "cannot write results in {}: {e}",
                    display_dir(&dir)
                ))
            })?;
        let (f, tmp_path) = tmp.into_parts();
        crate::interrupt::remove_on_exit(&tmp_path);
        Ok(ResultsFile {
            out: Box::new(BufWriter::with_capacity(1 << 16, f)),
            file: Some((tmp_path, path)),
            name: dest.to_owned(),
            lines: 0,
            synced: None,
        })
    }

    /// Opens `path` to append RESULTS lines to, made if absent. The keys of
    /// the lines already there go to `on_key` (so they are not written
    /// again); a last line cut short (a run killed while writing it) is
    /// cut off first, so the file holds whole lines only.
    pub fn append(path: &Path, mut on_key: impl FnMut(&str)) -> CliResult<Self> {
        use std::io::{BufRead, Read, Seek};
        /// A RESULTS line of this tool's: a key and an outcome.
        #[derive(serde::Deserialize)]
        struct Results {
            key: Option<String>,
            outcome: String,
        }
        // A line longer than this is not one this tool wrote.
        const MAX_LINE: u64 = 1 << 30;
        let name = path.display().to_string();
        let io = |e: std::io::Error| CliError::usage(format!("cannot append to {name}: {e}"));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // Checked whole before anything changes: a file that is not RESULTS
        // is refused, untouched.
        let (mut keep, mut newline) = (0u64, false);
        let mut keys = Vec::new();
        {
            let mut r = std::io::BufReader::new(&f);
            let mut line = Vec::new();
            let mut n = 0u64;
            loop {
                line.clear();
                let got = (&mut r)
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut line)
                    .map_err(io)?;
                if got == 0 {
                    break;
                }
                n += 1;
                let whole = line.last() == Some(&b'\n');
                match serde_json::from_slice::<Results>(&line) {
                    Ok(Results { key, outcome }) if !outcome.is_empty() => {
                        keys.extend(key);
                        keep += got as u64;
                        // Complete but for its newline: kept, newline added.
                        newline = !whole;
                    }
                    // A last line cut short by a killed run: cut off.
                    Err(_) if !whole => break,
                    _ => {
                        return Err(CliError::usage(format!(
                            "{name}:{n}: not a RESULTS line (it has no key and outcome); \
                             --results appends only to a file of RESULTS lines"
                        )))
                    }
                }
                if !whole {
                    break;
                }
            }
        }
        let mut f = f;
        f.set_len(keep).map_err(io)?;
        f.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        if newline {
            f.write_all(b"\n").map_err(io)?;
        }
        for k in &keys {
            on_key(k);
        }
        let synced = f.try_clone().map_err(io)?;
        Ok(ResultsFile {
            out: Box::new(BufWriter::with_capacity(1 << 16, f)),
            file: None,
            name,
            lines: 0,
            synced: Some(synced),
        })
    }

    /// Flushes, and makes an appended file durable.
    pub fn sync(&mut self) -> CliResult<()> {
        self.flush()?;
        if let Some(f) = &self.synced {
            f.sync_data().map_err(writing(&self.name))?;
        }
        Ok(())
    }

    /// Where the results go, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes what was written so far through (a pipe sees it now).
    pub fn flush(&mut self) -> CliResult<()> {
        self.out.flush().map_err(writing(&self.name))
    }

    /// Writes one row.
    pub fn write(&mut self, row: &ResultRow) -> CliResult<()> {
        self.write_priced(row, None)
    }

    /// Writes one row, with its cost at `price` (`cost_usd`).
    pub fn write_priced(
        &mut self,
        row: &ResultRow,
        price: Option<&vertex_batch::cost::ModelPrice>,
    ) -> CliResult<()> {
        let mut line = Line {
            key: row.key(),
            outcome: row.outcome().kind(),
            response: None,
            error: None,
            text: None,
            embedding: None,
            finish_reason: None,
            processed_time: row.processed_time_str(),
            usage: None,
            cost_usd: price.and_then(|p| p.result_cost(row)).map(|c| c.usd()),
        };
        match row.outcome() {
            Outcome::Succeeded(a) => {
                line.response = a.raw_response().ok();
                let u = a.usage();
                line.usage = Some(UsageOut {
                    prompt: u.prompt_tokens,
                    candidates: u.candidates_tokens,
                    thoughts: u.thoughts_tokens,
                    cached: u.cached_tokens,
                    tool_use: u.tool_use_prompt_tokens,
                    total: u.total_tokens,
                });
                // An embedding row has its vector, a chat row its text.
                match a.embedding() {
                    Some(e) => line.embedding = serde_json::from_str(e.json()).ok(),
                    None => line.text = Some(a.text()),
                }
                line.finish_reason = a.finish_reason().map(|f| f.as_str());
            }
            Outcome::Blocked(b) => {
                line.response = b.raw_response().ok();
                line.finish_reason = b.finish_reason().map(|f| f.as_str());
            }
            Outcome::Failed(e) => {
                line.error = Some(ErrorOut {
                    code: e.code(),
                    message: e.message(),
                    status: e.status_name(),
                })
            }
            Outcome::Missing(_) => {}
        }
        serde_json::to_writer(&mut self.out, &line).map_err(writing(&self.name))?;
        self.out.write_all(b"\n").map_err(writing(&self.name))?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes and moves the file into place.
    pub fn finish(mut self) -> CliResult<()> {
        self.out.flush().map_err(writing(&self.name))?;
        drop(self.out);
        if let Some((tmp, path)) = self.file.take() {
            crate::interrupt::forget(&tmp);
            if let Err(e) = tmp.persist(&path) {
                // Keep what was written: hours of results are not dropped.
                let kept = e.path.keep().map(|p| p.display().to_string());
                return Err(CliError::other(format!(
                    "moving the results into {}: {}; they are kept in {}",
                    path.display(),
                    e.error,
                    kept.unwrap_or_else(|_| "(a temporary file that could not be kept)".into())
                )));
            }
            // What an earlier, failed write kept is superseded.
            let partial = partial_path(&path);
            if std::fs::symlink_metadata(&partial).is_ok_and(|m| m.is_file()) {
                let _ = std::fs::remove_file(&partial);
            }
        }
        Ok(())
    }

    /// After a failed read: keeps the lines written so far — a file's in
    /// `RESULTS.partial` — and says where they are, for the error.
    pub fn keep_partial(self) -> String {
        let ResultsFile {
            mut out,
            file,
            name,
            lines,
            ..
        } = self;
        let flushed = out.flush();
        drop(out);
        let Some((tmp, path)) = file else {
            return format!("the {lines} line(s) written before it went to {name}");
        };
        crate::interrupt::forget(&tmp);
        if lines == 0 {
            return format!("nothing was written ({name} was not made)");
        }
        if let Err(e) = flushed {
            return format!("the {lines} line(s) written before it could not be kept ({e})");
        }
        let partial = partial_path(&path);
        match tmp.persist(&partial) {
            Ok(()) => format!(
                "the {lines} line(s) written before it are kept in {} ({name} is written only \
                 when complete)",
                partial.display()
            ),
            Err(e) => match e.path.keep() {
                Ok(p) => format!(
                    "the {lines} line(s) written before it are kept in {} (moving them to {} \
                     failed: {})",
                    p.display(),
                    partial.display(),
                    e.error
                ),
                Err(_) => format!("the {lines} line(s) written before it could not be kept"),
            },
        }
    }
}

/// The error of a failed write to the results called `name`.
fn writing<E: std::fmt::Display>(name: &str) -> impl FnOnce(E) -> CliError + '_ {
    move |e| CliError::other(format!("writing {name}: {e}"))
}

/// `RESULTS.partial`, beside `RESULTS`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn display_dir(p: &Path) -> String {
    p.display().to_string()
}

/// What a results stream held.
pub struct Written {
    pub totals: Totals,
    /// Output lines that could not be read (their rows are missing).
    pub unreadable: u64,
}

impl Written {
    /// Whether every row succeeded and nothing was unreadable.
    pub fn all_succeeded(&self) -> bool {
        let t = &self.totals;
        t.failed + t.blocked + t.missing + t.errors + self.unreadable == 0
    }

    /// One line for a person.
    pub fn summary(&self, dest: &str) -> String {
        let t = &self.totals;
        let rows = t.succeeded + t.failed + t.blocked + t.missing;
        let mut s = format!(
            "{rows} rows: {} succeeded, {} failed, {} blocked, {} missing -> {dest}",
            t.succeeded, t.failed, t.blocked, t.missing
        );
        if self.unreadable > 0 {
            s.push_str(&format!(" ({} unreadable output lines)", self.unreadable));
        }
        s
    }
}

/// The tokens and the cost of a batch, for its summary: `priced` says
/// whether `model` was in the price table.
pub fn usage_line(
    t: &Totals,
    cost: Option<vertex_batch::cost::Cost>,
    model: &str,
    priced: bool,
) -> String {
    let u = &t.usage;
    let cost = match (cost, priced) {
        (Some(c), true) if t.unpriced > 0 => format!(
            "cost {c} at batch rates, and {} succeeded rows could not be priced",
            t.unpriced
        ),
        (Some(c), true) => format!("cost {c} at batch rates"),
        _ => format!("cost unknown: {model} is not in the price table (give one with --prices)"),
    };
    format!(
        "tokens: {} prompt ({} cached, {} tool use), {} candidates, {} thoughts; {cost}",
        u.prompt_tokens,
        u.cached_tokens,
        u.tool_use_prompt_tokens,
        u.candidates_tokens,
        u.thoughts_tokens
    )
}

/// Writes every row of `rows` to `out`, moves the file into place and
/// prints the one-line summary. When reading fails part way, what was
/// written is kept (see the module docs) and the error says where, and
/// `again`: how to write the whole file.
pub async fn deliver(
    rows: ResultStream,
    mut out: ResultsFile,
    global: Option<&Global>,
    again: &str,
) -> CliResult<Written> {
    let written = match write_all(rows, &mut out).await {
        Ok(w) => w,
        Err(Stopped::Write(e)) => return Err(e),
        Err(Stopped::Read(e)) => {
            let err = CliError::from_lib(e, global);
            let kept = out.keep_partial();
            return Err(CliError::new(
                err.code,
                format!(
                    "reading the results failed: {}; {kept}; {again}",
                    err.message
                ),
            ));
        }
    };
    let dest = out.name().to_owned();
    out.finish()?;
    eprintln!("{}", written.summary(&dest));
    Ok(written)
}

/// Warns about an unreadable output line (the first ten), counting it in
/// `unreadable`; false for any other error (reading failed).
pub fn warn_unreadable(e: &vertex_batch::Error, unreadable: &mut u64) -> bool {
    let vertex_batch::Error::Output {
        file,
        line,
        message,
        ..
    } = e
    else {
        return false;
    };
    *unreadable += 1;
    if *unreadable <= 10 {
        eprintln!("warning: {}:{line}: {}", clean(file), clean(message));
    }
    true
}

/// Why writing the rows stopped.
enum Stopped {
    /// Reading a row failed (the output, the inputs).
    Read(vertex_batch::Error),
    /// Writing it did.
    Write(CliError),
}

/// Writes every row of `rows` to `out`, warning about unreadable lines.
async fn write_all(mut rows: ResultStream, out: &mut ResultsFile) -> Result<Written, Stopped> {
    let mut unreadable = 0;
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => {
                out.write(&row).map_err(Stopped::Write)?;
                crate::pause::at("writing");
            }
            Err(e) => {
                if !warn_unreadable(&e, &mut unreadable) {
                    return Err(Stopped::Read(e));
                }
            }
        }
    }
    Ok(Written {
        totals: rows.totals(),
        unreadable,
    })
}
