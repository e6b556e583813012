//! Row keys and their label mirror.
//!
//! Every input line carries a caller-chosen key (`{"key": …, "request": …}`).
//! Jobs carry extra top-level fields through to their output in practice, but
//! that is not documented, so the key is also mirrored into the request's
//! `labels` (which the service echoes back inside `request`) under
//! [`KEY_LABEL`]. Label values are restricted (at most 63 lowercase letters,
//! digits, `_` or `-`), so the mirror is:
//!
//! * `"r"` + lowercase unpadded base32 of the key's UTF-8 bytes when that
//!   fits (keys of at most [`MAX_EXACT_KEY_BYTES`] bytes): reversible, see
//!   [`KeyLabel::Exact`];
//! * otherwise `"h"` + base32 of the first 20 bytes of the key's SHA-256: a
//!   [`KeyHash`] that a reader matches against the input keys
//!   ([`key_hash`]).
//!
//! ```
//! use vertex_batch::format::{decode_key_label, key_label_value, KeyLabel};
//!
//! let value = key_label_value("row-1");
//! assert_eq!(decode_key_label(&value), Some(KeyLabel::Exact("row-1".into())));
//! ```

use std::{collections::HashMap, fmt};

use crate::error::{Error, Result};

/// The longest key, in UTF-8 bytes (1 KiB). Keys are any non-empty UTF-8
/// string up to this length; nothing else is restricted.
///
/// ```
/// use vertex_batch::format::{check_key, MAX_KEY_BYTES};
/// assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
/// assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
/// ```
pub const MAX_KEY_BYTES: usize = 1024;

/// The label key under which every request mirrors its row key.
///
/// ```
/// assert_eq!(vertex_batch::format::KEY_LABEL, "vertex_batch_key");
/// ```
pub const KEY_LABEL: &str = "vertex_batch_key";

/// The longest key whose label value is reversible (`"r"` + base32 fits in
/// [`MAX_LABEL_VALUE_CHARS`]).
///
/// ```
/// use vertex_batch::format::{key_label_value, MAX_EXACT_KEY_BYTES};
/// assert!(key_label_value(&"a".repeat(MAX_EXACT_KEY_BYTES)).starts_with('r'));
/// assert!(key_label_value(&"a".repeat(MAX_EXACT_KEY_BYTES + 1)).starts_with('h'));
/// ```
pub const MAX_EXACT_KEY_BYTES: usize = (MAX_LABEL_VALUE_CHARS - 1) * 5 / 8;

/// The longest label value this module produces.
///
/// ```
/// use vertex_batch::format::{key_label_value, MAX_LABEL_VALUE_CHARS};
/// for key in ["a", "row-000042", &"long key ".repeat(100)] {
///     assert!(key_label_value(key).len() <= MAX_LABEL_VALUE_CHARS);
/// }
/// ```
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// Bytes of SHA-256 kept in a [`KeyHash`].
const HASH_BYTES: usize = 20;

/// Checks a key: 1..=[`MAX_KEY_BYTES`] bytes of UTF-8.
///
/// The error is [`Error::Validation`] with field `key`, naming the key
/// (shortened for display).
///
/// ```
/// use vertex_batch::format::check_key;
/// assert!(check_key("doc-1/page-2").is_ok());
/// assert!(check_key("").is_err());
/// assert!(check_key(&"x".repeat(5000)).is_err());
/// ```
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::validation("key", "keys must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::validation(
            "key",
            format!(
                "key {} is {} bytes long, at most {MAX_KEY_BYTES} allowed",
                display_key(key),
                key.len()
            ),
        ));
    }
    Ok(())
}

/// A key quoted for messages, shortened to about 64 bytes.
pub(crate) fn display_key(key: &str) -> String {
    const SHOWN: usize = 64;
    if key.len() <= SHOWN {
        return format!("{key:?}");
    }
    let mut end = SHOWN;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &key[..end], key.len())
}

/// The hash form of a key's label mirror: the first 20 bytes of the SHA-256
/// of its UTF-8 bytes.
///
/// ```
/// use vertex_batch::format::{decode_key_label, key_hash, key_label_value, KeyLabel};
///
/// let long = "k".repeat(100);
/// let value = key_label_value(&long);
/// assert_eq!(decode_key_label(&value), Some(KeyLabel::Hash(key_hash(&long))));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash([u8; HASH_BYTES]);

impl KeyHash {
    /// The 20 hash bytes.
    ///
    /// ```
    /// assert_eq!(vertex_batch::format::key_hash("a").as_bytes().len(), 20);
    /// ```
    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({self})")
    }
}

impl fmt::Display for KeyHash {
    /// The lowercase base32 form (as in the label value, without the `h`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32_encode(&self.0))
    }
}

/// The SHA-256 of a key, truncated to a [`KeyHash`]: build a
/// `HashMap<KeyHash, key>` of the input keys to resolve hashed label values.
///
/// ```
/// use vertex_batch::format::key_hash;
/// assert_eq!(key_hash("a"), key_hash("a"));
/// assert_ne!(key_hash("a"), key_hash("b"));
/// ```
pub fn key_hash(key: &str) -> KeyHash {
    let digest = sha256(key.as_bytes());
    let mut out = [0u8; HASH_BYTES];
    out.copy_from_slice(&digest[..HASH_BYTES]);
    KeyHash(out)
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What a label value under [`KEY_LABEL`] says about its key.
///
/// ```
/// use vertex_batch::format::{decode_key_label, key_label_value, KeyLabel};
///
/// match decode_key_label(&key_label_value("q1")) {
///     Some(KeyLabel::Exact(key)) => assert_eq!(key, "q1"),
///     Some(KeyLabel::Hash(_)) | None => unreachable!("short keys are stored as they are"),
/// }
/// let long = "x".repeat(100);
/// assert!(matches!(decode_key_label(&key_label_value(&long)), Some(KeyLabel::Hash(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyLabel {
    /// The key itself (short keys are stored reversibly).
    Exact(String),
    /// The hash of a long key; match it against [`key_hash`] of the input keys.
    Hash(KeyHash),
}

impl KeyLabel {
    /// Whether this label value was made from `key`.
    ///
    /// ```
    /// use vertex_batch::format::{decode_key_label, key_label_value};
    /// let long = "é".repeat(40);
    /// let label = decode_key_label(&key_label_value(&long)).unwrap();
    /// assert!(label.matches(&long));
    /// assert!(!label.matches("other"));
    /// ```
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyLabel::Exact(k) => k == key,
            KeyLabel::Hash(h) => key.len() > MAX_EXACT_KEY_BYTES && key_hash(key) == *h,
        }
    }
}

/// The label value mirroring `key`: at most 63 characters, all of them
/// lowercase letters or digits 2-7.
///
/// ```
/// use vertex_batch::format::key_label_value;
/// assert_eq!(key_label_value("a"), "rme");
/// assert_eq!(key_label_value(&"x".repeat(200)).len(), 33);
/// ```
pub fn key_label_value(key: &str) -> String {
    if key.len() <= MAX_EXACT_KEY_BYTES {
        let mut s = String::with_capacity(1 + (key.len() * 8).div_ceil(5));
        s.push('r');
        s.push_str(&base32_encode(key.as_bytes()));
        s
    } else {
        format!("h{}", key_hash(key))
    }
}

/// Decodes a label value made by [`key_label_value`]; `None` for anything
/// else (including non-canonical base32 and non-UTF-8 keys).
///
/// ```
/// use vertex_batch::format::{decode_key_label, KeyLabel};
/// assert_eq!(decode_key_label("rme"), Some(KeyLabel::Exact("a".into())));
/// assert_eq!(decode_key_label("nonsense!"), None);
/// ```
pub fn decode_key_label(value: &str) -> Option<KeyLabel> {
    let (tag, rest) = value.split_at_checked(1)?;
    match tag {
        "r" => {
            let bytes = base32_decode(rest)?;
            if bytes.is_empty() || bytes.len() > MAX_EXACT_KEY_BYTES {
                return None;
            }
            String::from_utf8(bytes).ok().map(KeyLabel::Exact)
        }
        "h" => {
            let bytes = base32_decode(rest)?;
            let hash: [u8; HASH_BYTES] = bytes.try_into().ok()?;
            Some(KeyLabel::Hash(KeyHash(hash)))
        }
        _ => None,
    }
}

/// Mirrors `key` into `labels` under [`KEY_LABEL`]; an error if the label is
/// already there or if it would be one label too many.
pub(crate) fn insert_key_label(labels: &mut HashMap<String, String>, key: &str) -> Result<()> {
    if labels.contains_key(KEY_LABEL) {
        return Err(label_taken(key));
    }
    if labels.len() >= crate::spec::MAX_LABELS {
        return Err(too_many_labels(key));
    }
    labels.insert(KEY_LABEL.to_owned(), key_label_value(key));
    Ok(())
}

pub(crate) fn label_taken(key: &str) -> Error {
    Error::validation(
        "labels",
        format!(
            "the request for key {} already has a label {KEY_LABEL:?}, which is reserved \
             for the key mirror",
            display_key(key)
        ),
    )
}

pub(crate) fn too_many_labels(key: &str) -> Error {
    Error::validation(
        "labels",
        format!(
            "the request for key {} already has {} labels; the key mirror needs one more",
            display_key(key),
            crate::spec::MAX_LABELS
        ),
    )
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lowercase RFC 4648 base32, unpadded.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buf: u16 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buf = (buf << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buf >> bits) & 31)]));
        }
        buf &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[usize::from((buf << (5 - bits)) & 31)]));
    }
    out
}

/// Inverse of [`base32_encode`]; `None` unless `s` is its canonical output.
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    // Lengths 1, 3, 6 (mod 8) never come out of the encoder.
    if matches!(s.len() % 8, 1 | 3 | 6) {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut buf: u16 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u16::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding.
    (buf == 0).then_some(out)
}

/// The key a label value names, when the label is reversible.
pub(crate) fn decode_exact(value: &str) -> Option<String> {
    match decode_key_label(value)? {
        KeyLabel::Exact(k) => Some(k),
        KeyLabel::Hash(_) => None,
    }
}

/// The label value of a key too long to mirror reversibly (`None` for
/// short keys, whose label decodes to the key itself).
pub(crate) fn hashed_label(key: &str) -> Option<String> {
    (key.len() > MAX_EXACT_KEY_BYTES).then(|| key_label_value(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label_safe(v: &str) -> bool {
        v.chars().count() <= MAX_LABEL_VALUE_CHARS
            && v.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base32_decode("mz"), None, "non-zero padding bits");
        assert_eq!(base32_decode("m"), None);
        assert_eq!(base32_decode("MY"), None);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("x").is_ok());
        assert!(check_key(&"é".repeat(MAX_KEY_BYTES / 2)).is_ok());
        let Err(Error::Validation(v)) = check_key(&"k".repeat(MAX_KEY_BYTES + 1)) else {
            panic!("expected a validation error")
        };
        let message = v.message();
        assert_eq!(v.field(), "key");
        assert!(
            message.contains("kkkk") && message.contains("1025 bytes"),
            "{message}"
        );
        assert!(message.len() < 200, "the key is shortened: {message}");
        assert!(matches!(check_key(""), Err(Error::Validation(v)) if v.field() == "key"));
    }

    #[test]
    fn exact_and_hash_forms_switch_at_the_limit() {
        let at = "a".repeat(MAX_EXACT_KEY_BYTES);
        let v = key_label_value(&at);
        assert!(
            v.len() <= MAX_LABEL_VALUE_CHARS && v.starts_with('r'),
            "{v}"
        );
        let over = "a".repeat(MAX_EXACT_KEY_BYTES + 1);
        let h = key_label_value(&over);
        assert!(h.starts_with('h') && h.len() == 33, "{h}");
        assert_eq!(decode_key_label(&h), Some(KeyLabel::Hash(key_hash(&over))));
        assert!(!KeyLabel::Hash(key_hash(&over)).matches(&at));
    }

    #[test]
    fn the_label_is_inserted_once() {
        let mut labels = HashMap::new();
        insert_key_label(&mut labels, "k1").unwrap();
        assert_eq!(labels[KEY_LABEL], key_label_value("k1"));
        let err = insert_key_label(&mut labels, "k1").unwrap_err().to_string();
        assert!(err.contains(KEY_LABEL) && err.contains("\"k1\""), "{err}");
        let mut full: HashMap<_, _> = (0..crate::spec::MAX_LABELS)
            .map(|i| (format!("l{i}"), String::new()))
            .collect();
        assert!(insert_key_label(&mut full, "k").is_err());
    }

    #[test]
    fn decoding_rejects_what_the_encoder_never_makes() {
        for v in [
            "",
            "r",
            "h",
            "x",
            "rMY",
            "hme",
            "r-",
            "r====",
            "h".repeat(40).as_str(),
        ] {
            assert_eq!(decode_key_label(v), None, "{v:?}");
        }
        // Not UTF-8.
        assert_eq!(
            decode_key_label(&format!("r{}", base32_encode(&[0xff]))),
            None
        );
    }

    proptest! {
        #[test]
        fn short_keys_round_trip(key in "\\PC{1,38}") {
            prop_assume!(key.len() <= MAX_EXACT_KEY_BYTES);
            let v = key_label_value(&key);
            prop_assert_eq!(decode_key_label(&v), Some(KeyLabel::Exact(key.clone())));
        }

        #[test]
        fn every_value_is_label_safe(key in any::<String>()) {
            let v = key_label_value(&key);
            prop_assert!(label_safe(&v), "{}", v);
            if !key.is_empty() {
                let decoded = decode_key_label(&v);
                prop_assert!(decoded.is_some_and(|d| d.matches(&key)));
            }
        }

        #[test]
        fn byte_keys_up_to_the_limit_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..=MAX_EXACT_KEY_BYTES)) {
            let key = String::from_utf8_lossy(&bytes).into_owned();
            if key.len() <= MAX_EXACT_KEY_BYTES {
                prop_assert_eq!(decode_key_label(&key_label_value(&key)), Some(KeyLabel::Exact(key)));
            }
        }

        #[test]
        fn decoding_never_panics(v in any::<String>()) {
            let _ = decode_key_label(&v);
        }
    }
}
