//! The `filter` of ListBatchPredictionJobs, as the emulator understands it:
//! terms joined by `AND`, each one of
//!
//! * `state=JOB_STATE_SUCCEEDED` (or `!=`),
//! * `display_name="my job"` (or `!=`; quotes optional without spaces;
//!   `\"` and `\\` inside quotes stand for `"` and `\`),
//! * `labels.KEY=VALUE` (or `!=`), `labels.KEY:*` (has the label),
//! * `create_time>"2024-01-01T00:00:00Z"` (and `>=`, `<`, `<=`, `=`),
//! * `model="publishers/google/models/…"`.

use std::time::SystemTime;

use super::error::EmuError;
use crate::{proto::aiplatform as pb, time};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Has,
}

#[derive(Debug, Clone)]
enum Term {
    State(Op, i32),
    DisplayName(Op, String),
    Model(Op, String),
    Label(Op, String, String),
    CreateTime(Op, SystemTime),
}

/// A parsed filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    terms: Vec<Term>,
}

impl Filter {
    /// Parses `s`; the error says which term is wrong.
    pub fn parse(s: &str) -> Result<Filter, EmuError> {
        let mut terms = Vec::new();
        for raw in split_and(s) {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            terms.push(parse_term(raw)?);
        }
        Ok(Filter { terms })
    }

    /// Whether `job` passes every term.
    pub fn matches(&self, job: &pb::BatchPredictionJob) -> bool {
        self.terms.iter().all(|t| match t {
            Term::State(op, v) => eq_op(*op, job.state == *v),
            Term::DisplayName(op, v) => eq_op(*op, job.display_name == *v),
            Term::Model(op, v) => eq_op(*op, job.model == *v),
            Term::Label(Op::Has, k, _) => job.labels.contains_key(k),
            Term::Label(op, k, v) => eq_op(*op, job.labels.get(k) == Some(v)),
            Term::CreateTime(op, t) => {
                let Some(ct) = job.create_time.as_ref().and_then(time::to_system_time) else {
                    return false;
                };
                match op {
                    Op::Eq => ct == *t,
                    Op::Ne => ct != *t,
                    Op::Lt => ct < *t,
                    Op::Le => ct <= *t,
                    Op::Gt => ct > *t,
                    Op::Ge => ct >= *t,
                    Op::Has => true,
                }
            }
        })
    }
}

fn eq_op(op: Op, equal: bool) -> bool {
    if op == Op::Ne {
        !equal
    } else {
        equal
    }
}

/// Splits on ` AND ` outside double-quoted strings (in which `\"` and
/// `\\` are escapes).
fn split_and(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_quotes, mut escaped) = (false, false);
    for c in s.chars() {
        cur.push(c);
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if !in_quotes && cur.ends_with(" AND ") {
            cur.truncate(cur.len() - " AND ".len());
            out.push(std::mem::take(&mut cur));
        }
    }
    out.push(cur);
    out
}

fn parse_term(raw: &str) -> Result<Term, EmuError> {
    let ops = [
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        (":", Op::Has),
    ];
    let (pos, sym, op) = ops
        .iter()
        .filter_map(|(sym, op)| raw.find(sym).map(|p| (p, *sym, *op)))
        .min_by_key(|(p, sym, _)| (*p, std::cmp::Reverse(sym.len())))
        .ok_or_else(|| EmuError::invalid(format!("filter term {raw:?} has no operator")))?;
    let field = raw[..pos].trim();
    let value = unquote(raw[pos + sym.len()..].trim())
        .map_err(|why| EmuError::invalid(format!("filter term {raw:?}: {why}")))?;
    let bad_op = || {
        EmuError::invalid(format!(
            "filter term {raw:?}: operator {sym} is not supported for {field}"
        ))
    };
    match field {
        "state" => {
            if !matches!(op, Op::Eq | Op::Ne) {
                return Err(bad_op());
            }
            let v = pb::JobState::from_str_name(&value).ok_or_else(|| {
                EmuError::invalid(format!("filter term {raw:?}: unknown state {value:?}"))
            })?;
            Ok(Term::State(op, v as i32))
        }
        "display_name" | "displayName" if matches!(op, Op::Eq | Op::Ne) => {
            Ok(Term::DisplayName(op, value))
        }
        "model" if matches!(op, Op::Eq | Op::Ne) => Ok(Term::Model(op, value)),
        "create_time" | "createTime" if op != Op::Has => {
            let t = time::parse(&value).ok_or_else(|| {
                EmuError::invalid(format!(
                    "filter term {raw:?}: {value:?} is not an RFC 3339 time"
                ))
            })?;
            Ok(Term::CreateTime(op, t))
        }
        f if f.starts_with("labels.") => {
            let key = f["labels.".len()..].to_owned();
            match op {
                Op::Has if value == "*" => Ok(Term::Label(Op::Has, key, String::new())),
                Op::Eq | Op::Ne => Ok(Term::Label(op, key, value)),
                _ => Err(bad_op()),
            }
        }
        "display_name" | "displayName" | "model" | "create_time" | "createTime" => Err(bad_op()),
        other => Err(EmuError::invalid(format!(
            "filter term {raw:?}: unknown field {other:?}"
        ))),
    }
}

/// A value without its quotes, escapes resolved (AIP-160: `\"` is a quote,
/// `\\` a backslash). An unclosed string or a stray quote is an error.
fn unquote(s: &str) -> Result<String, EmuError> {
    let Some(quoted) = s.strip_prefix('"') else {
        if s.contains('"') {
            return Err(EmuError::invalid(format!("{s:?} has a stray quote")));
        }
        return Ok(s.to_owned());
    };
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => break,
            },
            '"' if chars.as_str().is_empty() => return Ok(out),
            '"' => {
                return Err(EmuError::invalid(format!(
                    "{s:?} has text after its closing quote"
                )))
            }
            c => out.push(c),
        }
    }
    Err(EmuError::invalid(format!("{s:?} is not a closed string")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::to_timestamp;

    fn job(
        state: pb::JobState,
        name: &str,
        label: (&str, &str),
        created_secs: u64,
    ) -> pb::BatchPredictionJob {
        pb::BatchPredictionJob {
            state: state as i32,
            display_name: name.into(),
            labels: [(label.0.to_owned(), label.1.to_owned())].into(),
            create_time: Some(to_timestamp(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(created_secs),
            )),
            ..Default::default()
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any filter text: an error or a filter, never a panic.
        #[test]
        fn any_filter_text_never_panics(s in r#"((labels\.[a-z_]{1,8}|state|display_name|create_time)(=|!=|:|<|>)"?[a-zA-Z0-9 _\\"*:.-]{0,12}"?( AND )?){0,3}|.{0,80}"#) {
            let _ = Filter::parse(&s);
        }

        /// What the client sends, the emulator reads as meant: the job
        /// carrying the label and display name matches, another does not.
        #[test]
        fn client_filters_mean_the_same_here(
            key in "[a-z][a-z0-9_-]{0,20}",
            value in "[a-z0-9_-]{0,20}",
            name in r#"[a-zA-Z0-9 "\\_-]{0,30}"#,
            state in 1i32..12,
        ) {
            let st = crate::job::JobState::from_proto(state);
            let opts = crate::client::ListOptions::new().label(&key, &value).display_name(&name).state(st);
            let f = Filter::parse(&opts.filter()).unwrap();
            let mut j = pb::BatchPredictionJob {
                state,
                display_name: name.clone(),
                labels: [(key.clone(), value.clone())].into(),
                ..Default::default()
            };
            proptest::prop_assert!(f.matches(&j), "{}", opts.filter());
            j.labels.insert(key.clone(), format!("{value}x"));
            proptest::prop_assert!(!f.matches(&j));
        }
    }

    #[test]
    fn terms_combine_with_and() {
        let j = job(
            pb::JobState::Succeeded,
            "my job",
            ("team", "ml"),
            1_700_000_000,
        );
        let yes = [
            "state=JOB_STATE_SUCCEEDED",
            "display_name=\"my job\"",
            "labels.team=ml AND state!=JOB_STATE_FAILED",
            "labels.team:*",
            "create_time>\"2023-01-01T00:00:00Z\" AND create_time<=\"2023-11-14T22:13:20Z\"",
        ];
        for f in yes {
            assert!(Filter::parse(f).unwrap().matches(&j), "{f}");
        }
        let no = [
            "state=JOB_STATE_RUNNING",
            "display_name=\"other\"",
            "labels.team=ops",
            "labels.owner:*",
            "create_time>\"2024-01-01T00:00:00Z\"",
        ];
        for f in no {
            assert!(!Filter::parse(f).unwrap().matches(&j), "{f}");
        }
        let quoted = job(pb::JobState::Failed, r#"a "b" AND c\d"#, ("t", "x"), 0);
        let f = r#"display_name="a \"b\" AND c\\d" AND state=JOB_STATE_FAILED"#;
        assert!(Filter::parse(f).unwrap().matches(&quoted), "{f}");
        let f = r#"display_name="a \"b\" AND c\\d" AND state=JOB_STATE_RUNNING"#;
        assert!(!Filter::parse(f).unwrap().matches(&quoted), "{f}");
        for bad in [
            r#"display_name="abc\""#,
            r#"display_name="a"b""#,
            r#"display_name=""#,
            r#"display_name=a"b"#,
            "state=NOPE",
            "color=red",
            "create_time>yesterday",
            "state>JOB_STATE_FAILED",
            "justtext",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
