//! One validating pass over an item's JSON that also finds its top-level `version` and `deleted`.
//!
//! Every value a store reads goes through here, so this is the hottest code in a daemon-mode
//! reader: a plain loop over the bytes, with no visitor machinery and no allocation (the figures
//! against serde_json are in `BENCHMARKS.md`).
//!
//! It never decides alone that input is bad. Anything it does not accept, and anything unusual
//! (an escaped or repeated top-level key, nesting deeper than serde_json allows), is handed to
//! the serde_json path, which then gives the answer and its error message. So the fast path can
//! only agree with serde_json or step aside; the tests hold it to that on thousands of mutated
//! documents.

use std::ops::Range;

/// The raw JSON text of the two top-level fields stores read, when present.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fields<'a> {
    pub(super) version: Option<&'a str>,
    pub(super) deleted: Option<&'a str>,
}

/// serde_json's default recursion limit: deeper documents are its to reject.
const MAX_DEPTH: usize = 128;

/// `json`'s top-level fields if it is one valid JSON object (surrounded by nothing but JSON
/// whitespace) whose top-level keys are unescaped and do not repeat `version` or `deleted`;
/// `None` otherwise.
pub(super) fn object_fields(json: &str) -> Option<Fields<'_>> {
    let b = json.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut fields = Fields::default();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key = key_and_colon(b, i)?;
            if key.escaped {
                return None;
            }
            let value_start = key.value;
            i = value(b, value_start)?;
            // Quotes are ASCII, so both ends of the key are char boundaries.
            let slot = match &json[key.name] {
                "version" => Some(&mut fields.version),
                "deleted" => Some(&mut fields.deleted),
                _ => None,
            };
            if let Some(slot) = slot
                && slot.replace(&json[value_start..i]).is_some()
            {
                return None;
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(fields)
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// An object key, up to its value.
struct Key {
    /// The key's text between the quotes, escapes undecoded.
    name: Range<usize>,
    escaped: bool,
    /// Where its value starts (after the colon and any whitespace).
    value: usize,
}

/// At an object key's opening quote: the key, and where its value starts.
#[inline(always)]
fn key_and_colon(b: &[u8], i: usize) -> Option<Key> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (after, escaped) = string(b, i + 1)?;
    let colon = skip_ws(b, after);
    if b.get(colon) != Some(&b':') {
        return None;
    }
    Some(Key {
        name: i + 1..after - 1,
        escaped,
        value: skip_ws(b, colon + 1),
    })
}

/// Just after a string's opening quote: the index after its closing quote, and whether it held
/// an escape.
#[inline(always)]
fn string(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        let (stop, closing) = next_string_stop(b, i)?;
        if closing {
            return Some((stop + 1, escaped));
        }
        i = stop;
        match b[i] {
            b'\\' => {
                escaped = true;
                i += match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                    _ => return None,
                };
            }
            // A control character, which JSON forbids unescaped.
            _ => return None,
        }
    }
}

/// The index of the first byte from `i` that ends the plain run of a string (a quote, a
/// backslash or a control character), and whether it is the quote. Eight bytes at a time, the
/// way serde_json's own scan goes. The masks say which byte it is, so the common case, the
/// closing quote, needs no second look at the byte (that reload was the scan's costliest stall).
#[inline(always)]
fn next_string_stop(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of `x` below `n` (exact for the lowest such byte; a borrow may
    // mark bytes after it, which are never looked at).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let quotes = below(x ^ (ONES * u64::from(b'"')), 1);
        let stops = below(x, 0x20) | quotes | below(x ^ (ONES * u64::from(b'\\')), 1);
        if stops != 0 {
            // The lowest mark of `stops` is exact, and so is the quote mask's bit there: a
            // false quote mark lies above a true quote, which would be a lower stop.
            let first = stops & stops.wrapping_neg();
            let at = i + (stops.trailing_zeros() / 8) as usize;
            return Some((at, quotes & first != 0));
        }
        i += 8;
    }
    loop {
        match b.get(i)? {
            b'"' => return Some((i, true)),
            b'\\' | 0..0x20 => return Some((i, false)),
            _ => i += 1,
        }
    }
}

/// At a number's first byte: the index after it, by JSON's grammar (no leading zeros, digits on
/// both sides of the point).
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// At a value's first byte: the index after the whole value, nested containers included.
fn value(b: &[u8], mut i: usize) -> Option<usize> {
    // Which containers are open, one bit each with the innermost lowest, set for an object: no
    // allocation, and deeper nesting is serde_json's to judge. Shifted by one as containers
    // open and close, so that the innermost is bit 0 and every value's end reads it cheaply.
    let mut objects: u128 = 0;
    let mut depth = 0;
    loop {
        // Here `i` is at the first byte of a value.
        match *b.get(i)? {
            b'{' => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b'}') {
                    i += 1;
                } else {
                    (depth < MAX_DEPTH).then_some(())?;
                    objects = objects << 1 | 1;
                    depth += 1;
                    i = key_and_colon(b, i)?.value;
                    continue;
                }
            }
            b'[' => {
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    (depth < MAX_DEPTH).then_some(())?;
                    objects <<= 1;
                    depth += 1;
                    continue;
                }
            }
            b'"' => i = string(b, i + 1)?.0,
            b't' => i = literal(b, i, b"true")?,
            b'f' => i = literal(b, i, b"false")?,
            b'n' => i = literal(b, i, b"null")?,
            _ => i = number(b, i)?,
        }
        // A value ended: close every container it completes, then find the next value.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_ws(b, i);
            let in_object = objects & 1 != 0;
            match (b.get(i)?, in_object) {
                (b',', true) => {
                    i = key_and_colon(b, skip_ws(b, i + 1))?.value;
                    break;
                }
                (b',', false) => {
                    i = skip_ws(b, i + 1);
                    break;
                }
                (b'}', true) | (b']', false) => {
                    i += 1;
                    objects >>= 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// The scan's contract, for the tests, the fuzzer and its corpus: it may step aside, but
/// whatever it accepts, serde_json accepts with the same two fields.
#[cfg(any(test, feature = "testing"))]
mod differential {
    use super::object_fields;

    /// What serde_json says of the top-level fields: the behaviour the scan must match.
    fn serde_fields(json: &str) -> Option<(Option<serde_json::Value>, Option<serde_json::Value>)> {
        #[derive(serde::Deserialize)]
        struct Raw {
            version: Option<serde_json::Value>,
            deleted: Option<serde_json::Value>,
        }
        if !json.trim_start().starts_with('{') {
            return None;
        }
        let raw: Raw = serde_json::from_str(json).ok()?;
        Some((raw.version, raw.deleted))
    }

    /// A scanned field as serde_json reads it into an `Option<Value>` (where `null` is `None`);
    /// `Err` for a number serde_json cannot hold (`1e999`), which the scan accepts as JSON.
    fn parse(raw: Option<&str>) -> Result<Option<serde_json::Value>, serde_json::Error> {
        let value = raw
            .map(serde_json::from_str::<serde_json::Value>)
            .transpose()?;
        Ok(value.filter(|v| !v.is_null()))
    }

    /// The scan may step aside (`None`), but whatever it accepts, serde_json accepts with the
    /// same two fields. A field serde_json cannot hold as a value is no number the header takes
    /// from the scan (it takes only plain integers of at most 19 digits): serde_json judges it.
    pub(in crate::item) fn agrees_with_serde(json: &str) -> bool {
        let Some(fields) = object_fields(json) else {
            return true;
        };
        match (parse(fields.version), parse(fields.deleted)) {
            (Ok(version), Ok(deleted)) => serde_fields(json) == Some((version, deleted)),
            _ => true,
        }
    }
}

#[cfg(any(test, feature = "testing"))]
pub(super) use differential::agrees_with_serde;

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents that exercise every branch: nesting, escapes, every number form, literals,
    /// whitespace everywhere it may go.
    const CORPUS: &[&str] = &[
        r#"{"key":"f","version":3,"on":true,"deleted":false}"#,
        r#"{"version":12,"deleted":true,"key":"$deleted"}"#,
        " {\n\t\"version\" : 1.0e+2 ,\r\"x\":[ ] , \"y\" : { } } \n",
        r#"{"a":[1,-0,0.5,-12.25e-3,4E7,{"b":[null,true,false,"s\"\\\/\b\f\n\r\t\u00e9"]}],"version":7}"#,
        r#"{"rules":[{"clauses":[{"values":["a","b"],"negate":false}],"rollout":{"variations":[{"variation":0,"weight":25000}]}}],"version":2,"deleted":null}"#,
        r#"{"name":"caf\u00e9 ünïcödé ✓","version":4}"#,
        r#"{}"#,
        r#"{"version":[1]}"#,
        r#"{"deleted":"yes","version":1}"#,
    ];

    #[test]
    fn accepts_every_corpus_document_as_serde_json_does() {
        for json in CORPUS {
            assert!(object_fields(json).is_some(), "stepped aside: {json}");
            assert!(agrees_with_serde(json), "{json}");
        }
    }

    #[test]
    fn finds_only_top_level_fields() {
        let json = r#"{"rules":[{"version":99,"deleted":true}],"version": 4 ,"deleted":false}"#;
        assert_eq!(
            object_fields(json),
            Some(Fields {
                version: Some("4"),
                deleted: Some("false"),
            })
        );
    }

    #[test]
    fn a_string_stop_is_found_and_named_wherever_it_falls() {
        // Every stop byte at every place in a run longer than a word, after every other stop
        // byte and the bytes a borrow could mistake for one, against a byte-by-byte look.
        let stops = [b'"', b'\\', 0x00, 0x1f];
        let neighbours = [
            b'"', b'\\', 0x00, 0x1f, 0x20, b'!', b'#', b']', 0x7f, 0x80, 0xe9,
        ];
        for len in 1..20 {
            for at in 0..len {
                for &stop in &stops {
                    for &after in &neighbours {
                        let mut run = vec![b'a'; len + 1];
                        run[at] = stop;
                        run[len] = after;
                        let naive = run
                            .iter()
                            .position(|c| matches!(c, b'"' | b'\\' | 0..0x20))
                            .map(|at| (at, run[at] == b'"'));
                        assert_eq!(next_string_stop(&run, 0), naive, "{run:?}");
                    }
                }
            }
        }
        assert_eq!(next_string_stop(b"abcdefghijk", 0), None);
    }

    #[test]
    fn steps_aside_for_what_serde_must_judge() {
        for json in [
            r#"{"vers\u0069on":1}"#,
            r#"{"version":1,"version":2}"#,
            r#"{"deleted":true,"deleted":true,"version":1}"#,
            "[1]",
            "",
            "{",
            r#"{"version":01}"#,
            r#"{"version":1.}"#,
            r#"{"version":.5}"#,
            r#"{"version":1e}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            "{\"a\":\"tab\tinside\"}",
            r#"{"a":tru}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"version":1} x"#,
            r#"{"a":[}"#,
            r#"{"a":{]}"#,
        ] {
            assert_eq!(object_fields(json), None, "{json}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(object_fields(&deep), None);
        let allowed = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(object_fields(&allowed).is_some());
        // Objects and arrays in turn, 120 deep: each closer must match its opener at every
        // depth the bitset holds.
        let nested = |closers: &dyn Fn(usize) -> &'static str| {
            let open: String = (0..120_usize)
                .map(|d| if d.is_multiple_of(2) { "[" } else { r#"{"k":"# })
                .collect();
            let close: String = (0..120).rev().map(closers).collect();
            format!(r#"{{"a":{open}1{close},"version":1}}"#)
        };
        let right = |d: usize| if d.is_multiple_of(2) { "]" } else { "}" };
        assert!(object_fields(&nested(&right)).is_some());
        for wrong_at in [0, 1, 59, 118, 119] {
            let json = nested(&|d| {
                if d == wrong_at {
                    right(d + 1)
                } else {
                    right(d)
                }
            });
            assert_eq!(object_fields(&json), None, "closer {wrong_at} swapped");
        }
    }

    /// Every single-byte deletion, duplication and replacement (by each byte that means
    /// something to JSON) of every corpus document, and every truncation.
    #[test]
    fn never_accepts_what_serde_json_rejects_in_mutated_documents() {
        const REPLACEMENTS: &[u8] = b"\"\\{}[],: 0-+.eE9atfnu/\n\t\x01\x1f";
        let mut checked = 0;
        let mut accepted = 0;
        let mut check = |bytes: Vec<u8>| {
            if let Ok(json) = String::from_utf8(bytes) {
                assert!(
                    agrees_with_serde(&json),
                    "disagrees with serde_json: {json:?}"
                );
                checked += 1;
                accepted += usize::from(object_fields(&json).is_some());
            }
        };
        for json in CORPUS {
            let original = json.as_bytes();
            for at in 0..=original.len() {
                check(original[..at].to_vec());
                if at == original.len() {
                    continue;
                }
                let mut deleted = original.to_vec();
                deleted.remove(at);
                check(deleted);
                let mut doubled = original.to_vec();
                doubled.insert(at, original[at]);
                check(doubled);
                for &byte in REPLACEMENTS {
                    let mut replaced = original.to_vec();
                    replaced[at] = byte;
                    check(replaced);
                }
            }
        }
        // The test means something only if many mutants are valid JSON the scan accepts.
        assert!(checked > 10_000 && accepted > 1_000, "{checked} {accepted}");
    }
}
