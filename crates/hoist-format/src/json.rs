//! JSON bytes exactly as Go's `encoding/json` writes them.
//!
//! `serde_json` differs from Go in string escaping (Go escapes U+2028 and
//! U+2029 always, and `<`, `>`, `&` unless told not to) and in float
//! notation (Go switches to `1e+21` / `1e-7`), and both show up in
//! `docker inspect` and `{{json .}}` output.

use serde_json::Value;

/// How to write JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style<'a> {
    /// Go's `SetEscapeHTML`: `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`.
    pub(crate) escape_html: bool,
    /// `Some(unit)` writes Go's `MarshalIndent(v, "", unit)` layout.
    pub(crate) indent: Option<&'a str>,
}

/// `value` as Go would encode it. Errors on NaN and infinities, which Go
/// refuses (`json: unsupported value: NaN`).
pub(crate) fn encode(value: &Value, style: Style<'_>) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value, style, 0)?;
    Ok(out)
}

fn write_value(
    out: &mut String,
    value: &Value,
    style: Style<'_>,
    depth: usize,
) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(int), _, _) => out.push_str(&int.to_string()),
            (_, Some(uint), _) => out.push_str(&uint.to_string()),
            (_, _, Some(float)) => out.push_str(&format_float(float)?),
            _ => out.push_str(&number.to_string()),
        },
        Value::String(text) => write_string(out, text, style.escape_html),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, style, depth + 1);
                write_value(out, item, style, depth + 1)?;
            }
            if !items.is_empty() {
                newline(out, style, depth);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, style, depth + 1);
                write_string(out, key, style.escape_html);
                out.push(':');
                if style.indent.is_some() {
                    out.push(' ');
                }
                write_value(out, item, style, depth + 1)?;
            }
            if !map.is_empty() {
                newline(out, style, depth);
            }
            out.push('}');
        }
    }
    Ok(())
}

fn newline(out: &mut String, style: Style<'_>, depth: usize) {
    if let Some(unit) = style.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(unit);
        }
    }
}

fn write_string(out: &mut String, text: &str, escape_html: bool) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' if escape_html => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's float encoding: shortest round-trip digits, plain notation for
/// magnitudes in [1e-6, 1e21), otherwise `1e+21` / `1e-7`.
fn format_float(value: f64) -> Result<String, String> {
    if !value.is_finite() {
        let name = if value.is_nan() {
            "NaN"
        } else if value > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        };
        return Err(format!("json: unsupported value: {name}"));
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-6..1e21).contains(&magnitude) {
        return Ok(format!("{value}"));
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    Ok(match exponent.strip_prefix('-') {
        Some(negative) => format!("{mantissa}e-{negative}"),
        None => format!("{mantissa}e+{exponent:0>2}"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const COMPACT: Style<'static> = Style {
        escape_html: false,
        indent: None,
    };

    #[test]
    fn strings_escape_like_go() {
        let value = json!("a<b>&c\u{2028}\u{1}\t\"\\");
        assert_eq!(
            encode(&value, COMPACT).unwrap(),
            r#""a<b>&c\u2028\u0001\t\"\\""#
        );
        let html = Style {
            escape_html: true,
            indent: None,
        };
        assert_eq!(encode(&json!("a > b"), html).unwrap(), r#""a \u003e b""#);
    }

    #[test]
    fn floats_match_go() {
        for (value, expected) in [
            (1.5, "1.5"),
            (1.0, "1"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(format_float(value).unwrap(), expected);
        }
        assert!(format_float(f64::NAN).is_err());
    }

    #[test]
    fn indent_matches_marshal_indent() {
        let value = json!([{"Id": "sha256:x", "RepoTags": [], "Config": {}, "Env": ["A=1"]}]);
        let style = Style {
            escape_html: true,
            indent: Some("    "),
        };
        assert_eq!(
            encode(&value, style).unwrap(),
            "[\n    {\n        \"Id\": \"sha256:x\",\n        \"RepoTags\": [],\n        \
             \"Config\": {},\n        \"Env\": [\n            \"A=1\"\n        ]\n    }\n]"
        );
    }
}
