//! Refusing a `tools/call` whose arguments hold a number the gateway would round.
//!
//! serde_json rounds silently while parsing (an integer beyond 64 bits, a fraction no `f64`
//! holds), and an approval is bound to what was parsed; so both fronts hand the raw message
//! here, and the raw text of `params.arguments` is read again before the call goes anywhere.
//! Only `tools/call` requests with arguments pay for it: one more pass over the body.

use crate::canonical::{self, NotExact};
use crate::jsonrpc;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Why a call's arguments cannot be bound exactly.
#[derive(Debug, thiserror::Error)]
pub enum InexactArguments {
    /// A number that would be rounded; the message names it by its pointer from `params`.
    #[error("arguments{pointer}: {0}", pointer = .0.pointer)]
    Number(#[from] NotExact),
    /// The raw text does not read as one `params.arguments` (a repeated key): what was parsed
    /// is not certainly what was sent.
    #[error("the arguments cannot be bound exactly: {0}")]
    Ambiguous(#[from] serde_json::Error),
}

/// Checks `message`, parsed from `raw`: a `tools/call`'s arguments must hold every number
/// exactly (see [`canonical::exact`]). Other messages pass untouched.
pub fn check_call(raw: &[u8], message: &Value) -> Result<(), InexactArguments> {
    let has_arguments = jsonrpc::params(message)
        .and_then(|p| p.get("arguments"))
        .is_some_and(|a| !a.is_null());
    if jsonrpc::method(message) != Some("tools/call") || !has_arguments {
        return Ok(());
    }
    let arguments = serde_json::from_slice::<Message<'_>>(raw)?
        .params
        .map(|params| serde_json::from_str::<Params<'_>>(params.get()))
        .transpose()?
        .and_then(|params| params.arguments);
    if let Some(arguments) = arguments {
        canonical::exact::check(arguments.get())?;
    }
    Ok(())
}

/// The raw shape of a request, down to its arguments. A repeated member is an error here,
/// where serde_json's `Value` would silently keep the last.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(), String> {
        let message: Value = serde_json::from_str(raw).unwrap();
        check_call(raw.as_bytes(), &message).map_err(|e| e.to_string())
    }

    #[test]
    fn inexact_arguments_are_named_by_pointer() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":"pay","arguments":{"to":"x","amount":123456789012345678901234567890}}}"#;
        assert_eq!(
            check(call).unwrap_err(),
            "arguments/amount: 123456789012345678901234567890 is too large to bind exactly (integers must fit in 64 bits)"
        );
        let call =
            r#"{"method":"tools/call","params":{"arguments":{"rate":[0.10000000000000001]}}}"#;
        assert_eq!(
            check(call).unwrap_err(),
            "arguments/rate/0: 0.10000000000000001 is too precise to bind exactly (the nearest 64-bit float is 0.1)"
        );
    }

    #[test]
    fn exact_arguments_and_other_messages_pass() {
        for ok in [
            r#"{"method":"tools/call","params":{"arguments":{"a":18446744073709551615,"b":1.5}}}"#,
            r#"{"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"method":"tools/call","params":{"arguments":null}}"#,
            r#"{"method":"tools/list","params":{"arguments":{"n":123456789012345678901234567890}}}"#,
            r#"{"method":"tools/call","params":{"_meta":{"n":123456789012345678901234567890},"arguments":{}}}"#,
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn escaped_or_repeated_names_do_not_hide_the_arguments() {
        let escaped = r#"{"method":"tools/call","p\u0061rams":{"\u0061rguments":{"n":99999999999999999999}}}"#;
        assert!(check(escaped).unwrap_err().starts_with("arguments/n: "));
        let repeated =
            r#"{"method":"tools/call","params":{"arguments":{"n":1},"arguments":{"n":1e-999}}}"#;
        assert!(
            check(repeated)
                .unwrap_err()
                .starts_with("the arguments cannot be bound exactly: duplicate field `arguments`")
        );
        let repeated = r#"{"method":"tools/call","params":{"arguments":{}},"params":{"arguments":{"n":0.30000000000000001}}}"#;
        assert!(
            check(repeated)
                .unwrap_err()
                .contains("duplicate field `params`")
        );
    }
}
