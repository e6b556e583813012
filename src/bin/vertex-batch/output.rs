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
use vertex_batch::data::{Outcome, ResultRow, ResultStream, Totals};

use crate::{
    fail::{clean, CliError, CliResult},
    Global,
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
        })
    }

    /// Where the results go, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one row.
    pub fn write(&mut self, row: &ResultRow) -> CliResult<()> {
        let mut line = Line {
            key: row.key(),
            outcome: row.outcome().kind(),
            response: None,
            error: None,
            text: None,
            embedding: None,
            finish_reason: None,
            processed_time: row.processed_time_str(),
        };
        match row.outcome() {
            Outcome::Succeeded(a) => {
                line.response = a.raw_response().ok();
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
        serde_json::to_writer(&mut self.out, &line)
            .map_err(|e| CliError::other(format!("writing {}: {e}", self.name)))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| CliError::other(format!("writing {}: {e}", self.name)))?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes and moves the file into place.
    pub fn finish(mut self) -> CliResult<()> {
        self.out
            .flush()
            .map_err(|e| CliError::other(format!("writing {}: {e}", self.name)))?;
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
    fn keep_partial(self) -> String {
        let ResultsFile {
            mut out,
            file,
            name,
            lines,
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
            Err(vertex_batch::Error::Output {
                file,
                line,
                message,
                ..
            }) => {
                unreadable += 1;
                if unreadable <= 10 {
                    eprintln!("warning: {}:{line}: {}", clean(&file), clean(&message));
                }
            }
            Err(e) => return Err(Stopped::Read(e)),
        }
    }
    Ok(Written {
        totals: rows.totals(),
        unreadable,
    })
}
