//! Canonical JSON: RFC 8785 (JCS) with exact 64-bit integers.
//!
//! The bytes are JCS's (object keys sorted by UTF-16 code units, JCS string escaping, no
//! whitespace) with one deliberate difference: an integer serde_json holds as `i64` or `u64` is
//! written as its exact decimal digits. JCS sends every number through an IEEE 754 double, so
//! 9007199254740992 and 9007199254740993 would share one form, and one digest. Other numbers
//! (`f64`) are written in ECMAScript's shortest form, as JCS writes them. For a value whose
//! integers all lie within ±2^53 the output is byte for byte JCS's.
//!
//! What a value holds is only as exact as what was parsed into it: [`exact`] checks raw JSON
//! text for numbers serde_json would round.

pub mod exact;

pub use exact::NotExact;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// The canonical JSON text of `value`.
pub fn to_string(value: &Value) -> String {
    String::from_utf8(to_vec(value)).expect("canonical JSON is UTF-8")
}

/// The canonical JSON bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_value(&mut out, value);
    out
}

/// Lowercase hex SHA-256 of the canonical bytes of `value`.
pub fn sha256_hex(value: &Value) -> String {
    hex::encode(Sha256::digest(to_vec(value)))
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// Integers exactly; doubles as ECMAScript's `Number.prototype.toString` (RFC 8785 §3.2.2.3).
fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        // serde_json holds no NaN or infinity (without `arbitrary_precision`, which is off).
        let f = n.as_f64().expect("a serde_json number is u64, i64 or f64");
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
    }
}

/// Members sorted by their names' UTF-16 code units (RFC 8785 §3.2.3).
fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push(b'{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, name);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// A string as RFC 8785 §3.2.2.2 writes it: `"` and `\` escaped, the short escapes where JSON
/// has one, other control characters as `\u00xx`, everything else as it is.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(hex::encode([b]).as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jcs(value: &Value) -> String {
        serde_json_canonicalizer::to_string(value).unwrap()
    }

    #[test]
    fn integers_beyond_2_53_are_written_exactly() {
        for (value, text) in [
            (json!(9_007_199_254_740_992_u64), "9007199254740992"),
            (json!(9_007_199_254_740_993_u64), "9007199254740993"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(i64::MAX), "9223372036854775807"),
            (json!(-9_007_199_254_740_993_i64), "-9007199254740993"),
        ] {
            assert_eq!(to_string(&value), text);
        }
        assert_ne!(
            sha256_hex(&json!({"amount": 9_007_199_254_740_992_u64})),
            sha256_hex(&json!({"amount": 9_007_199_254_740_993_u64})),
        );
    }

    #[test]
    fn doubles_are_written_as_ecmascript_does() {
        for (value, text) in [
            (json!(1.0), "1"),
            (json!(1.5), "1.5"),
            (json!(-0.0), "0"),
            (json!(0.1), "0.1"),
            (json!(1e21), "1e+21"),
            (json!(1e20), "100000000000000000000"),
            (json!(1e-7), "1e-7"),
            (json!(0.000001), "0.000001"),
            (json!(4.5e-324), "5e-324"),
            (json!(1.7976931348623157e308), "1.7976931348623157e+308"),
        ] {
            assert_eq!(to_string(&value), text, "{value}");
        }
    }

    /// The examples of RFC 8785 §3.2.2.3 (numbers) and §3.2.3 (sorting and strings).
    #[test]
    fn rfc_8785_examples() {
        let numbers: Value = serde_json::from_str(
            r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001]}"#,
        )
        .unwrap();
        assert_eq!(
            to_string(&numbers),
            r#"{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}"#
        );
        let strings = json!({"string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/"});
        assert_eq!(
            to_string(&strings),
            "{\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
        let sorting: Value = serde_json::from_str(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
                "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let order: Vec<String> = {
            let canonical: Value = serde_json::from_str(&to_string(&sorting)).unwrap();
            canonical
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            order,
            [
                "Carriage Return",
                "One",
                "Control",
                "Latin Small Letter O With Diaeresis",
                "Euro Sign",
                "Emoji: Grinning Face",
                "Hebrew Letter Dalet With Dagesh",
            ]
        );
        assert_eq!(to_string(&sorting), jcs(&sorting));
    }

    #[test]
    fn keys_sort_by_utf16_code_units_not_bytes() {
        // U+FB33 is one code unit (0xFB33); U+1F600 is a surrogate pair starting 0xD83D. In
        // UTF-8 the emoji sorts last (0xF0 > 0xEF); in UTF-16 it sorts first.
        let value = json!({"\u{fb33}": 1, "\u{1f600}": 2});
        assert_eq!(to_string(&value), "{\"\u{1f600}\":2,\"\u{fb33}\":1}");
    }

    #[test]
    fn strings_are_escaped_as_jcs_escapes_them() {
        let value = json!("x\u{0}\u{1}\u{7f}\u{2028}é\"\\/\u{8}\u{c}\n\r\t\u{1f}");
        assert_eq!(
            to_string(&value),
            "\"x\\u0000\\u0001\u{7f}\u{2028}é\\\"\\\\/\\b\\f\\n\\r\\t\\u001f\""
        );
        assert_eq!(to_string(&value), jcs(&value));
    }

    #[test]
    fn the_digest_is_hex_sha256_of_the_canonical_bytes() {
        let value = json!({"b": 1, "a": "x"});
        assert_eq!(
            sha256_hex(&value),
            hex::encode(Sha256::digest(br#"{"a":"x","b":1}"#))
        );
    }

    /// Below 2^53 this is JCS, byte for byte, over many varied values.
    #[test]
    fn equals_jcs_within_2_53() {
        let mut rng = Lcg(0x5eed);
        for _ in 0..2_000 {
            let value = rng.value(3);
            assert_eq!(to_string(&value), jcs(&value), "{value}");
        }
    }

    /// A small deterministic generator of JSON values (no randomness crate needed).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn value(&mut self, depth: u32) -> Value {
            let kinds = if depth == 0 { 6 } else { 8 };
            match self.below(kinds) {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 1),
                2 => {
                    // Integers up to 2^53 in magnitude, small and large.
                    let magnitude = self.below(1 << 53) >> self.below(53);
                    let n = magnitude as i64;
                    json!(if self.below(2) == 1 { -n } else { n })
                }
                3 => {
                    let f = f64::from_bits(self.next() << 11 | self.next() & 0x7ff);
                    if f.is_finite() { json!(f) } else { json!(0.5) }
                }
                4 => {
                    let scale = 10f64.powi(self.below(40) as i32 - 20);
                    json!((self.below(1_000_000) as f64) * scale)
                }
                5 => Value::String(self.string()),
                6 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
                _ => Value::Object(
                    (0..self.below(5))
                        .map(|_| (self.string(), self.value(depth - 1)))
                        .collect(),
                ),
            }
        }

        fn string(&mut self) -> String {
            const ALPHABET: &[char] = &[
                'a',
                'B',
                '0',
                ' ',
                '"',
                '\\',
                '/',
                '\u{0}',
                '\u{1f}',
                '\u{7f}',
                '\n',
                'é',
                '€',
                '\u{2028}',
                '\u{e000}',
                '\u{fb33}',
                '\u{ffff}',
                '😀',
                '\u{10ffff}',
            ];
            (0..self.below(6))
                .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
                .collect()
        }
    }
}
