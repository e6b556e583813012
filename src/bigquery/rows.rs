//! Reading BigQuery's table rows: a table's schema, and its rows as
//! `tabledata.list` sends them (`{"f": [{"v": …}, …]}`, every scalar a
//! string, in schema order) turned into one JSON object per row — the
//! shape of a Cloud Storage batch output line, so one reader classifies
//! both.
//!
//! Cells are read leniently, as the service and emulators send them: a
//! `JSON` column as a string holding JSON (or as JSON itself), `INT64` and
//! `FLOAT64` as strings or numbers, a `TIMESTAMP` as float seconds
//! (`"1.730484796826E9"`) or int64 microseconds (`"1730484796826000"`),
//! always written out as RFC 3339 (`2024-11-01T18:13:16.826Z`). A cell that
//! does not read as its type is kept as it came, never dropped.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A column of a table's schema.
///
/// ```
/// use vertex_batch::bigquery::Field;
///
/// let f: Field = serde_json::from_str(r#"{"name": "request", "type": "JSON"}"#).unwrap();
/// assert_eq!((f.name.as_str(), f.kind.as_str(), f.is_repeated()), ("request", "JSON", false));
/// assert_eq!(Field::new("key", "STRING").name, "key");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// The column's name.
    pub name: String,
    /// Its type (`STRING`, `JSON`, `INT64`, `TIMESTAMP`, `RECORD`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// `NULLABLE` (the default), `REQUIRED` or `REPEATED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A `RECORD` column's own columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

impl Field {
    /// A nullable column.
    ///
    /// ```
    /// use vertex_batch::bigquery::Field;
    /// let f = Field::new("request", "JSON");
    /// assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"name":"request","type":"JSON"}"#);
    /// ```
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Field {
            name: name.into(),
            kind: kind.into(),
            mode: None,
            fields: Vec::new(),
        }
    }

    /// Whether the column holds a list of values.
    ///
    /// ```
    /// use vertex_batch::bigquery::Field;
    /// let mut f = Field::new("tags", "STRING");
    /// assert!(!f.is_repeated());
    /// f.mode = Some("REPEATED".into());
    /// assert!(f.is_repeated());
    /// ```
    pub fn is_repeated(&self) -> bool {
        self.mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("REPEATED"))
    }
}

/// One row of `tabledata.list` as a JSON object, column name to value.
///
/// ```
/// use serde_json::json;
/// use vertex_batch::bigquery::{decode_row, Field};
///
/// let schema = [Field::new("key", "STRING"), Field::new("request", "JSON"), Field::new("processed_time", "TIMESTAMP")];
/// let row = json!({"f": [{"v": "k1"}, {"v": "{\"contents\":[]}"}, {"v": "1730484796826000"}]});
/// let obj = decode_row(&schema, &row)?;
/// assert_eq!(obj["key"], "k1");
/// assert_eq!(obj["request"], json!({"contents": []}));
/// assert_eq!(obj["processed_time"], "2024-11-01T18:13:16.826Z");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub fn decode_row(schema: &[Field], row: &Value) -> Result<Map<String, Value>> {
    let cells = cells_of(
        schema,
        row.get("f").and_then(Value::as_array).map(Vec::as_slice),
    )?;
    let mut out = Map::with_capacity(schema.len());
    for (field, cell) in schema.iter().zip(cells) {
        let v = cell.get("v").unwrap_or(&Value::Null);
        out.insert(field.name.clone(), decode_cell(field, v)?);
    }
    Ok(out)
}

/// One row of a `tabledata.list` page, its cells left as the page's text.
#[derive(serde::Deserialize)]
pub(crate) struct RawRow<'a> {
    #[serde(borrow, default)]
    f: Option<Vec<RawCell<'a>>>,
}

#[derive(serde::Deserialize)]
struct RawCell<'a> {
    #[serde(borrow, default)]
    v: Option<&'a serde_json::value::RawValue>,
}

/// Writes `row` as one JSON line (the object [`decode_row`] makes, the
/// same values), straight from the page's text: string, `JSON`, number,
/// boolean and `TIMESTAMP` cells are written without building a tree
/// (`RECORD` and `REPEATED` cells go through [`decode_row`]'s reading).
pub(crate) fn write_row_line(schema: &[Field], row: &RawRow<'_>, out: &mut Vec<u8>) -> Result<()> {
    let cells = cells_of(schema, row.f.as_deref())?;
    out.push(b'{');
    for (i, (field, cell)) in schema.iter().zip(cells).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(out, &field.name)?;
        out.push(b':');
        write_cell(field, cell.v, out)?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<()> {
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| Error::config(format!("writing a row as JSON: {e}")))
}

/// JSON text on one line: raw line breaks can only be whitespace between
/// tokens (a JSON string holds none), so they become spaces.
fn one_line(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().map(|b| match b {
        b'\n' | b'\r' => b' ',
        b => b,
    }));
}

fn write_cell(
    field: &Field,
    raw: Option<&serde_json::value::RawValue>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    let kind = field.kind.to_ascii_uppercase();
    let text = raw.get();
    let quoted = text.starts_with('"');
    if field.is_repeated()
        || matches!(kind.as_str(), "RECORD" | "STRUCT")
        || (!quoted && kind == "TIMESTAMP")
    {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| bad_row(&format!("a cell that is no JSON: {e}")))?;
        return write_json(out, &decode_cell(field, &v)?);
    }
    if !quoted {
        // Already JSON itself (a JSON cell as an object, a number).
        one_line(out, text);
        return Ok(());
    }
    let unquoted = || {
        serde_json::from_str::<String>(text)
            .map_err(|e| bad_row(&format!("a cell that is no string: {e}")))
    };
    match kind.as_str() {
        "JSON" => {
            let s = unquoted()?;
            if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_ok() {
                one_line(out, &s);
            } else {
                one_line(out, text);
            }
        }
        "INTEGER" | "INT64" | "FLOAT" | "FLOAT64" | "BOOLEAN" | "BOOL" | "TIMESTAMP" => {
            let v = decode_scalar(field, &Value::String(unquoted()?))?;
            write_json(out, &v)?;
        }
        _ => one_line(out, text),
    }
    Ok(())
}

/// A row's cells, one per column of `schema`.
fn cells_of<'c, T>(schema: &[Field], cells: Option<&'c [T]>) -> Result<&'c [T]> {
    let cells = cells.ok_or_else(|| bad_row("a row without its \"f\" cells"))?;
    if cells.len() != schema.len() {
        return Err(bad_row(&format!(
            "a row of {} cells for a schema of {} columns",
            cells.len(),
            schema.len()
        )));
    }
    Ok(cells)
}

fn bad_row(what: &str) -> Error {
    Error::BigQuery {
        message: format!("tabledata.list answered {what}"),
        http_status: None,
        source: None,
    }
}

fn decode_cell(field: &Field, v: &Value) -> Result<Value> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    if field.is_repeated() {
        return match v {
            Value::Array(items) => items
                .iter()
                .map(|item| decode_scalar(field, item.get("v").unwrap_or(item)))
                .collect::<Result<Vec<_>>>()
                .map(Value::Array),
            other => decode_scalar(field, other),
        };
    }
    decode_scalar(field, v)
}

fn decode_scalar(field: &Field, v: &Value) -> Result<Value> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let kind = field.kind.to_ascii_uppercase();
    Ok(match (kind.as_str(), v) {
        ("RECORD" | "STRUCT", Value::Object(_)) => Value::Object(decode_row(&field.fields, v)?),
        ("JSON", Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        ("INTEGER" | "INT64", Value::String(s)) => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| v.clone()),
        ("FLOAT" | "FLOAT64", Value::String(s)) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| v.clone()),
        ("BOOLEAN" | "BOOL", Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => v.clone(),
        },
        ("TIMESTAMP", Value::String(s)) => timestamp(s)
            .map(|t| Value::String(crate::time::format_millis(t)))
            .unwrap_or_else(|| v.clone()),
        ("TIMESTAMP", Value::Number(n)) => timestamp(&n.to_string())
            .map(|t| Value::String(crate::time::format_millis(t)))
            .unwrap_or_else(|| v.clone()),
        _ => v.clone(),
    })
}

/// A TIMESTAMP cell: float seconds (`1.730484796826E9`, `1730484796.826`)
/// or int64 microseconds (`1730484796826000`). `None` when it is neither,
/// or out of range.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use vertex_batch::bigquery::timestamp;
///
/// let t = UNIX_EPOCH + Duration::from_millis(1_730_484_796_826);
/// assert_eq!(timestamp("1730484796826000"), Some(t));
/// assert_eq!(timestamp("1.730484796826E9"), Some(t));
/// assert_eq!(timestamp("soon"), None);
/// ```
pub fn timestamp(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return offset(s.parse().ok()?);
    }
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() || secs.abs() > 1e13 {
        return None;
    }
    // Rounded to the microsecond: float seconds carry no more.
    offset((secs * 1e6).round() as i64)
}

/// The time `micros` microseconds from the Unix epoch.
fn offset(micros: i64) -> Option<SystemTime> {
    let d = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn schema() -> Vec<Field> {
        let mut usage = Field::new("usage", "RECORD");
        usage.fields = vec![Field::new("tokens", "INT64"), Field::new("ok", "BOOL")];
        let mut tags = Field::new("tags", "STRING");
        tags.mode = Some("REPEATED".into());
        vec![
            Field::new("key", "STRING"),
            Field::new("request", "JSON"),
            Field::new("response", "JSON"),
            Field::new("status", "STRING"),
            Field::new("processed_time", "TIMESTAMP"),
            Field::new("score", "FLOAT64"),
            usage,
            tags,
        ]
    }

    #[test]
    fn every_kind_of_cell_reads_as_its_type() {
        let row = json!({"f": [
            {"v": "k1"},
            {"v": "{\"contents\":[{\"role\":\"user\"}]}"},
            {"v": {"candidates": []}},
            {"v": ""},
            {"v": "1.730484796826E9"},
            {"v": "0.5"},
            {"v": {"f": [{"v": "12"}, {"v": "true"}]}},
            {"v": [{"v": "a"}, {"v": "b"}]},
        ]});
        let obj = decode_row(&schema(), &row).unwrap();
        assert_eq!(obj["key"], "k1");
        assert_eq!(obj["request"], json!({"contents": [{"role": "user"}]}));
        assert_eq!(
            obj["response"],
            json!({"candidates": []}),
            "JSON as JSON too"
        );
        assert_eq!(obj["status"], "");
        assert_eq!(obj["processed_time"], "2024-11-01T18:13:16.826Z");
        assert_eq!(obj["score"], 0.5);
        assert_eq!(obj["usage"], json!({"tokens": 12, "ok": true}));
        assert_eq!(obj["tags"], json!(["a", "b"]));
    }

    #[test]
    fn cells_that_do_not_read_as_their_type_are_kept_as_they_came() {
        let row = json!({"f": [
            {"v": "k1"}, {"v": "not json"}, {"v": null}, {"v": null},
            {"v": "yesterday"}, {"v": "NaN-ish"}, {"v": null}, {"v": null},
        ]});
        let obj = decode_row(&schema(), &row).unwrap();
        assert_eq!(obj["request"], "not json");
        assert_eq!(obj["processed_time"], "yesterday");
        assert_eq!(obj["score"], "NaN-ish");
        assert!(obj["response"].is_null());
    }

    #[test]
    fn a_row_that_does_not_match_its_schema_is_an_error() {
        for row in [json!({}), json!({"f": "x"}), json!({"f": [{"v": "k"}]})] {
            let err = decode_row(&schema(), &row).unwrap_err();
            assert!(matches!(err, Error::BigQuery { .. }), "{err}");
        }
    }

    fn cell() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Few digits: serde_json reads long floats back a unit off.
            (-1e6..1e6f64).prop_map(
                |f| serde_json::Number::from_f64((f * 100.0).round() / 100.0)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            ),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,3}", inner), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a server sends as a row, reading it never panics.
        #[test]
        fn any_row_reads_or_fails_cleanly(cells in prop::collection::vec(cell(), 0..10), wrap in any::<bool>()) {
            let row = if wrap {
                json!({"f": cells.into_iter().map(|v| json!({"v": v})).collect::<Vec<_>>()})
            } else {
                Value::Array(cells)
            };
            let _ = decode_row(&schema(), &row);
        }

        /// Every TIMESTAMP in range reads back in both forms (to the
        /// microsecond, as far as float seconds carry it).
        #[test]
        fn timestamps_read_in_both_forms(micros in 0i64..253_402_300_799_000_000) {
            let t = SystemTime::UNIX_EPOCH + Duration::from_micros(micros as u64);
            prop_assert_eq!(timestamp(&micros.to_string()), Some(t));
            let secs = format!("{:.6}", micros as f64 / 1e6);
            let read = timestamp(&secs).unwrap();
            let diff = read.duration_since(t).unwrap_or_else(|e| e.duration());
            // Float seconds hold about 16 digits: far-off times lose microseconds.
            let slack = Duration::from_micros(2 + (micros as u64 >> 50));
            prop_assert!(diff <= slack, "{:?}", diff);
        }

        /// The line written straight from a page's text holds what
        /// decode_row reads from the same row.
        #[test]
        fn a_row_line_holds_what_decode_row_reads(cells in prop::collection::vec(cell(), 8..=8)) {
            let row = json!({"f": cells.into_iter().map(|v| json!({"v": v})).collect::<Vec<_>>()});
            let text = serde_json::to_string(&row).unwrap();
            let raw: RawRow<'_> = serde_json::from_str(&text).unwrap();
            let mut line = Vec::new();
            let fast = write_row_line(&schema(), &raw, &mut line);
            match decode_row(&schema(), &row) {
                Ok(slow) => {
                    prop_assert!(fast.is_ok(), "{:?}", fast);
                    prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
                    let read: Value = serde_json::from_slice(&line).unwrap();
                    prop_assert_eq!(read, Value::Object(slow));
                }
                Err(_) => prop_assert!(fast.is_err()),
            }
        }

        #[test]
        fn any_timestamp_text_reads_or_is_none(s in ".{0,30}") {
            let _ = timestamp(&s);
        }
    }
}
