//! `--format` handling: docker's defaults, its preprocessing of the
//! template text, and the final layout (table or one line per row).

use std::io::Write;

use serde::Serialize;

use crate::Error;
use crate::json::{self, Style};
use crate::tabwriter::TabWriter;
use crate::template::Template;

/// `docker images` classic table.
pub const DEFAULT_IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}";
/// `docker images --digests`: DIGEST goes before IMAGE ID.
pub const DEFAULT_IMAGES_TABLE_WITH_DIGEST: &str = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}";
/// `docker history`.
pub const DEFAULT_HISTORY_TABLE: &str =
    "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";
/// `docker history -H=false`: `CREATED AT` in RFC 3339.
pub const NON_HUMAN_HISTORY_TABLE: &str =
    "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}";

const QUIET_FORMAT: &str = "{{.ID}}";
const JSON_TEMPLATE: &str = "{{json .}}";

/// Column titles of `docker images`, by field.
pub const IMAGES_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
];

/// Column titles of `docker history`, by field.
pub const HISTORY_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// How to lay out rows, decided from a `--format` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `table <template>`: a header row, then the rows, aligned in columns.
    Table(String),
    /// A bare template, one line per row.
    Raw(String),
    /// `json`: each row as one line of JSON.
    Json,
}

impl Format {
    /// Reads a `--format` value the way docker does: exactly `json` is
    /// [`Format::Json`]; anything starting with `table` is a table (even
    /// `tablefoo`); the rest is a raw template.
    ///
    /// The template text is preprocessed like docker's: the `table` prefix
    /// is removed, leading and trailing spaces (only spaces) are trimmed,
    /// and the two-character sequences `\t` and `\n` become a tab and a
    /// newline.
    pub fn parse(source: &str) -> Self {
        if source == "json" {
            return Self::Json;
        }
        match source.strip_prefix("table") {
            Some(rest) => Self::Table(preprocess(rest)),
            None => Self::Raw(preprocess(source)),
        }
    }

    /// The `docker images` format for `--format source` (empty or `table`
    /// for the default table), `-q` and `--digests`; docker's
    /// `NewImageFormat`.
    ///
    /// The v29 tree view (no `--format`, `-q`, `--digests`, `--no-trunc`)
    /// is not a template and is the caller's to choose before this.
    pub fn images(source: &str, quiet: bool, digests: bool) -> Self {
        match source {
            "" | "table" if quiet => Self::parse(QUIET_FORMAT),
            "" | "table" if digests => Self::parse(DEFAULT_IMAGES_TABLE_WITH_DIGEST),
            "" | "table" => Self::parse(DEFAULT_IMAGES_TABLE),
            "raw" if quiet => Self::parse("image_id: {{.ID}}"),
            "raw" if digests => Self::parse(
                "repository: {{ .Repository }}\ntag: {{.Tag}}\ndigest: {{.Digest}}\nimage_id: {{.ID}}\ncreated_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n",
            ),
            "raw" => Self::parse(
                "repository: {{ .Repository }}\ntag: {{.Tag}}\nimage_id: {{.ID}}\ncreated_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n",
            ),
            // A custom table still gets the digest column it asked for.
            custom if digests && custom.starts_with("table") && !custom.contains("{{.Digest}}") => {
                Self::parse(&format!("{custom}\t{{{{.Digest}}}}"))
            }
            custom => Self::parse(custom),
        }
    }

    /// The `docker history` format for `--format source` (empty or `table`
    /// for the default), `-q` and `-H/--human`; docker's `newHistoryFormat`.
    pub fn history(source: &str, quiet: bool, human: bool) -> Self {
        match source {
            "" | "table" if quiet => Self::parse(QUIET_FORMAT),
            "" | "table" if !human => Self::parse(NON_HUMAN_HISTORY_TABLE),
            "" | "table" => Self::parse(DEFAULT_HISTORY_TABLE),
            custom => Self::parse(custom),
        }
    }

    /// The Go template this format runs for each row.
    pub fn template_text(&self) -> &str {
        match self {
            Self::Table(text) | Self::Raw(text) => text,
            Self::Json => JSON_TEMPLATE,
        }
    }
}

fn preprocess(text: &str) -> String {
    text.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// Renders `rows` in `format` to `out`, exactly as docker's formatter.
///
/// Each row must serialize to a map whose keys are the field names the
/// template uses (`ID`, `Repository`, …); a template naming any other field
/// fails, as in docker. For a table, the header row comes from running the
/// same template over `headers` (field → column title), and is printed even
/// when there are no rows. Nothing is written if any row fails.
pub fn render<T: Serialize>(
    format: &Format,
    headers: &[(&str, &str)],
    rows: &[T],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let template = Template::parse_rows(format.template_text())?;
    let mut body = String::new();
    for (index, row) in rows.iter().enumerate() {
        let data = gotmpl::to_value(row).map_err(|error| Error::Data {
            index,
            message: error.to_string(),
        })?;
        body.push_str(&template.execute(&data)?);
        body.push('\n');
    }

    let Format::Table(_) = format else {
        return out.write_all(body.as_bytes()).map_err(Error::Write);
    };
    let names = gotmpl::Value::Map(std::sync::Arc::new(
        headers
            .iter()
            .map(|&(field, title)| (field.into(), gotmpl::Value::String(title.into())))
            .collect(),
    ));
    let mut writer = TabWriter::docker(out);
    let header = template.execute_header(&names);
    writer
        .write_all(header.as_bytes())
        .and_then(|()| writer.write_all(b"\n"))
        .and_then(|()| writer.write_all(body.as_bytes()))
        .and_then(|()| writer.flush())
        .map_err(Error::Write)
}

/// Renders `data` once with the `--format` value `source`, as docker's verbose `system df`
/// does with a template: `table` is only dropped (no header row), `json` is `{{json .}}`,
/// and no newline follows.
///
/// `{{json .}}` keeps the order of `data`'s fields, as Go's encoder does for a struct (a
/// template sees a map, whose keys come sorted).
pub fn render_whole<T: Serialize>(
    source: &str,
    data: &T,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let format = Format::parse(source);
    if format.template_text() == JSON_TEMPLATE {
        let data_error = |message: String| Error::Data { index: 0, message };
        let value = serde_json::to_value(data).map_err(|e| data_error(e.to_string()))?;
        let style = Style {
            escape_html: true,
            indent: None,
        };
        let text = json::encode(&value, style).map_err(data_error)?;
        return out.write_all(text.as_bytes()).map_err(Error::Write);
    }
    let template = Template::parse_rows(format.template_text())?;
    let data = gotmpl::to_value(data).map_err(|error| Error::Data {
        index: 0,
        message: error.to_string(),
    })?;
    out.write_all(template.execute(&data)?.as_bytes())
        .map_err(Error::Write)
}

/// Renders `docker image inspect` output for `elements` (the API's JSON,
/// field order kept).
///
/// * no format (or empty): a JSON array indented with 4 spaces;
/// * `json`: the same array on one line;
/// * a template (used as is: no `table`, trimming or `\t` handling): one
///   line per element, and a single empty line when nothing was printed.
///
/// JSON escapes `<`, `>`, `&` as `\u003c`… because the daemon's JSON does.
/// When a template fails on an element, the other elements are still
/// printed and the first error is returned afterwards, as docker does.
pub fn render_inspect(
    format: Option<&str>,
    elements: &[serde_json::Value],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let array = || serde_json::Value::Array(elements.to_vec());
    let encode = |indent| {
        let style = Style {
            escape_html: true,
            indent,
        };
        json::encode(&array(), style).map_err(|message| Error::Data { index: 0, message })
    };
    let text = match format.unwrap_or("") {
        "" => encode(Some("    "))? + "\n",
        "json" => encode(None)? + "\n",
        source => {
            let template = Template::parse(source)?;
            let mut text = String::new();
            let mut first_error = None;
            for (index, element) in elements.iter().enumerate() {
                let rendered = gotmpl::to_value(element)
                    .map_err(|error| Error::Data {
                        index,
                        message: error.to_string(),
                    })
                    .and_then(|data| template.execute(&data));
                match rendered {
                    Ok(line) => {
                        text.push_str(&line);
                        text.push('\n');
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            if text.is_empty() {
                text.push('\n');
            }
            out.write_all(text.as_bytes()).map_err(Error::Write)?;
            return first_error.map_or(Ok(()), Err);
        }
    };
    out.write_all(text.as_bytes()).map_err(Error::Write)
}
