//! RFC 8785 JSON Canonicalization Scheme (JCS), for the values keyledger signs.
//!
//! Entry bytes are the JCS form of an event object, so that any verifier (Python's
//! `rfc8785`, for one) can rebuild the exact bytes that were signed from the parsed JSON.
//! keyledger's events hold no floating-point numbers, so this canonicaliser accepts only
//! integers and refuses floats outright rather than carry ECMAScript's number formatting:
//! a float reaching the log is a bug, and failing loudly is better than signing something a
//! verifier might render differently.
//!
//! Invariants: object members are sorted by their names as UTF-16 code units (RFC 8785
//! §3.2.3), strings are escaped exactly as ECMAScript's `JSON.stringify` does (§3.2.2.2), and
//! no whitespace is emitted.

use serde::Serialize;
use serde_json::Value;

/// Why a value has no canonical form here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JcsError {
    /// A non-integer number: the ledger's formats have none, so one is refused.
    #[error("floating-point numbers are not allowed in canonical ledger JSON")]
    Float,
    /// The value could not be turned into JSON at all.
    #[error("value is not representable as JSON: {0}")]
    NotJson(String),
}

/// Canonical bytes of any serialisable value.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JcsError> {
    let value = serde_json::to_value(value).map_err(|e| JcsError::NotJson(e.to_string()))?;
    canonicalize(&value)
}

/// Canonical bytes of a JSON value.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), JcsError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(JcsError::Float);
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // RFC 8785 §3.2.3: sort by UTF-16 code units, which differs from UTF-8 byte
            // order for characters above U+FFFF.
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, name);
                out.push(b':');
                write_value(out, member)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{0C}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test input is JSON");
        String::from_utf8(canonicalize(&value).expect("canonical")).expect("utf-8")
    }

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 §3.2.3: members sorted by UTF-16 code units.
        let input = r#"{
            "\u20ac": "Euro Sign",
            "\r": "Carriage Return",
            "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\ud83d\ude00": "Emoji: Grinning Face",
            "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                        \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
                        \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon(input), expected);
    }

    #[test]
    fn rfc8785_string_escaping() {
        // RFC 8785 §3.2.2.2 and Appendix B: control characters, quotes and backslashes.
        let input = r#"{"s":"\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"\/","t":"\u0008\u0009\u000c\u000d\u001f\u007f\u2028"}"#;
        let expected = "{\"s\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\",\"t\":\"\\b\\t\\f\\r\\u001f\u{7f}\u{2028}\"}";
        assert_eq!(canon(input), expected);
    }

    #[test]
    fn rfc8785_structure_example_without_floats() {
        // RFC 8785 §3.2.2 example, with its numbers replaced by integers (floats are refused).
        let input = r#"{ "literals": [null, true, false], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "numbers": [333333333, 4, 2e0, 0, -0] }"#;
        let value: Value = serde_json::from_str(input).expect("json");
        assert_eq!(canonicalize(&value), Err(JcsError::Float));
        let input = r#"{ "numbers": [333333333, 4, 2, 0, -1, 18446744073709551615], "literals": [null, true, false] }"#;
        assert_eq!(
            canon(input),
            r#"{"literals":[null,true,false],"numbers":[333333333,4,2,0,-1,18446744073709551615]}"#
        );
    }

    #[test]
    fn nested_objects_are_sorted_and_compact() {
        let value = json!({"b": {"z": 1, "a": [ {"y": null, "x": "1"} ]}, "a": "s"});
        assert_eq!(
            String::from_utf8(canonicalize(&value).expect("canonical")).expect("utf-8"),
            r#"{"a":"s","b":{"a":[{"x":"1","y":null}],"z":1}}"#
        );
    }

    #[test]
    fn floats_are_refused() {
        assert_eq!(canonicalize(&json!({"x": 1.5})), Err(JcsError::Float));
    }
}
