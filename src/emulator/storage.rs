//! How the emulator maps cloud storage onto its data directory:
//!
//! * `gs://BUCKET/OBJECT` is the file `DATA_DIR/gcs/BUCKET/OBJECT`;
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

use crate::uri::{BigQueryUri, GcsUri};

/// The file behind a Cloud Storage object (or prefix).
pub fn gcs_path(data_dir: &Path, uri: &GcsUri) -> PathBuf {
    let mut p = data_dir.join("gcs").join(uri.bucket());
    for seg in uri.object().split('/').filter(|s| !s.is_empty()) {
        p.push(seg);
    }
    p
}

/// The file behind a BigQuery table; `table` overrides the URI's table.
pub fn bq_path(data_dir: &Path, uri: &BigQueryUri, table: Option<&str>) -> PathBuf {
    let table = table.or(uri.table()).unwrap_or("table");
    data_dir
        .join("bigquery")
        .join(uri.project())
        .join(uri.dataset())
        .join(format!("{table}.jsonl"))
}

/// Expands input URIs (with wildcards) to existing files, in a stable order.
/// A URI that matches nothing is an error naming it.
pub fn expand_gcs(data_dir: &Path, uris: &[GcsUri]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for uri in uris {
        if !uri.has_wildcard() {
            let p = gcs_path(data_dir, uri);
            if !p.is_file() {
                return Err(format!(
                    "input {uri} not found (the emulator looks for {})",
                    p.display()
                ));
            }
            files.push(p);
            continue;
        }
        let object = uri.object();
        // Walk only below the literal prefix.
        let literal_end = object.find(['*', '?', '[']).unwrap_or(object.len());
        let dir_prefix = &object[..object[..literal_end].rfind('/').map_or(0, |i| i + 1)];
        let root = data_dir.join("gcs").join(uri.bucket());
        let start = root.join(dir_prefix);
        let mut found = Vec::new();
        walk(&start, &mut |path| {
            if let Ok(rel) = path.strip_prefix(&root) {
                let name = rel.to_string_lossy().replace('\\', "/");
                if glob_match(object, &name) {
                    found.push(path.to_path_buf());
                }
            }
        })
        .map_err(|e| format!("listing {}: {e}", start.display()))?;
        if found.is_empty() {
            return Err(format!(
                "input {uri} matched no objects (the emulator looks below {})",
                start.display()
            ));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), f)?;
        } else if ty.is_file() {
            f(&entry.path());
        }
    }
    Ok(())
}

/// gsutil-style wildcard match of a whole object name.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n)
}

fn matches(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            (0..=n.len()).any(|i| matches(rest, &n[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=n.len() {
                if matches(rest, &n[i..]) {
                    return true;
                }
                if i < n.len() && n[i] == '/' {
                    return false;
                }
            }
            false
        }
        Some('?') => !n.is_empty() && n[0] != '/' && matches(&p[1..], &n[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                return n.first() == Some(&'[') && matches(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else { return false };
            let mut class = &p[1..close];
            let negate = matches!(class.first(), Some('!') | Some('^'));
            if negate {
                class = &class[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && c != '/' && matches(&p[close + 1..], &n[1..])
        }
        Some(&lit) => n.first() == Some(&lit) && matches(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err.contains("gs://bkt/none.jsonl"), "{err}");
    }
}
