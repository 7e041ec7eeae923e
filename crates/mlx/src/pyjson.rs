//! JSON as Python's `json.dump(value, indent=4)` writes it, which is how mlx_lm writes
//! `config.json` and the index (`docs/mlx-format.md` §3–4): four spaces per level, `", "`
//! and `": "` separators, empty containers as `[]` and `{}`, non-ASCII escaped as `\uXXXX`,
//! floats as Python's `repr` (`1e-05`, `500000.0`), no trailing newline. Keys keep the
//! order the value holds them in.

use serde_json::Value;

/// `value` as Python's `json.dumps(value, indent=4)`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out);
    out
}

fn indent(level: usize, out: &mut String) {
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', 4 * level));
}

fn write_value(value: &Value, level: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(s, out),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                write_value(item, level + 1, out);
            }
            indent(level, out);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(level + 1, out);
                write_string(key, out);
                out.push_str(": ");
                write_value(item, level + 1, out);
            }
            indent(level, out);
            out.push('}');
        }
    }
}

/// A string with Python's `ensure_ascii` escapes.
fn write_string(s: &str, out: &mut String) {
    out.push_str(&quoted(s, true));
}

/// `s` as a JSON string: `"`, `\\` and control characters escaped (the escapes Python's
/// `json` and nlohmann's both use), and with `ascii` every non-ASCII character as
/// `\uXXXX` (UTF-16 units), as Python's `ensure_ascii`.
pub fn quoted(s: &str, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Python's `repr` of a float: the shortest digits that read back, positional when the
/// decimal point falls within `-4 < point <= 16` (with `.0` on whole numbers), else
/// `d.ddde±XX`.
pub fn float_repr(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into();
    }
    // `{:e}` gives the shortest round-trip digits: `-d.ddde-5`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exp + 1;
    if -4 < point && point <= 16 {
        let n = digits.len() as i32;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        return format!("{sign}{body}");
    }
    let (first, rest) = digits.split_at_checked(1).unwrap_or(("0", ""));
    let rest = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{first}{rest}e{esign}{:02}", exp.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_as_python_writes_them() {
        for (x, want) in [
            (1e-5, "1e-05"),
            (1e-6, "1e-06"),
            (0.0001, "0.0001"),
            (500000.0, "500000.0"),
            (0.02, "0.02"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (1.5e-7, "1.5e-07"),
            (2.0f64.powi(70), "1.1805916207174113e+21"),
        ] {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn nesting_and_escapes_are_pythons() {
        let v: Value = serde_json::from_str(r#"{"a": [1, {"b": null}], "e": [], "é": "x\"y"}"#)
            .unwrap_or_default();
        let want = "{\n    \"a\": [\n        1,\n        {\n            \"b\": null\n        }\n    ],\n    \"e\": [],\n    \"\\u00e9\": \"x\\\"y\"\n}";
        assert_eq!(dumps(&v), want);
    }
}
