//! Output of `render` and `render_inspect`, byte for byte against what the
//! docker CLI prints for the same data.

use hoist_format::{Error, Format, HISTORY_HEADERS, IMAGES_HEADERS, render, render_inspect};
use serde_json::{Value, json};

const BUSYBOX_DIGEST: &str =
    "sha256:498a000f370d8c37927118ed80afe8adc38d1edcbfc071627d17b25c88efcab0";

fn busybox() -> Value {
    json!({
        "Containers": "N/A", "CreatedAt": "2024-09-26 21:31:42 +0000 UTC",
        "CreatedSince": "2 months ago", "Digest": BUSYBOX_DIGEST, "ID": "a416a98b71e2",
        "Repository": "busybox", "SharedSize": "N/A", "Size": "4.26MB", "Tag": "latest",
        "UniqueSize": "N/A",
    })
}

fn dangling() -> Value {
    json!({
        "Containers": "N/A", "CreatedAt": "0001-01-01 00:00:00 +0000 UTC", "CreatedSince": "",
        "Digest": "<none>", "ID": "77af4d6b9913", "Repository": "<none>", "SharedSize": "N/A",
        "Size": "1.09GB", "Tag": "<none>", "UniqueSize": "N/A",
    })
}

fn images(format: &Format, rows: &[Value]) -> Result<String, Error> {
    let mut out = Vec::new();
    render(format, IMAGES_HEADERS, rows, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

#[test]
fn images_default_table() {
    let out = images(&Format::images("", false, false), &[busybox(), dangling()]).unwrap();
    assert_eq!(
        out,
        "REPOSITORY   TAG       IMAGE ID       CREATED        SIZE\n\
         busybox      latest    a416a98b71e2   2 months ago   4.26MB\n\
         <none>       <none>    77af4d6b9913   N/A            1.09GB\n"
    );
}

#[test]
fn images_table_without_rows_still_has_its_header() {
    let out = images(&Format::images("table", false, false), &[]).unwrap();
    assert_eq!(out, "REPOSITORY   TAG       IMAGE ID   CREATED   SIZE\n");
}

#[test]
fn images_with_digests() {
    let out = images(&Format::images("", false, true), &[busybox()]).unwrap();
    let digest_column = format!("{:<74}", "DIGEST");
    assert_eq!(
        out,
        format!(
            "REPOSITORY   TAG       {digest_column}IMAGE ID       CREATED        SIZE\n\
             busybox      latest    {BUSYBOX_DIGEST}   a416a98b71e2   2 months ago   4.26MB\n"
        )
    );
}

#[test]
fn custom_table_with_digests_gains_a_digest_column() {
    let format = Format::images("table {{.ID}}", false, true);
    assert_eq!(format, Format::Table("{{.ID}}\t{{.Digest}}".to_owned()));
    let format = Format::images("table {{.Digest}}", false, true);
    assert_eq!(format, Format::Table("{{.Digest}}".to_owned()));
}

#[test]
fn images_quiet_prints_ids() {
    let out = images(&Format::images("", true, false), &[busybox(), dangling()]).unwrap();
    assert_eq!(out, "a416a98b71e2\n77af4d6b9913\n");
}

#[test]
fn header_names_come_from_the_map() {
    let format = Format::parse(r"table {{.ID}}\t{{.Repository}}:{{.Tag}}\t{{.CreatedAt}}");
    let out = images(&format, &[busybox()]).unwrap();
    assert_eq!(
        out,
        "IMAGE ID       REPOSITORY:TAG   CREATED AT\n\
         a416a98b71e2   busybox:latest   2024-09-26 21:31:42 +0000 UTC\n"
    );
}

#[test]
fn header_functions_keep_titles_but_pad_still_pads() {
    let format =
        Format::parse(r"table {{lower .Repository}}\t{{pad .Tag 2 0}}|\t{{truncate .ID 4}}");
    let out = images(&format, &[busybox()]).unwrap();
    assert_eq!(
        out,
        "REPOSITORY   ␣␣TAG|      IMAGE ID\nbusybox      ␣␣latest|   a416\n".replace('␣', " ")
    );
}

#[test]
fn raw_format_is_one_line_per_row_without_alignment() {
    let format = Format::parse(r"{{.Repository}}\t{{.Tag}}  ");
    assert_eq!(
        images(&format, &[busybox(), dangling()]).unwrap(),
        "busybox\tlatest\n<none>\t<none>\n"
    );
}

#[test]
fn literal_newline_escape_becomes_a_newline() {
    let format = Format::parse(r"{{.ID}}\n{{.Size}}");
    assert_eq!(
        images(&format, &[busybox()]).unwrap(),
        "a416a98b71e2\n4.26MB\n"
    );
}

#[test]
fn json_format_sorts_keys_and_escapes_like_docker() {
    let out = images(&Format::parse("json"), &[dangling()]).unwrap();
    assert_eq!(
        out,
        "{\"Containers\":\"N/A\",\"CreatedAt\":\"0001-01-01 00:00:00 +0000 UTC\",\
         \"CreatedSince\":\"\",\"Digest\":\"\\u003cnone\\u003e\",\"ID\":\"77af4d6b9913\",\
         \"Repository\":\"\\u003cnone\\u003e\",\"SharedSize\":\"N/A\",\"Size\":\"1.09GB\",\
         \"Tag\":\"\\u003cnone\\u003e\",\"UniqueSize\":\"N/A\"}\n"
    );
    // A single field is encoded without HTML escaping.
    let out = images(&Format::parse("{{json .Tag}}"), &[dangling()]).unwrap();
    assert_eq!(out, "\"<none>\"\n");
}

#[test]
fn table_of_json_has_an_empty_header() {
    let out = images(&Format::parse("table {{json .ID}}"), &[busybox()]).unwrap();
    assert_eq!(out, "IMAGE ID\n\"a416a98b71e2\"\n");
    let out = images(&Format::parse("table {{json .}}"), &[]).unwrap();
    assert_eq!(out, "\n");
}

#[test]
fn bad_templates_are_errors_not_output() {
    let mut out = Vec::new();
    let error = render(
        &Format::parse("{{.ID"),
        IMAGES_HEADERS,
        &[busybox()],
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(error, Error::Parse { .. }));
    assert_eq!(
        error.to_string(),
        "template parsing error: template: :1: unclosed action"
    );

    let error = render(
        &Format::parse("table {{nope}}"),
        IMAGES_HEADERS,
        &[busybox()],
        &mut out,
    );
    assert_eq!(
        error.unwrap_err().to_string(),
        "template parsing error: template: :1: function \"nope\" not defined"
    );

    let error = render(
        &Format::parse("table {{.Nope}}"),
        IMAGES_HEADERS,
        &[busybox()],
        &mut out,
    );
    assert!(matches!(error, Err(Error::Execute { .. })));
    assert!(out.is_empty());
}

fn history_rows(size_key: &str) -> Vec<Value> {
    vec![
        json!({
            "ID": "a416a98b71e2", "CreatedSince": "2 months ago", "CreatedAt": "2024-09-26T21:31:42Z",
            "CreatedBy": "/bin/sh -c #(nop)  CMD [\"sh\"]", "Size": if size_key == "human" { "0B" } else { "0" },
            "Comment": "",
        }),
        json!({
            "ID": "<missing>", "CreatedSince": "2 months ago", "CreatedAt": "2024-09-26T21:31:42Z",
            "CreatedBy": hoist_format::ellipsis(
                "/bin/sh -c #(nop) ADD file:7e9002edaafd4e4579ef34b6ba4a5e2fa8c1c9d3a8ad3bdd5baba0e7fb3b3b2c in / ",
                45,
            ),
            "Size": if size_key == "human" { "4.26MB" } else { "4261550" },
            "Comment": "",
        }),
    ]
}

#[test]
fn history_default_table_pads_the_empty_comment() {
    let mut out = Vec::new();
    render(
        &Format::history("", false, true),
        HISTORY_HEADERS,
        &history_rows("human"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "IMAGE          CREATED        CREATED BY                                      SIZE      COMMENT\n\
         a416a98b71e2   2 months ago   /bin/sh -c #(nop)  CMD [\"sh\"]                   0B        \n\
         <missing>      2 months ago   /bin/sh -c #(nop) ADD file:7e9002edaafd4e457…   4.26MB    \n"
    );
}

#[test]
fn history_non_human_uses_created_at() {
    let mut out = Vec::new();
    render(
        &Format::history("", false, false),
        HISTORY_HEADERS,
        &history_rows("raw"),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "IMAGE          CREATED AT             CREATED BY                                      SIZE      COMMENT\n\
         a416a98b71e2   2024-09-26T21:31:42Z   /bin/sh -c #(nop)  CMD [\"sh\"]                   0         \n\
         <missing>      2024-09-26T21:31:42Z   /bin/sh -c #(nop) ADD file:7e9002edaafd4e457…   4261550   \n"
    );
}

#[test]
fn serialize_structs_work_as_rows() {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Row {
        #[serde(rename = "ID")]
        id: String,
        size: String,
    }
    let rows = [Row {
        id: "a416a98b71e2".into(),
        size: "4.26MB".into(),
    }];
    let mut out = Vec::new();
    render(
        &Format::parse(r"table {{.ID}}\t{{.Size}}"),
        IMAGES_HEADERS,
        &rows,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "IMAGE ID       SIZE\na416a98b71e2   4.26MB\n"
    );
}

fn inspect(format: Option<&str>, elements: &[Value]) -> (String, Result<(), Error>) {
    let mut out = Vec::new();
    let result = render_inspect(format, elements, &mut out);
    (String::from_utf8(out).unwrap(), result)
}

#[test]
fn inspect_defaults_to_indented_json_in_api_order() {
    let element = json!({"Id": "sha256:abc", "RepoTags": ["busybox:latest"], "Config": {"Cmd": ["sh", "-c", "a > b"], "Labels": null}});
    let (out, result) = inspect(None, std::slice::from_ref(&element));
    result.unwrap();
    assert_eq!(
        out,
        "[\n    {\n        \"Id\": \"sha256:abc\",\n        \"RepoTags\": [\n            \"busybox:latest\"\n        ],\n        \
         \"Config\": {\n            \"Cmd\": [\n                \"sh\",\n                \"-c\",\n                \
         \"a \\u003e b\"\n            ],\n            \"Labels\": null\n        }\n    }\n]\n"
    );
    let (out, _) = inspect(Some("json"), &[element]);
    assert_eq!(
        out,
        "[{\"Id\":\"sha256:abc\",\"RepoTags\":[\"busybox:latest\"],\"Config\":{\"Cmd\":[\"sh\",\"-c\",\"a \\u003e b\"],\"Labels\":null}}]\n"
    );
    assert_eq!(inspect(None, &[]).0, "[]\n");
}

#[test]
fn inspect_templates_are_used_verbatim() {
    let element = json!({"Id": "sha256:abc", "Os": "linux", "Architecture": "amd64", "Config": {"Env": ["A=1", "B=2"]}});
    let (out, result) = inspect(
        Some(r#"{{.Os}}/{{.Architecture}}\t{{join .Config.Env ","}} {{.Nope}}"#),
        &[element],
    );
    result.unwrap();
    assert_eq!(out, "linux/amd64\\tA=1,B=2 <no value>\n");
    let (out, result) = inspect(
        Some("{{json .Config}}"),
        &[json!({"Config": {"Cmd": ["a > b"]}})],
    );
    result.unwrap();
    assert_eq!(out, "{\"Cmd\":[\"a > b\"]}\n");
    assert_eq!(inspect(Some("{{.Id}}"), &[]).0, "\n");
    assert!(matches!(
        inspect(Some("{{.Id"), &[]).1,
        Err(Error::Parse { .. })
    ));
}
