//! `hoist system df`.

use std::io::Write;

use anyhow::Result;
use hoist_format::Format;
use hoist_store::{CacheMountUsage, ImageRecord, Store};
use serde_json::json;

use crate::cli::SystemDfArgs;

/// A build cache entry's id as `system df -v` and `builder prune` show it: its key's hex.
pub(super) fn cache_id(key: &str) -> &str {
    key.strip_prefix("sha256:").unwrap_or(key)
}

/// `docker system df`'s default table.
const DF_TABLE: &str = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";
const DF_RAW: &str = "type: {{.Type}}\ntotal: {{.TotalCount}}\nactive: {{.Active}}\nsize: {{.Size}}\nreclaimable: {{.Reclaimable}}\n";
const DF_HEADERS: &[(&str, &str)] = &[
    ("Type", "TYPE"),
    ("TotalCount", "TOTAL"),
    ("Active", "ACTIVE"),
    ("Size", "SIZE"),
    ("Reclaimable", "RECLAIMABLE"),
];
/// The sections of `docker system df -v`.
const DF_IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}";
const DF_CONTAINERS_TABLE: &str = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";
const DF_CONTAINERS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Size", "SIZE"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Names", "NAMES"),
];
const DF_VOLUMES_TABLE: &str = "table {{.Name}}\t{{.Links}}\t{{.Size}}";
const DF_VOLUMES_HEADERS: &[(&str, &str)] = &[
    ("Name", "VOLUME NAME"),
    ("Links", "LINKS"),
    ("Size", "SIZE"),
];
const DF_CACHE_TABLE: &str = "table {{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}\t{{.UsageCount}}\t{{.Shared}}";
const DF_CACHE_HEADERS: &[(&str, &str)] = &[
    ("ID", "CACHE ID"),
    ("Parent", "PARENT"),
    ("CacheType", "CACHE TYPE"),
    ("Size", "SIZE"),
    ("CreatedSince", "CREATED"),
    ("LastUsedSince", "LAST USED"),
    ("UsageCount", "USAGE"),
    ("InUse", "IN USE"),
    ("Shared", "SHARED"),
    ("Description", "DESCRIPTION"),
];

pub(crate) fn df(store: &Store, args: &SystemDfArgs, out: &mut dyn Write) -> Result<()> {
    let images = store.images()?;
    let size = store.images_size()?;
    let cache = store.cache_usage()?;
    let mounts = store.cache_mounts()?;
    let mount_bytes: u64 = mounts.iter().map(|m| m.size).sum();
    // The build cache's bytes: the layers only it keeps, and the cache mounts.
    let cache_bytes = cache.reclaimable + mount_bytes;
    if args.verbose {
        return df_verbose(store, args, &images, &mounts, cache_bytes, out);
    }
    let h = |b: u64| hoist_format::human_size(b as f64);
    // No containers outlive `hoist run`, so every image is reclaimable.
    let reclaimable = |total: u64, free: u64| match (free * 100).checked_div(total) {
        Some(pct) => format!("{} ({pct}%)", h(free)),
        None => h(free),
    };
    let rows = [
        json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": "0",
               "Size": h(size), "Reclaimable": reclaimable(size, size)}),
        json!({"Type": "Containers", "TotalCount": "0", "Active": "0",
               "Size": "0B", "Reclaimable": "0B"}),
        json!({"Type": "Local Volumes", "TotalCount": "0", "Active": "0",
               "Size": "0B", "Reclaimable": "0B"}),
        json!({"Type": "Build Cache", "TotalCount": (cache.entries + mounts.len() as u64).to_string(),
               "Active": "0", "Size": h(cache_bytes), "Reclaimable": h(cache_bytes)}),
    ];
    let format = match args.format.as_deref().unwrap_or("") {
        "" | "table" => DF_TABLE,
        "raw" => DF_RAW,
        custom => custom,
    };
    hoist_format::render(&Format::parse(format), DF_HEADERS, &rows, out)?;
    Ok(())
}

fn df_verbose(
    store: &Store,
    args: &SystemDfArgs,
    images: &[ImageRecord],
    mounts: &[CacheMountUsage],
    cache_bytes: u64,
    out: &mut dyn Write,
) -> Result<()> {
    let source = args.format.as_deref().unwrap_or("");
    // docker truncates ids only in its tables.
    let table = matches!(source, "" | "table");
    let now = jiff::Timestamp::now();
    let utc = jiff::tz::TimeZone::UTC;
    let h = |b: u64| hoist_format::human_size(b as f64);
    let shared = store.images_shared_size()?;
    let image_rows: Vec<serde_json::Value> = images
        .iter()
        .map(|img| {
            // Only an image's first tag, as docker shows it.
            let (repo, tag) = img.tags.first().map_or_else(
                || ("<none>".to_owned(), "<none>".to_owned()),
                |t| {
                    (
                        t.familiar_repository(),
                        t.tag().unwrap_or("latest").to_owned(),
                    )
                },
            );
            let shared = shared.get(img.id.as_str()).copied().unwrap_or(0);
            let mut row = super::images::image_row(img, !table, now);
            row["Repository"] = repo.into();
            row["Tag"] = tag.into();
            row["Digest"] = "".into();
            row["SharedSize"] = h(shared).into();
            row["UniqueSize"] = h(img.size.saturating_sub(shared)).into();
            row["Containers"] = "0".into();
            row
        })
        .collect();
    let since = |t: jiff::Timestamp| hoist_format::created_since(t, now);
    let at = |t: jiff::Timestamp| hoist_format::go_time_string(t, &utc);
    let id = |full: &str| {
        if table {
            full.chars().take(12).collect()
        } else {
            full.to_owned()
        }
    };
    let row = |full_id: &str,
               kind: &str,
               size: u64,
               created: Option<jiff::Timestamp>,
               used: Option<jiff::Timestamp>,
               uses: u64,
               shared: bool| {
        json!({
            "ID": id(full_id), "Parent": "", "CacheType": kind, "Description": "",
            "Size": hoist_format::human_size_with_precision(size as f64, 3),
            "CreatedAt": created.map(at).unwrap_or_default(),
            "CreatedSince": created.map(since).unwrap_or_default(),
            "LastUsedAt": used.map(at).unwrap_or_default(),
            "LastUsedSince": used.map(since).unwrap_or_default(),
            "UsageCount": uses.to_string(), "InUse": "false", "Shared": shared.to_string(),
        })
    };
    let seconds = |t: i64| jiff::Timestamp::from_second(t).ok();
    let mut cache_rows: Vec<serde_json::Value> = Vec::new();
    for e in store.cache_entries()? {
        let created = e.created.parse::<jiff::Timestamp>().ok();
        let used = seconds(e.last_used);
        cache_rows.push(row(
            cache_id(&e.key),
            "regular",
            e.size,
            created,
            used,
            e.uses,
            e.shared,
        ));
    }
    for m in mounts {
        let (created, used) = (m.created.and_then(seconds), m.last_used.and_then(seconds));
        let uses = m.uses.unwrap_or(0);
        cache_rows.push(row(
            &m.dir,
            "exec.cachemount",
            m.size,
            created,
            used,
            uses,
            false,
        ));
    }
    if !table {
        /// docker's verbose disk usage, its fields in docker's order.
        #[derive(serde::Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct DiskUsage {
            images: Vec<Row>,
            containers: [(); 0],
            volumes: [(); 0],
            build_cache: Vec<Row>,
        }
        // Each row's fields sorted, as Go encodes a map.
        type Row = std::collections::BTreeMap<String, serde_json::Value>;
        let sorted = |rows: Vec<serde_json::Value>| -> Vec<Row> {
            rows.into_iter()
                .map(|r| match r {
                    serde_json::Value::Object(m) => m.into_iter().collect(),
                    _ => Row::new(),
                })
                .collect()
        };
        let whole = DiskUsage {
            images: sorted(image_rows),
            containers: [],
            volumes: [],
            build_cache: sorted(cache_rows),
        };
        hoist_format::render_whole(source, &whole, out)?;
        return Ok(());
    }
    let none: [serde_json::Value; 0] = [];
    let cache_title = format!(
        "\nBuild cache usage: {}\n",
        hoist_format::human_size(cache_bytes as f64)
    );
    // Title, table, column titles, rows.
    type Section<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [serde_json::Value],
    );
    let sections: [Section<'_>; 4] = [
        (
            "Images space usage:\n",
            DF_IMAGES_TABLE,
            hoist_format::IMAGES_HEADERS,
            &image_rows,
        ),
        (
            "\nContainers space usage:\n",
            DF_CONTAINERS_TABLE,
            DF_CONTAINERS_HEADERS,
            &none,
        ),
        (
            "\nLocal Volumes space usage:\n",
            DF_VOLUMES_TABLE,
            DF_VOLUMES_HEADERS,
            &none,
        ),
        (&cache_title, DF_CACHE_TABLE, DF_CACHE_HEADERS, &cache_rows),
    ];
    for (title, table, headers, rows) in sections {
        writeln!(out, "{title}")?;
        hoist_format::render(&Format::parse(table), headers, rows, out)?;
    }
    Ok(())
}
