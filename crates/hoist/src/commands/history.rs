//! `hoist history`: one row per history entry, newest first, as docker prints it.

use std::io::Write;

use anyhow::Result;
use hoist_store::Store;
use serde_json::json;

use crate::cli::HistoryArgs;

pub(crate) fn run(store: &Store, args: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let id = store.resolve(&args.image)?;
    let config = store.config(&id)?;
    let mut sizes = Vec::new();
    for d in &config.rootfs.diff_ids {
        sizes.push(store.layer(d)?.map_or(0, |l| l.size));
    }
    let now = jiff::Timestamp::now();
    let tz = jiff::tz::TimeZone::system();
    let mut layer_index = 0usize;
    let mut rows = Vec::new();
    for h in &config.history {
        let size = if h.empty_layer {
            0
        } else {
            let s = sizes.get(layer_index).copied().unwrap_or(0);
            layer_index += 1;
            s
        };
        let created = h
            .created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok());
        let created_by = h.created_by.clone().unwrap_or_default().replace('\t', " ");
        let created_by = if args.no_trunc {
            created_by
        } else {
            hoist_format::ellipsis(&created_by, 45)
        };
        rows.push(json!({
            "ID": "<missing>",
            "CreatedSince": created.map_or_else(|| "N/A".to_owned(), |c| hoist_format::history_created_since(c, now)),
            "CreatedAt": created.map_or_else(|| "N/A".to_owned(), |c| hoist_format::rfc3339(c, &tz)),
            "CreatedBy": created_by,
            "Size": if args.human { hoist_format::human_size_with_precision(size as f64, 3) } else { size.to_string() },
            "Comment": h.comment.clone().unwrap_or_default(),
        }));
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["ID"] = json!(if args.no_trunc {
            id.to_string()
        } else {
            id.short().to_owned()
        });
    }
    let format =
        hoist_format::Format::history(args.format.as_deref().unwrap_or(""), args.quiet, args.human);
    hoist_format::render(&format, hoist_format::HISTORY_HEADERS, &rows, out)?;
    Ok(())
}
