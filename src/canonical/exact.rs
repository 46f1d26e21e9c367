//! Which number literals of raw JSON text the gateway holds exactly.
//!
//! serde_json rounds silently: an integer literal beyond 64 bits becomes an `f64`, and so does
//! every literal with a fraction or an exponent. A literal is exact when
//! - it is an integer (no fraction, no exponent) that fits `i64` or `u64`, or
//! - its decimal value equals that of the `f64` it parses to, printed in shortest form (`1.0`,
//!   `1.5`, `0.1`, `1e3` are exact; `0.10000000000000001`, `9007199254740993.0`, `1e400` are
//!   not).
//!
//! [`check`] walks the text once, skipping strings, and names the first inexact number by its
//! JSON pointer.

use std::fmt;

/// A number that would not survive parsing exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{literal} {reason}")]
pub struct NotExact {
    /// Where the number is, as an RFC 6901 JSON pointer into the checked text (`""` for the
    /// text itself, else `/key/0/...`).
    pub pointer: String,
    /// The number as written.
    pub literal: String,
    pub reason: Reason,
}

/// Why a number is not exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// An integer literal beyond `i64` and `u64`.
    IntegerTooLarge,
    /// Beyond the range of an `f64`.
    OutOfRange,
    /// Between two `f64`s; `nearest` is the one it would become, in shortest form.
    TooPrecise { nearest: String },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::IntegerTooLarge => {
                f.write_str("is too large to bind exactly (integers must fit in 64 bits)")
            }
            Reason::OutOfRange => {
                f.write_str("is out of range (numbers must fit in a 64-bit float)")
            }
            Reason::TooPrecise { nearest } => write!(
                f,
                "is too precise to bind exactly (the nearest 64-bit float is {nearest})"
            ),
        }
    }
}

/// Checks every number in `json`, which must be valid JSON (e.g. text serde_json has parsed).
pub fn check(json: &str) -> Result<(), NotExact> {
    let bytes = json.as_bytes();
    // The way down to the current value: raw (still escaped) member names and array indexes.
    let mut path: Vec<Step<'_>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i);
                let after = skip_whitespace(bytes, end);
                if bytes.get(after) == Some(&b':') {
                    if let Some(Step::Member(name)) = path.last_mut() {
                        *name = &json[i + 1..end - 1];
                    }
                    i = after + 1;
                } else {
                    i = end;
                }
            }
            b'{' => {
                path.push(Step::Member(""));
                i += 1;
            }
            b'[' => {
                path.push(Step::Index(0));
                i += 1;
            }
            b'}' | b']' => {
                path.pop();
                i += 1;
            }
            b',' => {
                if let Some(Step::Index(n)) = path.last_mut() {
                    *n += 1;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(bytes, i);
                let literal = &json[i..end];
                literal_is_exact(literal).map_err(|reason| NotExact {
                    pointer: pointer(&path),
                    literal: literal.to_owned(),
                    reason,
                })?;
                i = end;
            }
            // Whitespace, `:`, and the letters of true, false and null.
            _ => i += 1,
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Member(&'a str),
    Index(usize),
}

/// The index just past the string that opens at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn number_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes
        .get(i)
        .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        i += 1;
    }
    i
}

/// The RFC 6901 pointer of `path`, member names unescaped.
fn pointer(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        out.push('/');
        match step {
            Step::Index(n) => out.push_str(&n.to_string()),
            Step::Member(raw) => {
                let name = serde_json::from_str::<String>(&format!("\"{raw}\""))
                    .unwrap_or_else(|_| (*raw).to_owned());
                out.push_str(&name.replace('~', "~0").replace('/', "~1"));
            }
        }
    }
    out
}

/// Whether one JSON number literal is held exactly (see the module documentation).
fn literal_is_exact(literal: &str) -> Result<(), Reason> {
    if !literal.contains(['.', 'e', 'E']) {
        // 18 characters hold at most 18 digits, well inside i64: no parse needed.
        if literal.len() <= 18 || literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok() {
            return Ok(());
        }
        return Err(Reason::IntegerTooLarge);
    }
    let float: f64 = literal.parse().map_err(|_| Reason::OutOfRange)?;
    if !float.is_finite() {
        return Err(Reason::OutOfRange);
    }
    let nearest = ryu_js::Buffer::new().format_finite(float).to_owned();
    if Decimal::of(literal) == Decimal::of(&nearest) {
        Ok(())
    } else {
        Err(Reason::TooPrecise { nearest })
    }
}

/// A decimal number as `(-1)^negative × 0.digits × 10^exponent`, normalized: no leading or
/// trailing zeros in `digits`, and zero as no digits (of either sign).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// Reads a JSON number literal, or ECMAScript's shortest form of a double (same grammar
    /// plus an optional `+` in the exponent).
    fn of(text: &str) -> Decimal {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exp) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], parse_exponent(&text[at + 1..])),
            None => (text, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all = int.bytes().chain(frac.bytes());
        let leading = all.clone().take_while(|&d| d == b'0').count();
        let mut digits: Vec<u8> = all.skip(leading).collect();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Decimal {
                negative: false,
                digits,
                exponent: 0,
            };
        }
        // 0.digits × 10^exponent: the point sits after the integer digits that were not
        // leading zeros, moved by the written exponent.
        let exponent = exp.saturating_add(int.len() as i64 - leading as i64);
        Decimal {
            negative,
            digits,
            exponent,
        }
    }
}

/// An exponent's value, saturating (such a literal is not a finite double anyway).
fn parse_exponent(text: &str) -> i64 {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let magnitude = digits.bytes().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    if negative { -magnitude } else { magnitude }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_must_fit_64_bits() {
        for ok in [
            "0",
            "-0",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for too_large in [
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ] {
            let e = check(too_large).unwrap_err();
            assert_eq!(e.reason, Reason::IntegerTooLarge, "{too_large}");
        }
    }

    #[test]
    fn fractions_and_exponents_must_be_doubles_exactly() {
        for ok in [
            "1.0",
            "1.5",
            "0.1",
            "1e3",
            "1E+3",
            "-2.50e-1",
            "0.0",
            "-0.0",
            "0e999",
            "1e21",
            "5e-324",
            "100e-2",
            "0.000001",
            "1.7976931348623157e308",
            "9007199254740992.0",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let nearest = |literal: &str| match check(literal).unwrap_err().reason {
            Reason::TooPrecise { nearest } => nearest,
            other => panic!("{literal}: {other:?}"),
        };
        assert_eq!(nearest("0.10000000000000001"), "0.1");
        assert_eq!(nearest("9007199254740993.0"), "9007199254740992");
        assert_eq!(nearest("1e-400"), "0");
        assert_eq!(nearest("0.3000000000000000444"), "0.30000000000000004");
        for out_of_range in ["1e400", "-1.8e308", "1e99999999999999999999999"] {
            assert_eq!(
                check(out_of_range).unwrap_err().reason,
                Reason::OutOfRange,
                "{out_of_range}"
            );
        }
    }

    #[test]
    fn the_error_names_the_number_by_json_pointer() {
        let e = check(r#"{"amount": 123456789012345678901234567890}"#).unwrap_err();
        assert_eq!(e.pointer, "/amount");
        assert_eq!(
            e.to_string(),
            "123456789012345678901234567890 is too large to bind exactly (integers must fit in 64 bits)"
        );
        let text = r#" { "a" : [ 1 , {"x": 2} , 3 ] ,
            "m~/\u0041\"" : {"n": [true, null, false, "9e999", 0.10000000000000001]}}"#;
        let e = check(text).unwrap_err();
        assert_eq!(e.pointer, "/m~0~1A\"/n/4");
        assert_eq!(e.literal, "0.10000000000000001");
        assert_eq!(check("1e400").unwrap_err().pointer, "");
        assert_eq!(
            check(r#"[[], {}, [1, 2, 1e999]]"#).unwrap_err().pointer,
            "/2/2"
        );
    }

    #[test]
    fn numbers_inside_strings_are_not_numbers() {
        let text = r#"{"1e999": "123456789012345678901234567890", "q\"1e999": "\\\"1e999"}"#;
        assert_eq!(check(text), Ok(()));
    }
}
