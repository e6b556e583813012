//! PROMPTS files: JSONL of `{"key": "…", "request": {GenerateContentRequest}}`
//! (the Gemini batch input format) or plain text, one prompt a line (its
//! key the 1-based line number). One reader for every command (`run`,
//! `submit`, `results --input`): read twice, streaming, once to check every
//! line (so a bad line is reported with its number before anything is
//! uploaded), once to hand the prompts on; a file that changed in between
//! is an error, never prompts silently left out. `results --input` joins a
//! JSONL copy written by this reader, so it accepts exactly what `run`
//! does (a byte-order mark, Unicode-blank lines).

use std::{
    collections::HashSet,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use serde_json::value::RawValue;
use vertex_batch::{
    family::Family,
    format::{read_input_lines, read_text_prompts, read_text_prompts_as, InputLine, TextShape},
    JobSpec,
};

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

/// What a plain-text prompt becomes, for the model's family (`run` and
/// `submit`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Embedding models: the vectors' dimension (Gemini embeddings and
    /// open embedding models per line; text embeddings through the job's
    /// `outputDimensionality`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub dimensions: Option<u32>,
    /// Embedding models: the task type, e.g. RETRIEVAL_DOCUMENT (plain-text
    /// prompts).
    #[arg(long, value_name = "T")]
    pub task_type: Option<String>,
    /// Chat models: the most tokens an answer may have (Gemini: the job's
    /// maxOutputTokens; Claude and open models: each plain-text prompt's
    /// max_tokens). Claude's default is 1024.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_output_tokens: Option<u32>,
}

impl ShapeArgs {
    /// The shape of `model`'s plain-text prompts; a usage error for a
    /// flag its family does not take, or a model name that is ambiguous.
    pub fn shape(&self, model: &str) -> CliResult<TextShape> {
        let mut shape = TextShape::for_model(model).map_err(|e| CliError::usage(e.to_string()))?;
        let family = shape.family();
        let embeds = family.embeds() || (family == Family::OpenModel && model.contains("embed"));
        if embeds && self.max_output_tokens.is_some() {
            return Err(CliError::usage(format!(
                "--max-output-tokens is for chat models; {model} is a {family} model"
            )));
        }
        if !embeds && (self.dimensions.is_some() || self.task_type.is_some()) {
            return Err(CliError::usage(format!(
                "--dimensions and --task-type are for embedding models; {model} is a {family} model"
            )));
        }
        if let Some(n) = self.dimensions {
            shape = shape.dimensions(n);
        }
        if let Some(t) = &self.task_type {
            shape = shape.task_type(t.clone());
        }
        if let Some(n) = self.max_output_tokens {
            shape = shape.max_tokens(n);
        }
        Ok(shape)
    }

    /// The job-level parameters the flags set: a text embedding's
    /// dimension, a Gemini answer's most tokens (so JSONL prompts get it
    /// too).
    pub fn apply(&self, job: JobSpec, family: Family) -> JobSpec {
        match (family, self.dimensions, self.max_output_tokens) {
            (Family::TextEmbedding, Some(n), _) => job.parameter("outputDimensionality", n),
            (Family::Gemini, _, Some(n)) => job.max_output_tokens(n),
            _ => job,
        }
    }
}

/// A checked prompts file.
pub struct Prompts {
    path: PathBuf,
    format: Format,
    rows: u64,
    shape: Option<TextShape>,
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
    pub fn check(path: &Path, format: Format, shape: Option<TextShape>) -> CliResult<Prompts> {
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
            shape,
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
            Format::Text => match &self.shape {
                Some(shape) => Box::new(read_text_prompts_as(r, shape.clone())),
                None => Box::new(read_text_prompts(r)),
            },
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

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The prompts, read again for the upload. The file may have changed
    /// since the check: a line that stopped parsing, or a different number
    /// of prompts, is recorded in `broken` (the first such line's message)
    /// and ends the iteration with an item the input writer refuses (an
    /// empty key), so `start_batch` fails while staging, before the
    /// manifest is written or a job submitted: a batch is never staged with
    /// prompts silently left out. (`start_batch` takes an infallible
    /// iterator; this is how an error gets through it.) The caller reports
    /// `broken` instead of the writer's error.
    pub fn iter<'a>(
        &'a self,
        broken: &'a std::cell::Cell<Option<String>>,
    ) -> CliResult<impl Iterator<Item = (String, Box<RawValue>)> + 'a> {
        let mut lines = self.raw_lines()?;
        let mut yielded = 0u64;
        let mut done = false;
        Ok(std::iter::from_fn(move || {
            if done {
                return None;
            }
            let problem = match lines.next() {
                Some(Ok(l)) => {
                    yielded += 1;
                    return Some((l.key, l.request));
                }
                Some(Err(e)) => self.line_error(e).message,
                None if yielded == self.rows => return None,
                None => format!(
                    "{}: {} prompts now, {} when it was checked",
                    self.path.display(),
                    yielded,
                    self.rows
                ),
            };
            done = true;
            broken.set(Some(problem));
            Some((String::new(), poison()))
        }))
    }

    /// The error to report when staging failed on a line recorded by
    /// [`Prompts::iter`].
    pub fn changed(&self, problem: &str) -> CliError {
        CliError::usage(format!(
            "{problem}: the prompts file changed while it was read (after it was checked); \
             nothing was submitted: run again once it is complete"
        ))
    }

    /// Writes the prompts as a Gemini batch input file (JSONL) at `to`,
    /// for joining results to plain-text prompts.
    pub fn write_jsonl(&self, to: &mut impl std::io::Write) -> CliResult<()> {
        let mut n = 0u64;
        for l in self.raw_lines()? {
            let l = l.map_err(|e| self.changed(&self.line_error(e).message))?;
            n += 1;
            let key = serde_json::to_string(&l.key)
                .map_err(|e| CliError::other(format!("encoding key {:?}: {e}", l.key)))?;
            writeln!(to, "{{\"key\":{key},\"request\":{}}}", l.request.get())
                .map_err(|e| CliError::other(format!("writing a temporary file: {e}")))?;
        }
        if n != self.rows {
            return Err(self.changed(&format!(
                "{}: {n} prompts now, {} when it was checked",
                self.path.display(),
                self.rows
            )));
        }
        Ok(())
    }
}

/// The request sent with the empty key (the writer refuses the key before
/// it looks at the request).
/// A request that fails staging before the manifest (a JSON `null`, with
/// an empty key).
pub fn poison() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vertex_batch::{batch::BatchSpec, storage::Storage, Client, JobSpec};

    /// Stages `prompts` as a batch into a local bucket (the client points
    /// nowhere: staging must fail before anything is submitted).
    async fn stage(prompts: &Prompts, bucket: &Path) -> (vertex_batch::Result<()>, Option<String>) {
        let client = Client::builder()
            .ignore_env()
            .project("p")
            .location("us-central1")
            .emulator_host("127.0.0.1:9")
            .build()
            .unwrap();
        let storage = Storage::local(bucket);
        let spec =
            BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://bkt/b").request_key("k");
        let broken = std::cell::Cell::new(None);
        let r = client
            .start_batch(&storage, &spec, prompts.iter(&broken).unwrap())
            .await
            .map(|_| ());
        (r, broken.take())
    }

    fn line(key: &str) -> String {
        format!("{{\"key\":\"{key}\",\"request\":{{\"contents\":[]}}}}\n")
    }

    #[tokio::test]
    async fn a_file_changed_after_its_check_fails_staging_before_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prompts.jsonl");
        for changed in [
            format!("{}not json any more\n{}", line("a"), line("c")),
            format!("{}{}{}", line("a"), line("b"), line("c")),
            line("a"),
        ] {
            std::fs::write(&file, line("a") + &line("b")).unwrap();
            let prompts = Prompts::check(&file, Format::Auto, None).unwrap();
            assert_eq!(prompts.rows(), 2);
            std::fs::write(&file, &changed).unwrap();
            let bucket = tempfile::tempdir().unwrap();
            let (staged, broken) = stage(&prompts, bucket.path()).await;
            assert!(staged.is_err(), "{changed:?}");
            let problem = broken.unwrap_or_else(|| panic!("not recorded: {changed:?}"));
            assert!(problem.contains("prompts.jsonl"), "{problem}");
            let message = prompts.changed(&problem).message;
            assert!(message.contains("nothing was submitted"), "{message}");
            assert!(
                !bucket.path().join("bkt/b/k/manifest.json").exists(),
                "no manifest for a batch missing prompts"
            );
        }
        // Unchanged: every prompt goes through, nothing is recorded.
        std::fs::write(&file, line("a") + &line("b")).unwrap();
        let prompts = Prompts::check(&file, Format::Auto, None).unwrap();
        let broken = std::cell::Cell::new(None);
        let keys: Vec<String> = prompts.iter(&broken).unwrap().map(|(k, _)| k).collect();
        assert_eq!(
            (keys, broken.take()),
            (vec!["a".to_owned(), "b".to_owned()], None)
        );
    }

    #[test]
    fn the_jsonl_copy_fails_on_a_changed_file_and_keeps_a_bom_file_readable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prompts.jsonl");
        std::fs::write(
            &file,
            format!("\u{feff}{}\u{a0}\u{2003}\n{}", line("a"), line("b")),
        )
        .unwrap();
        let prompts = Prompts::check(&file, Format::Auto, None).unwrap();
        let mut copy = Vec::new();
        prompts.write_jsonl(&mut copy).unwrap();
        assert_eq!(String::from_utf8(copy).unwrap(), line("a") + &line("b"));
        std::fs::write(&file, line("a")).unwrap();
        let err = prompts.write_jsonl(&mut Vec::new()).err().unwrap();
        assert!(
            err.message.contains("1 prompts now, 2 when it was checked"),
            "{}",
            err.message
        );
    }
}
