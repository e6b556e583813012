//! How the emulator maps cloud storage onto its data directory:
//!
//! * `gs://BUCKET/OBJECT` is the file `DATA_DIR/gcs/BUCKET/OBJECT`, the
//!   layout of a local storage directory (`storage::local::object_path`,
//!   so `Storage::local(DATA_DIR/gcs)` sees the same objects), once the
//!   name has passed the stricter checks here;
//! * `bq://PROJECT.DATASET.TABLE` is the file
//!   `DATA_DIR/bigquery/PROJECT/DATASET/TABLE.jsonl`, one row (a JSON
//!   object) per line.
//!
//! Input wildcards follow gsutil: `*` matches within one `/`-separated level,
//! `**` across levels, `?` one character, `[abc]`, `[a-z]`, `[!x]` a class.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::error::EmuError;
use crate::{
    storage::local::object_path,
    uri::{BigQueryUri, GcsUri},
};

/// Checks one `/`-separated segment of an object name (or a BigQuery
/// name) for what could leave the directory it is joined to: `.` and `..`
/// (also percent-encoded), `\\`, NUL and other control characters, a drive
/// letter (`C:`), and an encoded `/`.
fn check_segment(seg: &str, what: &str) -> Result<(), EmuError> {
    let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
    for s in [seg, decoded.as_ref()] {
        if s == "." || s == ".." {
            return Err(EmuError::invalid(format!(
                "{what}: a '.' or '..' segment ({seg:?}) is not allowed"
            )));
        }
        if s.contains('\\') || s.chars().any(char::is_control) {
            return Err(EmuError::invalid(format!(
                "{what}: {seg:?} holds a backslash or a control character"
            )));
        }
        let b = s.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(EmuError::invalid(format!(
                "{what}: {seg:?} looks like a drive letter"
            )));
        }
    }
    if decoded.contains('/') {
        return Err(EmuError::invalid(format!(
            "{what}: {seg:?} holds an encoded '/'"
        )));
    }
    Ok(())
}

/// Checks an object name (or prefix, or wildcard pattern): relative, each
/// segment safe, no empty segment but a trailing one (`dir/`).
fn check_object(object: &str) -> Result<(), EmuError> {
    if object.starts_with('/') {
        return Err(EmuError::invalid(format!(
            "object {object:?} starts with '/'"
        )));
    }
    let segs: Vec<&str> = object.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        if seg.is_empty() {
            if i + 1 == segs.len() {
                continue;
            }
            return Err(EmuError::invalid(format!(
                "object {object:?} has an empty segment ('//')"
            )));
        }
        check_segment(seg, "object")?;
    }
    Ok(())
}

/// The file behind a Cloud Storage object (or prefix), always inside
/// `DATA_DIR/gcs/BUCKET`; an object name that could leave it is an error.
pub fn gcs_path(data_dir: &Path, uri: &GcsUri) -> Result<PathBuf, EmuError> {
    check_segment(uri.bucket(), "bucket")?;
    check_object(uri.object())?;
    Ok(object_path(
        &data_dir.join("gcs"),
        uri.bucket(),
        uri.object(),
    ))
}

/// The file behind a BigQuery table (`table` overrides the URI's), always
/// inside `DATA_DIR/bigquery`.
pub fn bq_path(
    data_dir: &Path,
    uri: &BigQueryUri,
    table: Option<&str>,
) -> Result<PathBuf, EmuError> {
    let table = table.or(uri.table()).unwrap_or("table");
    for (part, what) in [
        (uri.project(), "project"),
        (uri.dataset(), "dataset"),
        (table, "table"),
    ] {
        if part.is_empty() || part.contains('/') {
            return Err(EmuError::invalid(format!(
                "{what} {part:?} is not a BigQuery name"
            )));
        }
        check_segment(part, what)?;
    }
    Ok(data_dir
        .join("bigquery")
        .join(uri.project())
        .join(uri.dataset())
        .join(format!("{table}.jsonl")))
}

/// Refuses a file that resolves (through a symlink) outside `root`.
///
/// Symlinks: a literal input path may pass through symlinks that stay
/// inside the data directory; one leading outside it is refused. Wildcard
/// walks never follow symlinks (they are skipped).
fn inside(root: &Path, file: &Path) -> Result<(), EmuError> {
    let real = fs::canonicalize(file)
        .map_err(|e| EmuError::internal(format!("{}: {e}", file.display())))?;
    let root = fs::canonicalize(root)
        .map_err(|e| EmuError::internal(format!("{}: {e}", root.display())))?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(EmuError::invalid(format!(
            "{} leads outside the emulator's data directory (a symlink?)",
            file.display()
        )))
    }
}

/// Expands input URIs (with wildcards) to existing files, in a stable order.
/// A URI that matches nothing is an error naming it. Every file found is
/// inside `DATA_DIR/gcs`.
pub fn expand_gcs(data_dir: &Path, uris: &[GcsUri]) -> Result<Vec<PathBuf>, EmuError> {
    let gcs_root = data_dir.join("gcs");
    let mut files = Vec::new();
    for uri in uris {
        let p = gcs_path(data_dir, uri)?;
        if !uri.has_wildcard() {
            if !p.is_file() {
                return Err(EmuError::not_found(format!(
                    "input {uri} not found (the emulator looks for {})",
                    p.display()
                )));
            }
            inside(&gcs_root, &p)?;
            files.push(p);
            continue;
        }
        let object = uri.object();
        // Walk only below the literal prefix (checked above: relative, no
        // '..'), never following symlinks.
        let literal_end = object.find(['*', '?', '[']).unwrap_or(object.len());
        let dir_prefix = &object[..object[..literal_end].rfind('/').map_or(0, |i| i + 1)];
        let root = object_path(&gcs_root, uri.bucket(), "");
        let start = object_path(&gcs_root, uri.bucket(), dir_prefix);
        let pattern = Glob::new(object);
        let mut found = Vec::new();
        walk(&start, &mut |path| {
            if let Ok(rel) = path.strip_prefix(&root) {
                let name = rel.to_string_lossy().replace('\\', "/");
                if pattern.matches(&name) {
                    found.push(path.to_path_buf());
                }
            }
        })
        .map_err(|e| EmuError::internal(format!("listing {}: {e}", start.display())))?;
        if found.is_empty() {
            return Err(EmuError::not_found(format!(
                "input {uri} matched no objects (the emulator looks below {})",
                start.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Calls `f` for every regular file below `dir`; symlinks are skipped.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // `file_type` does not follow symlinks: a link is neither.
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), f)?;
        } else if ty.is_file() {
            f(&entry.path());
        }
    }
    Ok(())
}

/// gsutil-style wildcard match of a whole object name (tests compare the
/// automaton against a backtracking matcher through it).
#[cfg(test)]
fn glob_match(pattern: &str, name: &str) -> bool {
    Glob::new(pattern).matches(name)
}

/// One piece of a wildcard pattern.
#[derive(Debug, Clone)]
enum Token {
    Lit(char),
    /// `?`: one character but `/`.
    One,
    /// `[…]`: ranges, negated or not (never `/`).
    Class(Vec<(char, char)>, bool),
    /// `*`: any run without `/`.
    Star,
    /// `**`: any run.
    Stars,
}

/// A compiled wildcard pattern, matched by simulating its automaton: time
/// O(pattern × name), whatever the pattern (no backtracking).
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`; a `[` without a closing `]` is a literal.
    pub fn new(pattern: &str) -> Glob {
        let p: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            match p[i] {
                '*' if p.get(i + 1) == Some(&'*') => {
                    tokens.push(Token::Stars);
                    i += 2;
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '[' => match p
                    .iter()
                    .skip(i + 2)
                    .position(|c| *c == ']')
                    .map(|k| k + i + 2)
                {
                    Some(close) => {
                        let mut class = &p[i + 1..close];
                        let negate = matches!(class.first(), Some('!') | Some('^'));
                        if negate {
                            class = &class[1..];
                        }
                        let mut ranges = Vec::new();
                        let mut k = 0;
                        while k < class.len() {
                            if k + 2 < class.len() && class[k + 1] == '-' {
                                ranges.push((class[k], class[k + 2]));
                                k += 3;
                            } else {
                                ranges.push((class[k], class[k]));
                                k += 1;
                            }
                        }
                        tokens.push(Token::Class(ranges, negate));
                        i = close + 1;
                    }
                    None => {
                        tokens.push(Token::Lit('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Lit(c));
                    i += 1;
                }
            }
        }
        Glob { tokens }
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let n = self.tokens.len();
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        cur[0] = true;
        self.close(&mut cur);
        for c in name.chars() {
            next.iter_mut().for_each(|b| *b = false);
            let mut any = false;
            for (i, on) in cur.iter().enumerate().take(n) {
                if !on {
                    continue;
                }
                let (stay, advance) = match &self.tokens[i] {
                    Token::Lit(l) => (false, *l == c),
                    Token::One => (false, c != '/'),
                    Token::Class(ranges, negate) => {
                        let hit = ranges.iter().any(|(a, b)| *a <= c && c <= *b);
                        (false, hit != *negate && c != '/')
                    }
                    Token::Star => (c != '/', false),
                    Token::Stars => (true, false),
                };
                if stay {
                    next[i] = true;
                    any = true;
                }
                if advance {
                    next[i + 1] = true;
                    any = true;
                }
            }
            if !any {
                return false;
            }
            self.close(&mut next);
            std::mem::swap(&mut cur, &mut next);
        }
        cur[n]
    }

    /// Stars match nothing too: a state before a star also stands after it.
    fn close(&self, states: &mut [bool]) {
        for i in 0..self.tokens.len() {
            if states[i] && matches!(self.tokens[i], Token::Star | Token::Stars) {
                states[i + 1] = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The backtracking matcher this module used to have: the reference
    /// for short inputs.
    fn reference(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => {
                (0..=n.len()).any(|i| reference(&p[2..], &n[i..]))
            }
            Some('*') => {
                for i in 0..=n.len() {
                    if reference(&p[1..], &n[i..]) {
                        return true;
                    }
                    if i < n.len() && n[i] == '/' {
                        return false;
                    }
                }
                false
            }
            Some('?') => !n.is_empty() && n[0] != '/' && reference(&p[1..], &n[1..]),
            Some(&lit) => n.first() == Some(&lit) && reference(&p[1..], &n[1..]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_automaton_agrees_with_backtracking(
            pattern in "[ab/*?]{0,8}",
            name in "[ab/]{0,10}",
        ) {
            let p: Vec<char> = pattern.chars().collect();
            let n: Vec<char> = name.chars().collect();
            prop_assert_eq!(glob_match(&pattern, &name), reference(&p, &n), "{} vs {}", pattern, name);
        }

        /// Whatever object name is accepted maps below DATA_DIR/gcs/BUCKET,
        /// with only plain components.
        #[test]
        fn no_accepted_object_leaves_the_data_dir(object in r"[a./\\%2eEfF:C*\x00\n]{0,12}") {
            let data = Path::new("/data");
            if let Ok(uri) = GcsUri::parse_field(&format!("gs://bkt/{object}"), "uri") {
                if let Ok(p) = gcs_path(data, &uri) {
                    let rel = p.strip_prefix("/data/gcs/bkt").unwrap();
                    prop_assert!(
                        rel.components().all(|c| matches!(c, std::path::Component::Normal(_))),
                        "{:?} -> {:?}", object, p
                    );
                }
            }
        }
    }

    /// The shape that used to spin a worker for good (exponential
    /// backtracking) now answers at once.
    #[test]
    fn pathological_patterns_match_in_linear_time() {
        let pattern = format!("dir/{}Z", "*a".repeat(30));
        let name = format!("dir/{}", "a".repeat(1000));
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(&pattern, &format!("{name}Z")));
        let deep = format!("{}Z", "**a".repeat(30));
        assert!(!glob_match(&deep, &"a/".repeat(500)));
    }

    #[test]
    fn paths_that_would_leave_the_data_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "gs://bkt//**",
            "gs://bkt//etc/passwd",
            "gs://bkt/a/%2e%2e/%2E%2e/x",
            "gs://bkt/a/%2e/x",
            "gs://bkt/C:/Windows/x",
            "gs://bkt/a/c:evil",
            "gs://bkt/a\\..\\..\\x",
            "gs://bkt/a/b%2f..%2fc",
            "gs://bkt/a/b%00c",
        ] {
            let refused = match GcsUri::parse_field(bad, "uri") {
                Err(_) => true,
                Ok(uri) => {
                    gcs_path(dir.path(), &uri).is_err() && expand_gcs(dir.path(), &[uri]).is_err()
                }
            };
            assert!(refused, "{bad}");
        }
        // What stays inside is fine, a trailing '/' included.
        let ok: GcsUri = "gs://bkt/out/".parse().unwrap();
        assert_eq!(
            gcs_path(dir.path(), &ok).unwrap(),
            dir.path().join("gcs/bkt/out")
        );
        let bq = BigQueryUri::parse_field("bq://p.d.t", "uri", true).unwrap();
        assert!(bq_path(dir.path(), &bq, Some("..")).is_err());
        assert!(bq_path(dir.path(), &bq, Some("a/b")).is_err());
        assert!(bq_path(dir.path(), &bq, None)
            .unwrap()
            .starts_with(dir.path()));
    }

    /// Symlinks: a literal input through a link leading outside the data
    /// dir is refused; wildcard walks skip links.
    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_data_dir_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.jsonl"), "{}\n").unwrap();
        let b = dir.path().join("gcs/bkt");
        fs::create_dir_all(&b).unwrap();
        fs::write(b.join("ok.jsonl"), "{}\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.jsonl"), b.join("link.jsonl"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), b.join("linkdir")).unwrap();
        let literal: GcsUri = "gs://bkt/link.jsonl".parse().unwrap();
        let err = expand_gcs(dir.path(), &[literal]).unwrap_err();
        assert!(err.message.contains("outside"), "{err}");
        let through: GcsUri = "gs://bkt/linkdir/secret.jsonl".parse().unwrap();
        assert!(expand_gcs(dir.path(), &[through]).is_err());
        let all: GcsUri = "gs://bkt/**".parse().unwrap();
        let files = expand_gcs(dir.path(), &[all]).unwrap();
        assert_eq!(files, vec![b.join("ok.jsonl")]);
    }

    #[test]
    fn wildcards_follow_gsutil() {
        assert!(glob_match("in/*.jsonl", "in/a.jsonl"));
        assert!(!glob_match("in/*.jsonl", "in/sub/a.jsonl"));
        assert!(glob_match("in/**.jsonl", "in/sub/a.jsonl"));
        assert!(glob_match("in/part-?.jsonl", "in/part-1.jsonl"));
        assert!(glob_match("in/part-[0-3].jsonl", "in/part-2.jsonl"));
        assert!(!glob_match("in/part-[!0-3].jsonl", "in/part-2.jsonl"));
        assert!(!glob_match("in/*.jsonl", "in/a.json"));
    }

    #[test]
    fn expansion_finds_files_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("gcs/bkt/in");
        fs::create_dir_all(b.join("sub")).unwrap();
        for f in ["a.jsonl", "b.jsonl", "sub/c.jsonl", "x.txt"] {
            fs::write(b.join(f), "").unwrap();
        }
        let uri: GcsUri = "gs://bkt/in/*.jsonl".parse().unwrap();
        let files = expand_gcs(dir.path(), &[uri]).unwrap();
        assert_eq!(files.len(), 2);
        let deep: GcsUri = "gs://bkt/in/**.jsonl".parse().unwrap();
        assert_eq!(expand_gcs(dir.path(), &[deep]).unwrap().len(), 3);
        let missing: GcsUri = "gs://bkt/none.jsonl".parse().unwrap();
        let err = expand_gcs(dir.path(), &[missing]).unwrap_err();
        assert!(err.message.contains("gs://bkt/none.jsonl"), "{err}");
    }
}
