//! JSON slicing the reader shares: a member taken out of an object with
//! every other byte kept, borrowed strings, ranges of a line.

use std::{borrow::Cow, fmt};

use serde::Deserialize;
use serde_json::value::RawValue;

// ---------------------------------------------------------------------------
// Taking the key label out of a request, every other byte kept.

/// Skips JSON whitespace from `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The range of the one JSON value starting at `i` (after whitespace).
fn value_at(text: &str, i: usize) -> Option<std::ops::Range<usize>> {
    let rest = text.get(i..)?;
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<&RawValue>();
    let raw = values.next()?.ok()?;
    let start = in_line(text, raw.get())?.start;
    Some(start..start + raw.get().len())
}

/// One member of a JSON object text: its name, the range of the whole
/// member (name to value) and of its value.
pub(super) struct Member {
    name: String,
    whole: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// The members of the JSON object `text`, in order (`None` if it is not
/// one object).
pub(super) fn object_members(text: &str) -> Option<Vec<Member>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        let name = value_at(text, i)?;
        if b.get(name.start) != Some(&b'"') {
            return None;
        }
        let decoded: String = serde_json::from_str(text.get(name.clone())?).ok()?;
        i = skip_ws(b, name.end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value = value_at(text, i + 1)?;
        out.push(Member {
            name: decoded,
            whole: name.start..value.end,
            value: value.clone(),
        });
        i = skip_ws(b, value.end);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_ws(b, i + 1) == b.len()).then_some(out)
}

/// `text` without member `k` of `members` (and one comma beside it).
fn remove_member(text: &str, members: &[Member], k: usize) -> Option<String> {
    let cut = match (k.checked_sub(1), members.get(k + 1)) {
        // Not the last: up to the next member.
        (_, Some(next)) => members.get(k)?.whole.start..next.whole.start,
        // The last of several: from the end of the one before.
        (Some(prev), None) => members.get(prev)?.whole.end..members.get(k)?.whole.end,
        // The only one.
        (None, None) => members.get(k)?.whole.clone(),
    };
    Some(format!(
        "{}{}",
        text.get(..cut.start)?,
        text.get(cut.end..)?
    ))
}

/// `request` without the key label [`KEY_LABEL`](crate::format::KEY_LABEL)
/// in its `labels` (and without `labels` when that was its only label);
/// `None` when there is none to take out or `request` is not an object.
pub(crate) fn without_key_label(request: &RawValue) -> Option<Box<RawValue>> {
    let text = request.get();
    let members = object_members(text)?;
    let li = members.iter().position(|m| m.name == "labels")?;
    let labels_at = members.get(li)?.value.clone();
    let mut labels = text.get(labels_at.clone())?.to_owned();
    let mut found = false;
    // Every copy of the label (a hand-made input may hold it twice).
    loop {
        let lm = object_members(&labels)?;
        let Some(k) = lm
            .iter()
            .position(|m| m.name == crate::format::key::KEY_LABEL)
        else {
            break;
        };
        found = true;
        if lm.len() == 1 {
            let out = remove_member(text, &members, li)?;
            return RawValue::from_string(out).ok();
        }
        labels = remove_member(&labels, &lm, k)?;
    }
    if !found {
        return None;
    }
    let out = format!(
        "{}{labels}{}",
        text.get(..labels_at.start)?,
        text.get(labels_at.end..)?
    );
    RawValue::from_string(out).ok()
}

// ---------------------------------------------------------------------------
// Parsing one line.

/// An optional string borrowed from the input when it has no escapes:
/// `#[serde(borrow)]` borrows a `Cow<str>` field but not an
/// `Option<Cow<str>>`, which serde copies into a `String` every time.
pub(crate) fn opt_str<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Cow<'a, str>>, D::Error> {
    Option::<MaybeBorrowed<'a>>::deserialize(d).map(|o| o.map(|m| m.0))
}

/// A string borrowed from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
pub(crate) struct MaybeBorrowed<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeBorrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = MaybeBorrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Where `part` (a slice borrowed from `line`) sits in `line`.
pub(super) fn in_line(line: &str, part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(line.as_ptr() as usize)?;
    let same = line.get(start..start + part.len())?;
    (same.as_ptr() == part.as_ptr()).then_some(start..start + part.len())
}
