//! The Avro rows of the BigQuery Storage Read API, written as the JSON
//! lines `tabledata.list` reading makes.
//!
//! A read session sends its writer schema once (Avro's JSON schema
//! language) and then blocks of rows in Avro's binary encoding, back to
//! back, with no container framing. [`RowSchema::parse`] compiles the
//! schema once; [`RowSchema::write_rows`] turns a block into JSON lines
//! without building a tree of values. Every cell is written as
//! [`decode_row`](super::decode_row) writes the same cell of a
//! `tabledata.list` page, so the two ways of reading a table give the same
//! values (as JSON; nested records' key order and escapes may differ):
//! `JSON` columns as their JSON (the string itself when it is no JSON),
//! `TIMESTAMP` as `2024-11-13T14:04:28.376Z`, `INT64` and `FLOAT64`
//! as numbers (`NaN` and infinities as the strings BigQuery uses), `BOOL`
//! as a boolean, `BYTES` as base64, `NUMERIC`/`BIGNUMERIC` as decimal
//! text, `DATE` as `2024-11-13`, `TIME` as `14:04:28.376000` (`14:04:28`
//! on the second).
//!
//! The bytes come from the network: every length is checked against what
//! is left, an array's count against the bytes left, a union branch
//! against the union, a varint against 10 bytes, a decimal against
//! BIGNUMERIC's width, and the schema's nesting (named types included)
//! against a depth and size limit; bad input is an error, never a panic.

use std::collections::HashMap;

use serde_json::Value;

use super::rows::Field;
use crate::error::{Error, Result};

/// How deep a schema may nest records, arrays, maps and unions.
const MAX_DEPTH: usize = 32;

/// A compiled row schema: the top-level record of a read session.
#[derive(Debug, Clone)]
pub(crate) struct RowSchema {
    columns: Vec<Column>,
}

#[derive(Debug, Clone)]
struct Column {
    /// The name as a JSON string, quotes included.
    quoted: String,
    node: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    /// A null where a `REPEATED` column stands: BigQuery has no NULL
    /// arrays, `tabledata.list` gives `[]`.
    EmptyArray,
    Boolean,
    Int {
        date: bool,
    },
    Long(LongKind),
    Float,
    Double,
    Bytes(Option<u32>),
    Fixed(usize, Option<u32>),
    String {
        json: bool,
    },
    Record(Vec<Column>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Enum(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
enum LongKind {
    Plain,
    TimestampMicros,
    TimestampMillis,
    TimeMicros,
}

fn bad_schema(what: &str) -> Error {
    Error::BigQuery {
        message: format!("the Storage Read API sent an Avro schema {what}"),
        http_status: None,
        source: None,
    }
}

fn bad_rows(what: &str) -> Error {
    Error::BigQuery {
        message: format!("the Storage Read API sent Avro rows {what}"),
        http_status: None,
        source: None,
    }
}

impl RowSchema {
    /// Compiles the session's Avro schema (JSON text). `columns` is the
    /// table's schema: its `JSON` columns (which Avro carries as strings)
    /// are written as JSON.
    pub(crate) fn parse(text: &str, columns: &[Field]) -> Result<RowSchema> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad_schema(&format!("that is no JSON: {e}")))?;
        let mut names = Names::default();
        match compile(&v, Some(columns), &mut names, 0)? {
            Node::Record(columns) => Ok(RowSchema { columns }),
            _ => Err(bad_schema("that is no record")),
        }
    }

    /// Writes the `rows` rows of `block` as JSON lines to `out`; fails
    /// when the block holds fewer or more.
    #[cfg(test)]
    pub(crate) fn write_rows(&self, block: &[u8], rows: u64, out: &mut Vec<u8>) -> Result<()> {
        let mut cursor = Block::new(rows);
        self.write_some(block, &mut cursor, out, usize::MAX)
    }

    /// Writes rows of `block` from where `cursor` stands as JSON lines to
    /// `out`, until `out` holds `limit` bytes or the block's rows are all
    /// written; then checks the block holds no more.
    pub(crate) fn write_some(
        &self,
        block: &[u8],
        cursor: &mut Block,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<()> {
        let mut r = Reader {
            buf: block,
            pos: cursor.pos,
        };
        while cursor.rows_left > 0 && out.len() < limit {
            write_record(&self.columns, &mut r, out)?;
            out.push(b'\n');
            cursor.rows_left -= 1;
        }
        cursor.pos = r.pos;
        if cursor.rows_left == 0 && r.pos != block.len() {
            return Err(bad_rows(&format!(
                "with {} bytes after the rows they announced",
                block.len() - r.pos
            )));
        }
        Ok(())
    }
}

/// Where the writing of a block stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pos: usize,
    rows_left: u64,
}

impl Block {
    /// The start of a block of `rows` rows.
    pub(crate) fn new(rows: u64) -> Block {
        Block {
            pos: 0,
            rows_left: rows,
        }
    }

    /// Whether every row is written.
    pub(crate) fn done(&self) -> bool {
        self.rows_left == 0
    }
}

/// The table column of the Avro field `name`, when known.
fn column<'a>(fields: Option<&'a [Field]>, name: &str) -> Option<&'a Field> {
    fields?.iter().find(|f| f.name == name)
}

fn compile(v: &Value, field: Option<&[Field]>, names: &mut Names, depth: usize) -> Result<Node> {
    compile_typed(v, field, None, names, depth)
}

/// Compiles the Avro type `v`; `fields` are the table's columns of the
/// record `v` may be, `column` the table column `v` is the type of.
fn compile_typed(
    v: &Value,
    fields: Option<&[Field]>,
    column_kind: Option<&Field>,
    names: &mut Names,
    depth: usize,
) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(bad_schema(&format!("nested deeper than {MAX_DEPTH}")));
    }
    let is_json = |obj: Option<&serde_json::Map<String, Value>>| {
        obj.and_then(|o| o.get("sqlType"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("JSON"))
            || column_kind.is_some_and(|c| c.kind.eq_ignore_ascii_case("JSON"))
    };
    match v {
        Value::String(name) => primitive(name, None, is_json(None), names, depth),
        Value::Array(branches) => branches
            .iter()
            .map(|b| {
                compile_typed(b, fields, column_kind, names, depth + 1).map(|n| match n {
                    Node::Null if column_kind.is_some_and(Field::is_repeated) => Node::EmptyArray,
                    n => n,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Node::Union),
        Value::Object(obj) => {
            let Some(ty) = obj.get("type") else {
                return Err(bad_schema("with a type without \"type\""));
            };
            let logical = obj.get("logicalType").and_then(Value::as_str);
            let scale = match obj.get("scale").and_then(Value::as_u64) {
                Some(s) if s > u64::from(MAX_SCALE) => {
                    return Err(bad_schema(&format!("with a decimal scale of {s}")))
                }
                s => s.map(|s| s as u32),
            };
            match ty.as_str() {
                Some("record") => {
                    let empty = Vec::new();
                    let members = obj
                        .get("fields")
                        .and_then(Value::as_array)
                        .unwrap_or(&empty);
                    let mut columns = Vec::with_capacity(members.len());
                    for m in members {
                        let name = m
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad_schema("with a field without a name"))?;
                        let ty = m
                            .get("type")
                            .ok_or_else(|| bad_schema(&format!("with field {name:?} untyped")))?;
                        let col = column(fields, name);
                        let sub = col.map(|c| c.fields.as_slice());
                        let node = compile_typed(ty, sub, col, names, depth + 1)?;
                        columns.push(Column {
                            quoted: serde_json::to_string(name)
                                .map_err(|e| bad_schema(&e.to_string()))?,
                            node,
                        });
                    }
                    let node = Node::Record(columns);
                    if let Some(n) = obj.get("name").and_then(Value::as_str) {
                        names.map.insert(n.to_owned(), node.clone());
                    }
                    Ok(node)
                }
                Some("array") => {
                    let items = obj
                        .get("items")
                        .ok_or_else(|| bad_schema("with an array without items"))?;
                    // An item is one value of the column, not a list.
                    let item_kind = column_kind.map(|c| Field {
                        mode: None,
                        ..c.clone()
                    });
                    Ok(Node::Array(Box::new(compile_typed(
                        items,
                        fields,
                        item_kind.as_ref(),
                        names,
                        depth + 1,
                    )?)))
                }
                Some("map") => {
                    let values = obj
                        .get("values")
                        .ok_or_else(|| bad_schema("with a map without values"))?;
                    Ok(Node::Map(Box::new(compile_typed(
                        values,
                        fields,
                        column_kind,
                        names,
                        depth + 1,
                    )?)))
                }
                Some("enum") => {
                    let symbols = obj
                        .get("symbols")
                        .and_then(Value::as_array)
                        .ok_or_else(|| bad_schema("with an enum without symbols"))?
                        .iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad_schema("with an enum symbol that is no string"))?;
                    let node = Node::Enum(symbols);
                    if let Some(n) = obj.get("name").and_then(Value::as_str) {
                        names.map.insert(n.to_owned(), node.clone());
                    }
                    Ok(node)
                }
                Some("fixed") => {
                    let size = obj
                        .get("size")
                        .and_then(Value::as_u64)
                        .and_then(|s| usize::try_from(s).ok())
                        .ok_or_else(|| bad_schema("with a fixed type without a size"))?;
                    let node = Node::Fixed(size, scale.filter(|_| logical == Some("decimal")));
                    if let Some(n) = obj.get("name").and_then(Value::as_str) {
                        names.map.insert(n.to_owned(), node.clone());
                    }
                    Ok(node)
                }
                Some(name) => {
                    let node = primitive(name, logical, is_json(Some(obj)), names, depth)?;
                    Ok(match (node, scale) {
                        (Node::Bytes(_), Some(s)) if logical == Some("decimal") => {
                            Node::Bytes(Some(s))
                        }
                        (Node::Bytes(_), None) if logical == Some("decimal") => {
                            Node::Bytes(Some(0))
                        }
                        (n, _) => n,
                    })
                }
                None => compile_typed(ty, fields, column_kind, names, depth + 1),
            }
        }
        _ => Err(bad_schema(&format!("with a type that is {v}"))),
    }
}

/// The named types defined so far, and how many nodes references copied.
#[derive(Default)]
struct Names {
    map: HashMap<String, Node>,
    copied: usize,
}

/// The nodes a schema's references may copy in all.
const MAX_COPIED: usize = 10_000;

/// A node's depth and size.
fn measure(node: &Node) -> (usize, usize) {
    let children: Vec<&Node> = match node {
        Node::Record(cols) => cols.iter().map(|c| &c.node).collect(),
        Node::Array(n) | Node::Map(n) => vec![n.as_ref()],
        Node::Union(b) => b.iter().collect(),
        _ => Vec::new(),
    };
    children.into_iter().fold((1, 1), |(d, n), c| {
        let (cd, cn) = measure(c);
        (d.max(cd + 1), n + cn)
    })
}

fn primitive(
    name: &str,
    logical: Option<&str>,
    json: bool,
    names: &mut Names,
    depth: usize,
) -> Result<Node> {
    Ok(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int {
            date: logical == Some("date"),
        },
        "long" => Node::Long(match logical {
            Some("timestamp-micros") | Some("local-timestamp-micros") => LongKind::TimestampMicros,
            Some("timestamp-millis") | Some("local-timestamp-millis") => LongKind::TimestampMillis,
            Some("time-micros") => LongKind::TimeMicros,
            _ => LongKind::Plain,
        }),
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes(None),
        "string" => Node::String { json },
        other => {
            let node = names
                .map
                .get(other)
                .or_else(|| names.map.get(other.rsplit('.').next().unwrap_or(other)))
                .cloned()
                .ok_or_else(|| bad_schema(&format!("naming a type it never defined: {other:?}")))?;
            // A reference copies the type: its depth counts where it
            // stands, and its size against the schema's whole budget.
            let (d, n) = measure(&node);
            names.copied += n;
            if depth + d > MAX_DEPTH || names.copied > MAX_COPIED {
                return Err(bad_schema(
                    "whose named types nest too deep or copy too much",
                ));
            }
            node
        }
    })
}

/// A cursor over a block of rows.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| bad_rows("that end inside a row"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A zig-zag varint (Avro's `int` and `long`).
    fn long(&mut self) -> Result<i64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad_rows("that end inside a number"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(bad_rows("with a number longer than 10 bytes"))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| bad_rows(&format!("with a negative length {n}")))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
}

fn write_record(columns: &[Column], r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<()> {
    out.push(b'{');
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(c.quoted.as_bytes());
        out.push(b':');
        write_node(&c.node, r, out)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // A `&str` always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Avro's block-encoded sequences (arrays and maps): each block a count
/// (negative: followed by its size in bytes), until a count of 0.
fn blocks(
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    mut item: impl FnMut(&mut Reader<'_>, &mut Vec<u8>, bool) -> Result<()>,
) -> Result<()> {
    let mut first = true;
    loop {
        let mut n = r.long()?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            n = n
                .checked_neg()
                .ok_or_else(|| bad_rows("with a bad block count"))?;
            r.long()?;
        }
        // Every item takes a byte at least in what BigQuery sends: a count
        // beyond the bytes left is a lie (and would loop on empty items).
        let left = r.buf.len() - r.pos;
        if usize::try_from(n).map_or(true, |n| n > left) {
            return Err(bad_rows(&format!(
                "with a block of {n} items in {left} bytes"
            )));
        }
        for _ in 0..n {
            item(r, out, first)?;
            first = false;
        }
    }
}

fn write_node(node: &Node, r: &mut Reader<'_>, out: &mut Vec<u8>) -> Result<()> {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::EmptyArray => out.extend_from_slice(b"[]"),
        Node::Boolean => match r.take(1)?[0] {
            0 => out.extend_from_slice(b"false"),
            1 => out.extend_from_slice(b"true"),
            b => return Err(bad_rows(&format!("with a boolean byte {b}"))),
        },
        Node::Int { date } => {
            let v = r.long()?;
            let v =
                i32::try_from(v).map_err(|_| bad_rows(&format!("with an int {v} out of range")))?;
            let v = i64::from(v);
            if *date {
                let (y, m, d) = crate::time::civil_from_days(v);
                write_str(out, &format!("{y:04}-{m:02}-{d:02}"));
            } else {
                out.extend_from_slice(itoa(v).as_bytes());
            }
        }
        Node::Long(kind) => {
            let v = r.long()?;
            match kind {
                LongKind::Plain => out.extend_from_slice(itoa(v).as_bytes()),
                LongKind::TimestampMicros => write_timestamp(out, Some(v)),
                LongKind::TimestampMillis => write_timestamp(out, v.checked_mul(1000)),
                LongKind::TimeMicros => {
                    let (s, us) = (v.div_euclid(1_000_000), v.rem_euclid(1_000_000));
                    let hms = format!("{:02}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60);
                    // As tabledata.list writes TIME: no fraction when it is 0.
                    match us {
                        0 => write_str(out, &hms),
                        us => write_str(out, &format!("{hms}.{us:06}")),
                    }
                }
            }
        }
        Node::Float => {
            let b = r.take(4)?;
            write_float(out, f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        Node::Double => {
            let b = r.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            write_float(out, f64::from_le_bytes(a));
        }
        Node::Bytes(decimal) => {
            let b = r.bytes()?;
            write_bytes(out, b, *decimal)?;
        }
        Node::Fixed(n, decimal) => {
            let b = r.take(*n)?;
            write_bytes(out, b, *decimal)?;
        }
        Node::String { json } => {
            let b = r.bytes()?;
            let s =
                std::str::from_utf8(b).map_err(|_| bad_rows("with a string that is no UTF-8"))?;
            if *json && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok() {
                // JSON text on one line: a raw line break can only be
                // whitespace between tokens.
                out.extend(s.bytes().map(|b| match b {
                    b'\n' | b'\r' => b' ',
                    b => b,
                }));
            } else {
                write_str(out, s);
            }
        }
        Node::Record(columns) => write_record(columns, r, out)?,
        Node::Array(item) => {
            out.push(b'[');
            blocks(r, out, |r, out, first| {
                if !first {
                    out.push(b',');
                }
                write_node(item, r, out)
            })?;
            out.push(b']');
        }
        Node::Map(value) => {
            out.push(b'{');
            blocks(r, out, |r, out, first| {
                if !first {
                    out.push(b',');
                }
                let k = r.bytes()?;
                let k = std::str::from_utf8(k)
                    .map_err(|_| bad_rows("with a map key that is no UTF-8"))?;
                write_str(out, k);
                out.push(b':');
                write_node(value, r, out)
            })?;
            out.push(b'}');
        }
        Node::Union(branches) => {
            let i = r.long()?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| {
                    bad_rows(&format!(
                        "choosing branch {i} of a union of {}",
                        branches.len()
                    ))
                })?;
            write_node(branch, r, out)?;
        }
        Node::Enum(symbols) => {
            let i = r.long()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| bad_rows(&format!("choosing symbol {i} of {}", symbols.len())))?;
            write_str(out, s);
        }
    }
    Ok(())
}

fn itoa(v: i64) -> String {
    v.to_string()
}

fn write_timestamp(out: &mut Vec<u8>, micros: Option<i64>) {
    let t = micros.and_then(|m| {
        let d = std::time::Duration::from_micros(m.unsigned_abs());
        if m >= 0 {
            std::time::UNIX_EPOCH.checked_add(d)
        } else {
            std::time::UNIX_EPOCH.checked_sub(d)
        }
    });
    match (t, micros) {
        (Some(t), _) => write_str(out, &crate::time::format_millis(t)),
        (None, Some(m)) => out.extend_from_slice(itoa(m).as_bytes()),
        (None, None) => out.extend_from_slice(b"null"),
    }
}

/// A FLOAT64 as `tabledata.list` reading gives it: a number, or BigQuery's
/// `NaN`, `Infinity`, `-Infinity` as strings.
fn write_float(out: &mut Vec<u8>, f: f64) {
    match serde_json::Number::from_f64(f) {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None if f.is_nan() => write_str(out, "NaN"),
        None if f > 0.0 => write_str(out, "Infinity"),
        None => write_str(out, "-Infinity"),
    }
}

/// The widest decimal BigQuery sends (BIGNUMERIC: 32 bytes unscaled) and
/// its largest scale (38); a schema may not ask for more than 76.
const MAX_DECIMAL_BYTES: usize = 32;
const MAX_SCALE: u32 = 76;

fn write_bytes(out: &mut Vec<u8>, b: &[u8], decimal: Option<u32>) -> Result<()> {
    match decimal {
        Some(_) if b.len() > MAX_DECIMAL_BYTES => {
            return Err(bad_rows(&format!("with a decimal of {} bytes", b.len())))
        }
        Some(scale) => write_str(out, &decimal_text(b, scale)),
        None => write_str(out, &base64(b)),
    }
    Ok(())
}

/// Standard base64 with padding (BigQuery's text form of BYTES).
pub(crate) fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(char::from(A[(n >> shift) as usize & 63]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// An Avro decimal (big-endian two's complement, unscaled) as decimal text
/// with `scale` digits after the point, trailing zeros trimmed, as
/// BigQuery writes NUMERIC (`1.5`, `-0.25`, `42`).
fn decimal_text(b: &[u8], scale: u32) -> String {
    let negative = b.first().is_some_and(|x| x & 0x80 != 0);
    // The magnitude, big-endian.
    let mut mag: Vec<u8> = if negative {
        let mut m: Vec<u8> = b.iter().map(|x| !x).collect();
        for x in m.iter_mut().rev() {
            let (v, carry) = x.overflowing_add(1);
            *x = v;
            if !carry {
                break;
            }
        }
        m
    } else {
        b.to_vec()
    };
    // Repeated division by 10 gives the digits, least significant first.
    let mut digits = Vec::new();
    while mag.iter().any(|&x| x != 0) {
        let mut rem = 0u32;
        for x in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*x);
            *x = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let (int, frac) = digits.split_at(digits.len() - scale);
    let frac = {
        let mut end = frac.len();
        while end > 0 && frac[end - 1] == b'0' {
            end -= 1;
        }
        &frac[..end]
    };
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    s.push_str(std::str::from_utf8(int).unwrap_or("0"));
    if !frac.is_empty() {
        s.push('.');
        s.push_str(std::str::from_utf8(frac).unwrap_or(""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn zigzag(v: i64, out: &mut Vec<u8>) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str, out: &mut Vec<u8>) {
        zigzag(s.len() as i64, out);
        out.extend_from_slice(s.as_bytes());
    }

    const OUTPUT: &str = r#"{"type":"record","name":"Root","fields":[
        {"name":"key","type":["null","string"]},
        {"name":"request","type":["null",{"type":"string","sqlType":"JSON"}]},
        {"name":"response","type":["null","string"]},
        {"name":"status","type":["null","string"]},
        {"name":"processed_time","type":["null",{"type":"long","logicalType":"timestamp-micros"}]},
        {"name":"n","type":"long"},
        {"name":"tags","type":{"type":"array","items":"string"}}]}"#;

    fn table() -> Vec<Field> {
        vec![
            Field::new("key", "STRING"),
            Field::new("request", "JSON"),
            Field::new("response", "JSON"),
            Field::new("status", "STRING"),
            Field::new("processed_time", "TIMESTAMP"),
            Field::new("n", "INTEGER"),
            Field {
                mode: Some("REPEATED".into()),
                ..Field::new("tags", "STRING")
            },
        ]
    }

    fn output_row(key: &str, response: Option<&str>, micros: i64, out: &mut Vec<u8>) {
        zigzag(1, out);
        string(key, out);
        zigzag(1, out);
        string("{\"contents\":[]}", out);
        match response {
            Some(r) => {
                zigzag(1, out);
                string(r, out);
            }
            None => zigzag(0, out),
        }
        zigzag(1, out);
        string("", out);
        zigzag(1, out);
        zigzag(micros, out);
        zigzag(-7, out);
        // Two blocks: one plain, one with its byte size (negative count).
        zigzag(1, out);
        string("a", out);
        zigzag(-1, out);
        zigzag(2, out);
        string("b", out);
        zigzag(0, out);
    }

    #[test]
    fn output_rows_become_the_lines_tabledata_reading_gives() {
        let schema = RowSchema::parse(OUTPUT, &table()).unwrap();
        let mut block = Vec::new();
        output_row(
            "k1",
            Some("{\"candidates\":[]}"),
            1_730_484_796_826_000,
            &mut block,
        );
        output_row("k\"2\n", None, -1, &mut block);
        let mut out = Vec::new();
        schema.write_rows(&block, 2, &mut out).unwrap();
        let lines: Vec<Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"key": "k1", "request": {"contents": []}, "response": {"candidates": []},
                "status": "", "processed_time": "2024-11-01T18:13:16.826Z", "n": -7, "tags": ["a", "b"]})
        );
        assert_eq!(lines[1]["key"], "k\"2\n");
        assert_eq!(lines[1]["response"], Value::Null);
        // Before the epoch, as tabledata.list reading formats it.
        let rest = super::super::rows::decode_row(
            &[Field::new("t", "TIMESTAMP")],
            &serde_json::json!({"f": [{"v": "-1"}]}),
        )
        .unwrap();
        assert_eq!(lines[1]["processed_time"], rest["t"]);
        // The same cells as tabledata.list reading makes of them.
        let rest = super::super::rows::decode_row(
            &table(),
            &serde_json::json!({"f": [{"v": "k1"}, {"v": "{\"contents\":[]}"}, {"v": "{\"candidates\":[]}"},
                {"v": ""}, {"v": "1730484796826000"}, {"v": "-7"}, {"v": [{"v": "a"}, {"v": "b"}]}]}),
        )
        .unwrap();
        assert_eq!(lines[0], Value::Object(rest));
    }

    #[test]
    fn a_block_written_a_chunk_at_a_time_gives_the_same_lines() {
        let schema = RowSchema::parse(OUTPUT, &table()).unwrap();
        let mut block = Vec::new();
        for i in 0..50 {
            output_row(&format!("k{i}"), Some("{\"a\":1}"), i, &mut block);
        }
        let mut whole = Vec::new();
        schema.write_rows(&block, 50, &mut whole).unwrap();
        let mut cursor = Block::new(50);
        let mut pieces = Vec::new();
        let mut chunks = 0;
        while !cursor.done() {
            let mut out = Vec::new();
            schema
                .write_some(&block, &mut cursor, &mut out, 300)
                .unwrap();
            assert!(
                out.len() < 300 + 400,
                "a chunk is its limit and one row at most"
            );
            assert_eq!(out.last(), Some(&b'\n'), "whole lines");
            pieces.extend_from_slice(&out);
            chunks += 1;
        }
        assert!(chunks > 5, "{chunks}");
        assert_eq!(pieces, whole);
    }

    #[test]
    fn a_block_with_too_few_or_too_many_rows_is_refused() {
        let schema = RowSchema::parse(OUTPUT, &table()).unwrap();
        let mut block = Vec::new();
        output_row("k1", None, 0, &mut block);
        let mut out = Vec::new();
        assert!(schema.write_rows(&block, 2, &mut out).is_err());
        let mut out = Vec::new();
        assert!(schema.write_rows(&block, 0, &mut out).is_err());
        let mut out = Vec::new();
        schema.write_rows(&block, 1, &mut out).unwrap();
    }

    #[test]
    fn scalars_read_as_bigquery_writes_them() {
        let schema = RowSchema::parse(
            r#"{"type":"record","name":"R","fields":[
              {"name":"num","type":{"type":"bytes","logicalType":"decimal","precision":38,"scale":9}},
              {"name":"d","type":{"type":"int","logicalType":"date"}},
              {"name":"t","type":{"type":"long","logicalType":"time-micros"}},
              {"name":"b","type":"bytes"},
              {"name":"f","type":"double"},
              {"name":"nan","type":"double"},
              {"name":"ok","type":"boolean"},
              {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
              {"name":"m","type":{"type":"map","values":"long"}},
              {"name":"s","type":{"type":"record","name":"S","fields":[{"name":"j","type":"string"}]}}]}"#,
            &[Field {
                fields: vec![Field::new("j", "JSON")],
                ..Field::new("s", "RECORD")
            }],
        )
        .unwrap();
        let mut block = Vec::new();
        // -1.5 at scale 9: -1_500_000_000 as big-endian two's complement.
        let unscaled = (-1_500_000_000i64).to_be_bytes();
        zigzag(unscaled.len() as i64, &mut block);
        block.extend_from_slice(&unscaled);
        zigzag(20_040, &mut block);
        zigzag(
            ((14 * 3600 + 4 * 60 + 28) * 1_000_000) + 376_000,
            &mut block,
        );
        zigzag(3, &mut block);
        block.extend_from_slice(b"hi!");
        block.extend_from_slice(&0.25f64.to_le_bytes());
        block.extend_from_slice(&f64::NAN.to_le_bytes());
        block.push(1);
        zigzag(1, &mut block);
        zigzag(1, &mut block);
        string("a", &mut block);
        zigzag(5, &mut block);
        zigzag(0, &mut block);
        string("[1, 2]", &mut block);
        let mut out = Vec::new();
        schema.write_rows(&block, 1, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"num": "-1.5", "d": "2024-11-13", "t": "14:04:28.376000", "b": "aGkh",
                "f": 0.25, "nan": "NaN", "ok": true, "e": "Y", "m": {"a": 5}, "s": {"j": [1, 2]}})
        );
    }

    #[test]
    fn lying_counts_and_out_of_range_values_are_refused_quickly() {
        let nulls = RowSchema::parse(
            r#"{"type":"record","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
            &[],
        )
        .unwrap();
        let mut block = Vec::new();
        zigzag(1 << 40, &mut block);
        zigzag(0, &mut block);
        assert!(nulls.write_rows(&block, 1, &mut Vec::new()).is_err());
        let date = RowSchema::parse(
            r#"{"type":"record","fields":[{"name":"d","type":{"type":"int","logicalType":"date"}}]}"#,
            &[],
        )
        .unwrap();
        let mut block = Vec::new();
        zigzag(i64::MAX, &mut block);
        assert!(date.write_rows(&block, 1, &mut Vec::new()).is_err());
        let wide = RowSchema::parse(
            r#"{"type":"record","fields":[{"name":"n","type":{"type":"bytes","logicalType":"decimal","scale":9}}]}"#,
            &[],
        )
        .unwrap();
        let mut block = Vec::new();
        zigzag(64, &mut block);
        block.extend_from_slice(&[1u8; 64]);
        assert!(wide.write_rows(&block, 1, &mut Vec::new()).is_err());
        assert!(RowSchema::parse(
            r#"{"type":"record","fields":[{"name":"n","type":{"type":"bytes","logicalType":"decimal","scale":4000000000}}]}"#,
            &[],
        )
        .is_err());
    }

    #[test]
    fn decimals_of_any_width() {
        assert_eq!(decimal_text(&[0x00], 9), "0");
        assert_eq!(decimal_text(&42i128.to_be_bytes(), 0), "42");
        assert_eq!(decimal_text(&(-25i64).to_be_bytes(), 2), "-0.25");
        // 10^40 at scale 38 (BIGNUMERIC): 100, beyond any i128.
        let mut big = vec![0u8; 32];
        let mut v = vec![1u8];
        for _ in 0..40 {
            let mut carry = 0u32;
            for x in v.iter_mut().rev() {
                let cur = u32::from(*x) * 10 + carry;
                *x = (cur & 0xff) as u8;
                carry = cur >> 8;
            }
            while carry > 0 {
                v.insert(0, (carry & 0xff) as u8);
                carry >>= 8;
            }
        }
        let at = big.len() - v.len();
        big[at..].copy_from_slice(&v);
        assert_eq!(decimal_text(&big, 38), "100");
    }

    #[test]
    fn bad_schemas_are_refused() {
        for s in [
            "no json",
            r#""long""#,
            r#"{"type":"record","fields":[{"name":"a"}]}"#,
            r#"{"type":"record","fields":[{"name":"a","type":"Unknown"}]}"#,
            r#"{"type":"record","fields":[{"name":"a","type":{"type":"array"}}]}"#,
        ] {
            assert!(RowSchema::parse(s, &[]).is_err(), "{s}");
        }
        // Named types that double at every step, or nest through references.
        let mut doubling =
            String::from(r#"{"type":"record","name":"T0","fields":[{"name":"x","type":"long"}]}"#);
        for i in 1..40 {
            doubling = format!(
                r#"{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":{doubling}}},{{"name":"b","type":"T{}"}}]}}"#,
                i - 1
            );
        }
        assert!(RowSchema::parse(&doubling, &[]).is_err());
        let deep = format!("{}\"long\"{}", "[".repeat(100), "]".repeat(100));
        let s = format!(r#"{{"type":"record","fields":[{{"name":"a","type":{deep}}}]}}"#);
        assert!(RowSchema::parse(&s, &[]).is_err());
    }

    #[test]
    fn base64_as_bigquery_writes_bytes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    proptest! {
        /// Whatever bytes arrive, a block is read or refused, never a panic.
        #[test]
        fn any_bytes_are_read_or_refused(block in proptest::collection::vec(any::<u8>(), 0..256), rows in 0u64..8) {
            let schema = RowSchema::parse(OUTPUT, &table()).unwrap();
            let mut out = Vec::new();
            let _ = schema.write_rows(&block, rows, &mut out);
        }

        /// Rows encoded then read give back their values, as JSON.
        #[test]
        fn rows_read_back_as_written(
            rows in proptest::collection::vec(("\\PC{0,12}", proptest::option::of("[a-z]{0,6}"), any::<i64>()), 0..20),
        ) {
            let schema = RowSchema::parse(OUTPUT, &table()).unwrap();
            let mut block = Vec::new();
            for (key, response, micros) in &rows {
                let response = response.as_ref().map(|r| format!("{{\"{r}\":1}}"));
                output_row(key, response.as_deref(), micros / 1000, &mut block);
            }
            let mut out = Vec::new();
            schema.write_rows(&block, rows.len() as u64, &mut out).unwrap();
            let lines: Vec<Value> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap()).collect();
            prop_assert_eq!(lines.len(), rows.len());
            for (line, (key, response, _)) in lines.iter().zip(&rows) {
                prop_assert_eq!(&line["key"], key);
                match response {
                    Some(r) => prop_assert_eq!(&line["response"][r.as_str()], 1),
                    None => prop_assert!(line["response"].is_null()),
                }
            }
        }
    }
}
