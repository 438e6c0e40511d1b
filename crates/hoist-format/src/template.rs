//! Go `text/template` with docker's function set, on top of `gotmpl`.
//!
//! `gotmpl` covers the language (fields, pipelines, `if`/`range`/`with`,
//! `printf`, variables). Two gaps are filled here: Go rejects a call to an
//! unknown function when *parsing* (gotmpl only when executing, which would
//! let a bad `--format` print a table header before failing), and docker's
//! functions (`json`, `split`, `join`, `title`, `lower`, `upper`, `pad`,
//! `truncate`) plus their header-row variants.

use std::sync::Arc;

use gotmpl::parse::{Expr, ListNode, Node, Parser, PipeNode};
use gotmpl::{FuncMap, MissingKey, TemplateError, Value};

use crate::Error;
use crate::json::{self, Style};

/// Go's built-in template functions.
const GO_BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// Docker's additions (`templates.basicFunctions`).
const DOCKER_FUNCTIONS: &[&str] = &[
    "json", "split", "join", "title", "lower", "upper", "pad", "truncate",
];

/// A parsed Go template with docker's functions.
///
/// Two copies are kept because docker renders a table header by running
/// the same template over the header names with most functions replaced by
/// the identity (`templates.HeaderFunctions`), and gotmpl binds functions at
/// parse time.
pub struct Template {
    rows: gotmpl::Template,
    header: gotmpl::Template,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Template").finish_non_exhaustive()
    }
}

impl Template {
    /// Parses `text` as is (no `table`/`\t` preprocessing; see
    /// [`crate::Format`] for that), for data with Go map semantics: a
    /// missing field prints `<no value>`. This is what `inspect` needs.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Self::parse_with(text, false)
    }

    /// Parses `text` for docker's typed row contexts (`images`, `history`):
    /// a field the row lacks is an error rather than `<no value>`, and
    /// `{{json .}}` on the whole row escapes `<`, `>`, `&` as `\u003c`…,
    /// because docker's rows marshal themselves with `json.Marshal`.
    pub fn parse_rows(text: &str) -> Result<Self, Error> {
        let mut template = Self::parse_with(text, true)?;
        template.rows = template.rows.missing_key(MissingKey::Error);
        Ok(template)
    }

    fn parse_with(text: &str, rows_escape_html: bool) -> Result<Self, Error> {
        check_functions(text)?;
        let rows = gotmpl::Template::new("")
            .funcs(docker_functions(rows_escape_html))
            .parse(text)
            .map_err(parse_error)?;
        let header = gotmpl::Template::new("")
            .funcs(header_functions())
            .parse(text)
            .map_err(parse_error)?;
        Ok(Self { rows, header })
    }

    /// Renders one row.
    pub fn execute(&self, data: &Value) -> Result<String, Error> {
        self.rows.execute_to_string(data).map_err(execute_error)
    }

    /// Renders the header row over `names` (field → column title). Like
    /// docker, an error stops the header where it happened instead of failing.
    pub(crate) fn execute_header(&self, names: &Value) -> String {
        let mut out = String::new();
        let _ = self.header.execute_fmt(&mut out, names);
        out
    }
}

fn parse_error(error: TemplateError) -> Error {
    let message = match error {
        // Go: `template: <name>:<line>: <message>`, and docker's name is "".
        TemplateError::Parse { line, message, .. } | TemplateError::Lex { line, message, .. } => {
            format!("template: :{line}: {message}")
        }
        other => format!("template: {other}"),
    };
    Error::Parse { message }
}

fn execute_error(error: TemplateError) -> Error {
    let message = match error {
        TemplateError::MissingKey { key } => format!("template: can't evaluate field {key}"),
        TemplateError::Exec(message) => format!("template: {message}"),
        other => format!("template: {other}"),
    };
    Error::Execute { message }
}

/// Go resolves function names while parsing; do the same over gotmpl's AST.
fn check_functions(text: &str) -> Result<(), Error> {
    let parser = Parser::new(text, "{{", "}}").map_err(parse_error)?;
    let (tree, defines) = parser.parse().map_err(parse_error)?;
    check_blocks(text)?;
    check_list(&tree)?;
    for define in &defines {
        check_list(&define.body)?;
    }
    Ok(())
}

/// gotmpl accepts a stray `{{end}}` or `{{else}}` and an unclosed `{{if}}`;
/// Go rejects them, so match `{{…}}` keywords up here.
fn check_blocks(text: &str) -> Result<(), Error> {
    let mut open: Vec<&str> = Vec::new();
    let mut line = 1;
    let mut rest = text;
    let error = |line: usize, message: &str| Error::Parse {
        message: format!("template: :{line}: {message}"),
    };
    while let Some(start) = rest.find("{{") {
        line += rest[..start].matches('\n').count();
        let action = &rest[start + 2..];
        let length = action_length(action);
        let body = &action[..length.min(action.len())];
        rest = action.get(length + 2..).unwrap_or("");
        let keyword = body
            .trim_start_matches('-')
            .trim_start()
            .split(|c: char| c.is_whitespace() || c == '-' || c == '(')
            .next()
            .unwrap_or("");
        match keyword {
            "if" | "range" | "with" | "define" | "block" => open.push(keyword),
            "end" if open.pop().is_none() => return Err(error(line, "unexpected {{end}}")),
            "else" if !matches!(open.last(), Some(&("if" | "range" | "with"))) => {
                return Err(error(line, "unexpected {{else}}"));
            }
            _ => {}
        }
        line += body.matches('\n').count();
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(error(line, "unexpected EOF"))
    }
}

/// Byte length of an action's body up to its closing `}}`, skipping quoted
/// strings and comments that may contain `}}`.
fn action_length(action: &str) -> usize {
    let bytes = action.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'}' if bytes.get(index + 1) == Some(&b'}') => return index,
            quote @ (b'"' | b'\'' | b'`') => {
                index += 1;
                while index < bytes.len() && bytes[index] != quote {
                    if bytes[index] == b'\\' && quote != b'`' {
                        index += 1;
                    }
                    index += 1;
                }
            }
            b'/' if bytes.get(index + 1) == Some(&b'*') => {
                index = action[index..]
                    .find("*/")
                    .map_or(bytes.len(), |end| index + end + 1);
            }
            _ => {}
        }
        index += 1;
    }
    bytes.len()
}

fn check_list(list: &ListNode) -> Result<(), Error> {
    list.nodes.iter().try_for_each(check_node)
}

fn check_node(node: &Node) -> Result<(), Error> {
    match node {
        Node::List(list) => check_list(list),
        Node::Action(action) => check_pipe(&action.pipe),
        Node::If(branch) | Node::Range(branch) | Node::With(branch) => {
            check_pipe(&branch.pipe)?;
            check_list(&branch.body)?;
            branch.else_body.as_ref().map_or(Ok(()), check_list)
        }
        Node::Template(template) => template.pipe.as_ref().map_or(Ok(()), check_pipe),
        Node::Define(define) => check_list(&define.body),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => Ok(()),
    }
}

fn check_pipe(pipe: &PipeNode) -> Result<(), Error> {
    pipe.commands
        .iter()
        .flat_map(|command| &command.args)
        .try_for_each(check_expr)
}

fn check_expr(expr: &Expr) -> Result<(), Error> {
    match expr {
        Expr::Identifier(position, name)
            if !GO_BUILTINS.contains(&name.as_str())
                && !DOCKER_FUNCTIONS.contains(&name.as_str()) =>
        {
            Err(Error::Parse {
                message: format!(
                    "template: :{}: function {:?} not defined",
                    position.line,
                    name.as_str()
                ),
            })
        }
        Expr::Pipe(_, pipe) => check_pipe(pipe),
        Expr::Chain(_, inner, _) => check_expr(inner),
        _ => Ok(()),
    }
}

type FunctionResult = gotmpl::Result<Value>;

fn function_error(name: &str, message: impl std::fmt::Display) -> TemplateError {
    TemplateError::Exec(format!("error calling {name}: {message}"))
}

fn arity(name: &str, args: &[Value], expected: usize) -> Result<(), TemplateError> {
    if args.len() == expected {
        return Ok(());
    }
    Err(TemplateError::Exec(format!(
        "wrong number of args for {name}: want {expected} got {}",
        args.len()
    )))
}

fn string_arg<'a>(name: &str, args: &'a [Value], index: usize) -> Result<&'a str, TemplateError> {
    args[index].as_str().ok_or_else(|| {
        TemplateError::Exec(format!(
            "wrong type for value in {name}; expected string; got {}",
            args[index].type_name()
        ))
    })
}

fn int_arg(name: &str, args: &[Value], index: usize) -> Result<i64, TemplateError> {
    match &args[index] {
        Value::Int(int) => Ok(*int),
        Value::Uint(uint) => {
            i64::try_from(*uint).map_err(|_| function_error(name, "integer overflow"))
        }
        other => Err(TemplateError::Exec(format!(
            "wrong type for value in {name}; expected int; got {}",
            other.type_name()
        ))),
    }
}

fn string_value(text: impl Into<Arc<str>>) -> Value {
    Value::String(text.into())
}

fn insert(
    map: &mut FuncMap,
    name: &str,
    function: impl Fn(&[Value]) -> FunctionResult + Send + Sync + 'static,
) {
    map.insert(name.to_owned(), Arc::new(function));
}

/// Docker's `templates.basicFunctions`. With `rows_escape_html`, a map
/// (in row data, only ever the row itself) is encoded with HTML escaping.
fn docker_functions(rows_escape_html: bool) -> FuncMap {
    let mut map = FuncMap::new();
    insert(&mut map, "json", move |args| {
        arity("json", args, 1)?;
        let value = to_json(&args[0]).map_err(|message| function_error("json", message))?;
        let style = Style {
            escape_html: rows_escape_html && matches!(args[0], Value::Map(_)),
            indent: None,
        };
        json::encode(&value, style)
            .map(string_value)
            .map_err(|message| function_error("json", message))
    });
    insert(&mut map, "split", |args| {
        arity("split", args, 2)?;
        let text = string_arg("split", args, 0)?;
        let separator = string_arg("split", args, 1)?;
        Ok(Value::List(
            split(text, separator)
                .into_iter()
                .map(string_value)
                .collect(),
        ))
    });
    insert(&mut map, "join", |args| {
        arity("join", args, 2)?;
        let separator = string_arg("join", args, 1)?;
        let joined = match &args[0] {
            Value::Nil => String::new(),
            Value::List(items) => items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(separator),
            // Go walks map values in random order, so docker sorts them.
            Value::Map(map) => {
                let mut values: Vec<String> = map.values().map(ToString::to_string).collect();
                values.sort();
                values.join(separator)
            }
            other => {
                return Err(function_error(
                    "join",
                    format!("expected slice, got {}", other.type_name()),
                ));
            }
        };
        Ok(string_value(joined))
    });
    insert(&mut map, "title", |args| {
        arity("title", args, 1)?;
        Ok(string_value(title(string_arg("title", args, 0)?)))
    });
    insert(&mut map, "lower", |args| {
        arity("lower", args, 1)?;
        Ok(string_value(string_arg("lower", args, 0)?.to_lowercase()))
    });
    insert(&mut map, "upper", |args| {
        arity("upper", args, 1)?;
        Ok(string_value(string_arg("upper", args, 0)?.to_uppercase()))
    });
    insert(&mut map, "pad", pad);
    insert(&mut map, "truncate", |args| {
        arity("truncate", args, 2)?;
        let text = string_arg("truncate", args, 0)?;
        let length = int_arg("truncate", args, 1)?;
        // Go slices bytes: `source[:length]`, panicking on a negative length.
        let length = usize::try_from(length).map_err(|_| {
            function_error("truncate", format!("slice bounds out of range [:{length}]"))
        })?;
        if text.len() < length {
            return Ok(string_value(text));
        }
        Ok(string_value(String::from_utf8_lossy(
            &text.as_bytes()[..length],
        )))
    });
    map
}

/// Docker's `templates.HeaderFunctions`: the header names pass through
/// unchanged, except `pad` which keeps the header aligned with its column.
fn header_functions() -> FuncMap {
    let mut map = FuncMap::new();
    for (name, count) in [
        ("json", 1),
        ("title", 1),
        ("lower", 1),
        ("upper", 1),
        ("split", 2),
        ("join", 2),
        ("truncate", 2),
    ] {
        insert(&mut map, name, move |args| {
            arity(name, args, count)?;
            string_arg(name, args, 0).map(string_value)
        });
    }
    insert(&mut map, "pad", pad);
    map
}

fn pad(args: &[Value]) -> FunctionResult {
    arity("pad", args, 3)?;
    let text = string_arg("pad", args, 0)?;
    let prefix = int_arg("pad", args, 1)?;
    let suffix = int_arg("pad", args, 2)?;
    if text.is_empty() {
        return Ok(string_value(""));
    }
    let spaces = |count: i64| {
        usize::try_from(count).map_err(|_| function_error("pad", "strings: negative Repeat count"))
    };
    Ok(string_value(format!(
        "{}{text}{}",
        " ".repeat(spaces(prefix)?),
        " ".repeat(spaces(suffix)?)
    )))
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn split(text: &str, separator: &str) -> Vec<String> {
    if separator.is_empty() {
        return text.chars().map(String::from).collect();
    }
    text.split(separator).map(str::to_owned).collect()
}

/// Go's deprecated `strings.Title`: upper-case the first letter of each word,
/// where words are separated by anything but letters, digits, `_` and
/// (non-space) non-ASCII characters.
fn title(text: &str) -> String {
    let is_separator = |c: char| {
        if c.is_ascii() {
            !(c.is_ascii_alphanumeric() || c == '_')
        } else {
            c.is_whitespace()
        }
    };
    let mut previous = ' ';
    text.chars()
        .flat_map(|c| {
            let word_start = is_separator(previous);
            previous = c;
            let mapped: Vec<char> = if word_start { title_case(c) } else { vec![c] };
            mapped
        })
        .collect()
}

/// Unicode title case is upper case for all but a few digraphs.
fn title_case(c: char) -> Vec<char> {
    match c {
        'ǆ' | 'ǅ' | 'Ǆ' => vec!['ǅ'],
        'ǉ' | 'ǈ' | 'Ǉ' => vec!['ǈ'],
        'ǌ' | 'ǋ' | 'Ǌ' => vec!['ǋ'],
        'ǳ' | 'ǲ' | 'Ǳ' => vec!['ǲ'],
        // Go maps rune to rune; keep a single char when Rust would expand.
        _ => {
            let upper: Vec<char> = c.to_uppercase().collect();
            if upper.len() == 1 { upper } else { vec![c] }
        }
    }
}

fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::Int(int) => serde_json::Value::from(*int),
        Value::Uint(uint) => serde_json::Value::from(*uint),
        Value::Float(float) => serde_json::Number::from_f64(*float)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("json: unsupported value: {float}"))?,
        Value::String(text) => serde_json::Value::String(text.to_string()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(map) => serde_json::Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.to_string(), to_json(item)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Function(_) => return Err("json: unsupported type: func".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, data: serde_json::Value) -> Result<String, Error> {
        Template::parse(text)?.execute(&gotmpl::to_value(&data).unwrap())
    }

    #[test]
    fn docker_functions_behave_like_go() {
        let data = serde_json::json!({
            "Name": "hello world-foo_bar", "Id": "sha256:abcdef", "Tags": ["a", "b"],
            "Labels": {"z": "1", "a": "2"}, "Empty": ""
        });
        let cases = [
            ("{{title .Name}}", "Hello World-Foo_bar"),
            ("{{upper .Name}}", "HELLO WORLD-FOO_BAR"),
            ("{{lower \"ABC\"}}", "abc"),
            ("{{pad .Id 1 2}}|", " sha256:abcdef  |"),
            ("{{pad .Empty 1 2}}|", "|"),
            ("{{truncate .Id 6}}", "sha256"),
            ("{{truncate .Id 60}}", "sha256:abcdef"),
            ("{{join .Tags \", \"}}", "a, b"),
            ("{{join .Labels \",\"}}", "1,2"),
            (
                "{{range split .Id \":\"}}[{{.}}]{{end}}",
                "[sha256][abcdef]",
            ),
            ("{{json .Tags}}", "[\"a\",\"b\"]"),
            ("{{json .Labels}}", "{\"a\":\"2\",\"z\":\"1\"}"),
            ("{{json .Name}}", "\"hello world-foo_bar\""),
            ("{{println .Id}}", "sha256:abcdef\n"),
            ("{{printf \"%.3s\" .Id}}", "sha"),
            ("{{if .Empty}}yes{{else}}no{{end}}", "no"),
            ("{{with .Id}}{{.}}{{end}}", "sha256:abcdef"),
            ("{{.Nope}}", "<no value>"),
        ];
        for (text, expected) in cases {
            assert_eq!(render(text, data.clone()).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn unknown_function_fails_at_parse_time() {
        let error = Template::parse("{{.ID}} {{nope .ID}}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "template parsing error: template: :1: function \"nope\" not defined"
        );
        let error = Template::parse("{{range .X}}\n{{.Y | nope}}{{end}}").unwrap_err();
        assert!(
            error
                .to_string()
                .contains(":2: function \"nope\" not defined"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let error = Template::parse("{{.ID").unwrap_err();
        assert_eq!(
            error.to_string(),
            "template parsing error: template: :1: unclosed action"
        );
    }

    #[test]
    fn unbalanced_blocks_are_rejected_like_go() {
        for (text, message) in [
            ("{{end}}", "template: :1: unexpected {{end}}"),
            ("{{else}}", "template: :1: unexpected {{else}}"),
            ("{{if .A}}x", "template: :1: unexpected EOF"),
            (
                "{{range .A}}\n{{end}}{{end}}",
                "template: :2: unexpected {{end}}",
            ),
        ] {
            let error = Template::parse(text).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("template parsing error: {message}")
            );
        }
        for text in [
            "{{if .A}}a{{else if .B}}b{{else}}c{{end}}",
            "{{- range .A -}}{{.}}{{- end -}}",
            "{{with .A}}{{\"}}\"}}{{end}}",
            "{{/* {{end}} */}}",
            "{{define \"x\"}}y{{end}}{{template \"x\"}}",
            "{{ end_of_line }}",
        ] {
            let result = Template::parse(text);
            assert!(
                !result
                    .as_ref()
                    .is_err_and(|error| error.to_string().contains("unexpected")),
                "{text}: {result:?}"
            );
        }
    }

    #[test]
    fn rows_reject_unknown_fields() {
        let template = Template::parse_rows("{{.Nope}}").unwrap();
        let error = template.execute(&gotmpl::to_value(&serde_json::json!({"ID": "x"})).unwrap());
        assert_eq!(
            error.unwrap_err().to_string(),
            "template parsing error: template: can't evaluate field Nope"
        );
    }

    #[test]
    fn functions_reject_wrong_types() {
        let error = render("{{upper .N}}", serde_json::json!({"N": 3})).unwrap_err();
        assert!(error.to_string().contains("expected string"), "{error}");
        let error = render("{{join .N \",\"}}", serde_json::json!({"N": "x"})).unwrap_err();
        assert!(
            error.to_string().contains("expected slice, got string"),
            "{error}"
        );
    }
}
