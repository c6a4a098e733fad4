//! Labels on list entries: a few documented keys (a hotline's category, age
//! band, classification, baseline flag, source) with free values.
//!
//! A list entry's labels travel with its reference ID in one *stored
//! reference*: the reference, then for each label in key order a `0x00` byte,
//! the key, `=` and the value. A reference ID and a label value never hold a
//! control character, so the first `0x00` is where the labels begin, and an
//! entry without labels is stored exactly as before labels existed. The list
//! digest hashes these same bytes, so labels are covered by it while the digest
//! of a list without labels is unchanged.
//!
//! Which keys a platform sees in a verdict is the list owner's choice, kept as
//! a bit mask over [`KEYS`] (none by default).

use std::fmt;

/// The label keys, in the order the stored form and the digest use.
pub const KEYS: [&str; 5] = [
    "age_band",
    "baseline",
    "category",
    "classification",
    "source",
];
/// Longest label value, in bytes of UTF-8.
pub const MAX_VALUE_BYTES: usize = 64;
/// Starts every label in a stored reference.
pub const SEPARATOR: u8 = 0;

/// A bit mask over [`KEYS`] (bit `i` for `KEYS[i]`).
pub type KeyMask = u8;
/// Every key.
pub const ALL: KeyMask = (1 << KEYS.len()) - 1;

/// The index of `key` in [`KEYS`].
pub fn key_index(key: &[u8]) -> Option<usize> {
    KEYS.iter().position(|k| k.as_bytes() == key)
}

/// Why a label value is refused, or `None` when it is fine.
pub fn value_problem(value: &str) -> Option<String> {
    if value.is_empty() || value.len() > MAX_VALUE_BYTES {
        Some(format!(
            "must be 1-{MAX_VALUE_BYTES} bytes of UTF-8, got {}",
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else {
        None
    }
}

/// An unknown key named in a list's exposed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey(pub String);

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exposed_label_keys: unknown label key {:?} (the keys: {})",
            self.0,
            KEYS.join(", ")
        )
    }
}

impl std::error::Error for UnknownKey {}

/// The mask of `keys` (each a name in [`KEYS`]).
pub fn mask<S: AsRef<str>>(keys: &[S]) -> Result<KeyMask, UnknownKey> {
    keys.iter().try_fold(0, |acc, k| {
        let k = k.as_ref();
        key_index(k.as_bytes())
            .map(|i| acc | 1 << i)
            .ok_or_else(|| UnknownKey(k.to_string()))
    })
}

/// A stored reference split into the reference ID and its labels part (empty,
/// or starting with [`SEPARATOR`]).
#[inline]
pub fn split(stored: &str) -> (&str, &str) {
    match stored.as_bytes().iter().position(|&b| b == SEPARATOR) {
        Some(i) => stored.split_at(i),
        None => (stored, ""),
    }
}

/// The `(key, value)` pairs of a labels part, in key order.
pub fn pairs(labels: &str) -> impl Iterator<Item = (&str, &str)> {
    labels
        .split('\0')
        .skip(1)
        .filter_map(|label| label.split_once('='))
}

/// Appends the labels of `labels` whose key `exposed` holds to `out`, in the
/// stored form.
pub fn push_exposed(labels: &str, exposed: KeyMask, out: &mut String) {
    if exposed == ALL {
        out.push_str(labels);
        return;
    }
    for (key, value) in pairs(labels) {
        if key_index(key.as_bytes()).is_some_and(|i| exposed & 1 << i != 0) {
            push(key, value, out);
        }
    }
}

/// Appends one label in the stored form.
fn push(key: &str, value: &str, out: &mut String) {
    out.push(SEPARATOR as char);
    out.push_str(key);
    out.push('=');
    out.push_str(value);
}

/// Appends the stored labels part of `values` (`values[i]` for `KEYS[i]`) to `out`.
pub fn encode_into(values: &[Option<&str>; KEYS.len()], out: &mut Vec<u8>) {
    for (key, value) in KEYS.iter().zip(values) {
        if let Some(v) = value {
            out.push(SEPARATOR);
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
    }
}

/// The stored labels part of `values` (`values[i]` for `KEYS[i]`).
pub fn encode(values: &[Option<&str>; KEYS.len()]) -> String {
    let mut out = Vec::new();
    encode_into(values, &mut out);
    // Keys and values are UTF-8, and so are the bytes between them.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn keys_are_sorted_and_fit_the_mask() {
        let mut sorted = KEYS;
        sorted.sort_unstable();
        assert_eq!(sorted, KEYS, "the stored form relies on the order");
        assert!(KEYS.len() <= KeyMask::BITS as usize);
        assert!(KEYS.iter().all(|k| !k.contains('=')));
    }

    #[test]
    fn splits_and_filters() {
        let labels = encode(&[Some("10-13"), None, Some("A"), Some("A1"), None]);
        assert_eq!(labels, "\0age_band=10-13\0category=A\0classification=A1");
        let stored = format!("ref-1{labels}");
        assert_eq!(split(&stored), ("ref-1", labels.as_str()));
        assert_eq!(split("ref-2"), ("ref-2", ""));
        let mut out = String::new();
        push_exposed(
            &labels,
            mask(&["classification", "age_band"]).unwrap(),
            &mut out,
        );
        assert_eq!(out, "\0age_band=10-13\0classification=A1");
        out.clear();
        push_exposed(&labels, 0, &mut out);
        assert!(out.is_empty(), "nothing is exposed by default");
        assert_eq!(
            mask(&["colour"]),
            Err(UnknownKey("colour".into())),
            "unknown keys are named"
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(value_problem("A1").is_none());
        assert!(value_problem(&"é".repeat(32)).is_none(), "64 bytes");
        assert!(value_problem(&"é".repeat(33)).is_some());
        assert!(value_problem("").is_some());
        assert!(value_problem("a\u{0}b").is_some());
        assert!(value_problem("a\u{85}b").is_some(), "C1 controls too");
        assert!(value_problem("a=b").is_none(), "'=' is fine in a value");
    }

    proptest! {
        /// Any labels read back as written, and the exposed ones are exactly the
        /// masked subset (a brute-force filter over a map is the oracle).
        #[test]
        fn round_trip_and_exposure(
            values in prop::collection::vec(prop::option::of("[^\\p{Cc}]{1,16}"), 5),
            exposed in 0u8..32,
        ) {
            let values: [Option<&str>; 5] = std::array::from_fn(|i| values[i].as_deref());
            let labels = encode(&values);
            let want: BTreeMap<&str, &str> = KEYS
                .iter()
                .zip(values)
                .filter_map(|(k, v)| v.map(|v| (*k, v)))
                .collect();
            let got: BTreeMap<&str, &str> = pairs(&labels).collect();
            prop_assert_eq!(&got, &want);
            let stored = format!("R{labels}");
            prop_assert_eq!(split(&stored), ("R", labels.as_str()));
            let mut out = String::new();
            push_exposed(&labels, exposed, &mut out);
            let shown: BTreeMap<&str, &str> = pairs(&out).collect();
            let oracle: BTreeMap<&str, &str> = want
                .iter()
                .filter(|(k, _)| exposed & 1 << key_index(k.as_bytes()).unwrap() != 0)
                .map(|(k, v)| (*k, *v))
                .collect();
            prop_assert_eq!(shown, oracle);
        }
    }
}
