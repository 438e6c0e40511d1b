//! `hoist inspect` / `hoist image inspect`: docker's JSON shape (API 1.52), or a `--format`.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use hoist_oci::Digest;
use hoist_store::Store;
use serde_json::{Value, json};

use crate::cli::InspectArgs;

fn inspect_one(store: &Store, id: &Digest) -> Result<Value> {
    let record = store.image(id)?;
    let raw: Value = serde_json::from_slice(&store.read_blob(id)?)?;
    let config = store.config(id)?;
    let text = |k: &str| {
        raw.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut v = json!({
        "Id": id.to_string(),
        "RepoTags": record.tags.iter().map(hoist_oci::Reference::familiar).collect::<Vec<_>>(),
        "RepoDigests": record.digests.iter().map(hoist_oci::Reference::familiar).collect::<Vec<_>>(),
        // docker falls back to the last history entry's comment (a BuildKit image has none
        // of its own).
        "Comment": Some(text("comment")).filter(|c| !c.is_empty()).unwrap_or_else(|| {
            config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default()
        }),
        "Created": text("created"),
        "Author": text("author"),
        "Config": config.config.clone().unwrap_or_default(),
        "Architecture": config.architecture,
    });
    let obj = v.as_object_mut().expect("a JSON object literal");
    if let Some(variant) = &config.variant {
        obj.insert("Variant".into(), json!(variant));
    }
    obj.insert("Os".into(), json!(config.os));
    obj.insert("Size".into(), json!(record.size));
    obj.insert(
        "RootFS".into(),
        json!({"Type": "layers", "Layers": config.rootfs.diff_ids.iter().map(Digest::as_str).collect::<Vec<_>>()}),
    );
    let last_tag = record
        .last_tag_time
        .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |t| t.to_string());
    obj.insert("Metadata".into(), json!({"LastTagTime": last_tag}));
    Ok(v)
}

pub(crate) fn run(store: &Store, args: &InspectArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &args.images {
        match store.resolve(name) {
            Ok(id) => found.push(inspect_one(store, &id)?),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let rendered = hoist_format::render_inspect(args.format.as_deref(), &found, out);
    out.flush()?;
    for e in &errors {
        let _ = writeln!(io::stderr(), "Error: {e}");
    }
    rendered?;
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
