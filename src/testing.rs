//! Helpers shared by the crate's unit tests.

use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON for the parsers' property tests: nulls, booleans,
/// numbers and `strings` at the leaves; arrays of fewer than `width` items
/// and objects of at most `width` members whose names are mostly `keys`
/// (so the parsers meet the members they look for, in every wrong shape),
/// nested up to `depth` levels.
pub(crate) fn arb_json(
    keys: &'static [&'static str],
    strings: impl Strategy<Value = String> + 'static,
    depth: u32,
    width: usize,
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        strings.prop_map(Value::from),
    ];
    // Each of `keys` as likely as a made-up name.
    let names = prop_oneof![
        keys.len() as u32 => proptest::sample::select(keys).prop_map(str::to_owned),
        1 => "[a-z]{1,6}",
    ];
    leaf.prop_recursive(depth, 16 * depth, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..width).prop_map(Value::Array),
            proptest::collection::btree_map(names.clone(), inner, 0..width + 1)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
