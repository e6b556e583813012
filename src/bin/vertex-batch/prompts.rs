//! PROMPTS files: JSONL of `{"key": "…", "request": {GenerateContentRequest}}`
//! (the Gemini batch input format) or plain text, one prompt a line (its
//! key the 1-based line number). Read twice, streaming: once to check every
//! line (so a bad line is reported with its number before anything is
//! uploaded), once to hand the prompts on.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde_json::value::RawValue;
use vertex_batch::data::input::{read_input_lines, read_text_prompts, InputLine};

use crate::fail::{CliError, CliResult};

/// How a PROMPTS file is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Decide from the first non-blank line: `{` means JSONL.
    Auto,
    /// `{"key": …, "request": {…}}` lines.
    Jsonl,
    /// One prompt a line; keys are line numbers.
    Text,
}

/// A checked prompts file.
pub struct Prompts {
    path: PathBuf,
    format: Format,
    rows: u64,
}

fn open(path: &Path) -> CliResult<BufReader<File>> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 16, f))
        .map_err(|e| {
            CliError::usage(format!(
                "cannot read the prompts file {}: {e}",
                path.display()
            ))
        })
}

/// Looks at the first non-blank line (at most 64 KiB of it).
fn detect(path: &Path) -> CliResult<Format> {
    let mut r = open(path)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(64 << 10)
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            return Err(CliError::usage(format!(
                "the prompts file {} holds no prompts",
                path.display()
            )));
        }
        // A byte-order mark is not content (the line readers drop it too).
        let text = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&line);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            None => continue,
            Some(b'{') => return Ok(Format::Jsonl),
            Some(_) => return Ok(Format::Text),
        }
    }
}

impl Prompts {
    /// Opens and checks `path`: every line parses, keys are unique, there
    /// is at least one prompt. Errors name the file and the line.
    pub fn check(path: &Path, format: Format) -> CliResult<Prompts> {
        // Read three times (detect, check, upload): a pipe or a device
        // would give different bytes each time.
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => {
                return Err(CliError::usage(format!(
                    "the prompts file {} is not a regular file (a pipe or device cannot be read twice); \
                     save it to a file first",
                    path.display()
                )))
            }
            _ => {}
        }
        let format = match format {
            Format::Auto => detect(path)?,
            f => f,
        };
        let mut p = Prompts {
            path: path.to_owned(),
            format,
            rows: 0,
        };
        // Keys are compared by a 128-bit hash: 16 bytes a prompt.
        let mut seen = HashSet::new();
        for line in p.raw_lines()? {
            let line = line.map_err(|e| p.line_error(e))?;
            if !seen.insert(xxhash_rust::xxh3::xxh3_128(line.key.as_bytes())) {
                return Err(CliError::usage(format!(
                    "{}: line {}: duplicate key {:?}",
                    p.path.display(),
                    line.line,
                    line.key
                )));
            }
            p.rows += 1;
        }
        if p.rows == 0 {
            return Err(CliError::usage(format!(
                "the prompts file {} holds no prompts",
                p.path.display()
            )));
        }
        Ok(p)
    }

    fn raw_lines(&self) -> CliResult<Box<dyn Iterator<Item = vertex_batch::Result<InputLine>>>> {
        let r = open(&self.path)?;
        Ok(match self.format {
            Format::Text => Box::new(read_text_prompts(r)),
            _ => Box::new(read_input_lines(r)),
        })
    }

    fn line_error(&self, e: vertex_batch::Error) -> CliError {
        let message = match e {
            vertex_batch::Error::Validation(v) => v.message().to_owned(),
            other => other.to_string(),
        };
        CliError::usage(format!("{}: {message}", self.path.display()))
    }

    /// How many prompts the file holds.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The file's format (never `Auto`).
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The prompts, read again. A line that stopped parsing since the
    /// check (the file changed underneath) is recorded in `broken` and
    /// skipped; the caller reports it.
    pub fn iter<'a>(
        &self,
        broken: &'a std::cell::Cell<Option<u64>>,
    ) -> CliResult<impl Iterator<Item = (String, Box<RawValue>)> + 'a> {
        Ok(self.raw_lines()?.filter_map(move |l| match l {
            Ok(l) => Some((l.key, l.request)),
            Err(_) => {
                broken.set(Some(broken.get().unwrap_or(0) + 1));
                None
            }
        }))
    }

    /// Writes the prompts as a Gemini batch input file (JSONL) at `to`,
    /// for joining results to plain-text prompts.
    pub fn write_jsonl(&self, to: &mut impl std::io::Write) -> CliResult<()> {
        for l in self.raw_lines()? {
            let l = l.map_err(|e| self.line_error(e))?;
            let key = serde_json::to_string(&l.key)
                .map_err(|e| CliError::other(format!("encoding key {:?}: {e}", l.key)))?;
            writeln!(to, "{{\"key\":{key},\"request\":{}}}", l.request.get())
                .map_err(|e| CliError::other(format!("writing a temporary file: {e}")))?;
        }
        Ok(())
    }
}
