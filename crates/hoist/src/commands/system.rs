//! `hoist builder prune` and `hoist system df`.

use std::io::{self, BufRead, Write};

use anyhow::{Result, bail};
use hoist_format::Format;
use hoist_store::{CacheMountUsage, CachePrune, ImageRecord, Store};
use serde_json::json;

use crate::cli::{BuilderPruneArgs, SystemDfArgs};

/// Parses docker-style sizes: `500MB`, `2GB`, `1.5g`, `1024` (bytes; decimal units as docker's
/// go-units `FromHumanSize`).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size: {s:?}"))?;
    let mult = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => bail!("invalid size: {s:?}"),
    };
    Ok((n * mult) as u64)
}

/// Parses a Go duration (`time.ParseDuration`): `24h`, `1h30m`, `1.5h`, `300ms`, `-2h`, `0`,
/// in nanoseconds, with Go's error texts.
fn parse_go_duration(s: &str) -> Result<i128> {
    let invalid = || anyhow::anyhow!("time: invalid duration {s:?}");
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        bail!(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            bail!(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "" => bail!("time: missing unit in duration {s:?}"),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => bail!("time: unknown unit {other:?} in duration {s:?}"),
        };
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| invalid())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(invalid)?;
        let mut unit_scale = scale;
        for d in frac.bytes().take(30) {
            unit_scale /= 10;
            part += i128::from(d - b'0') * unit_scale;
        }
        total = total.checked_add(part).ok_or_else(invalid)?;
        // Go's durations are int64 nanoseconds.
        if total > i128::from(i64::MAX) {
            bail!(invalid());
        }
        rest = next;
    }
    Ok(if negative { -total } else { total })
}

/// The unix second before which cache counts as unused, from `builder prune --filter`s
/// (docker's daemon takes `until` and its older name `unused-for`).
fn prune_cutoff(filters: &[String], now: i64) -> Result<Option<i64>> {
    let mut cutoff = None;
    for raw in filters {
        let Some((key, value)) = raw.split_once('=') else {
            bail!("bad format of filter (expected name=value)");
        };
        match key {
            "until" | "unused-for" => {
                let nanos = parse_go_duration(value).map_err(|e| {
                    anyhow::anyhow!("{key:?} filter expects a duration (e.g., '24h'): {e}")
                })?;
                let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
                cutoff = Some(now.saturating_sub(secs));
            }
            "id" | "parent" | "type" | "description" | "inuse" | "shared" | "private" => {
                bail!("the build cache filter '{key}' is not supported by hoist (only 'until')")
            }
            _ => bail!("Invalid filter '{key}'"),
        }
    }
    Ok(cutoff)
}

pub(crate) fn builder_prune(
    store: &Store,
    args: &BuilderPruneArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let keep = args.keep_storage.as_deref().map(parse_size).transpose()?;
    let unused_since = prune_cutoff(&args.filters, jiff::Timestamp::now().as_second())?;
    if !args.force {
        let mut err = io::stderr();
        let what = if args.all {
            "all build cache"
        } else {
            "all dangling build cache"
        };
        write!(
            err,
            "WARNING! This will remove {what}. Are you sure you want to continue? [y/N] "
        )?;
        err.flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Ok(());
        }
    }
    let opts = CachePrune {
        all: args.all,
        keep_bytes: keep,
        unused_since,
    };
    let (mut deleted, mut bytes) = store.prune_cache(&opts)?;
    // The RUN --mount=type=cache directories go too, as BuildKit prunes unused cache mounts
    // with or without `--all` (those `until` leaves alone stay).
    if keep.is_none() {
        let (mounts, mount_bytes) = store.prune_cache_mounts(unused_since)?;
        deleted.extend(mounts);
        bytes += mount_bytes;
    }
    if !deleted.is_empty() {
        writeln!(out, "Deleted build cache objects:")?;
        for id in &deleted {
            writeln!(out, "{}", cache_id(id))?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        hoist_format::human_size(bytes as f64)
    )?;
    Ok(())
}

/// A build cache entry's id as `system df -v` and `builder prune` show it: its key's hex.
fn cache_id(key: &str) -> &str {
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

#[cfg(test)]
mod tests {
    use super::{parse_go_duration, parse_size, prune_cutoff};

    #[test]
    fn go_durations() {
        let s = 1_000_000_000_i128;
        assert_eq!(parse_go_duration("24h").unwrap(), 24 * 3600 * s);
        assert_eq!(parse_go_duration("1h30m").unwrap(), 5400 * s);
        assert_eq!(parse_go_duration("1.5h").unwrap(), 5400 * s);
        assert_eq!(parse_go_duration(".5s").unwrap(), s / 2);
        assert_eq!(parse_go_duration("300ms").unwrap(), 300_000_000);
        assert_eq!(parse_go_duration("2us").unwrap(), 2_000);
        assert_eq!(parse_go_duration("2\u{b5}s").unwrap(), 2_000);
        assert_eq!(parse_go_duration("-2h").unwrap(), -7200 * s);
        assert_eq!(parse_go_duration("+0").unwrap(), 0);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        let err = |t: &str| parse_go_duration(t).unwrap_err().to_string();
        assert_eq!(err(""), r#"time: invalid duration """#);
        assert_eq!(err("banana"), r#"time: invalid duration "banana""#);
        assert_eq!(err("5"), r#"time: missing unit in duration "5""#);
        assert_eq!(err("5d"), r#"time: unknown unit "d" in duration "5d""#);
        assert_eq!(err("1.2.3s"), r#"time: invalid duration "1.2.3s""#);
        assert_eq!(err("."), r#"time: invalid duration ".""#);
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn prune_filters() {
        let f =
            |v: &[&str]| prune_cutoff(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), 10_000);
        assert_eq!(f(&[]).unwrap(), None);
        assert_eq!(f(&["until=1h"]).unwrap(), Some(10_000 - 3600));
        assert_eq!(f(&["unused-for=90s"]).unwrap(), Some(10_000 - 90));
        assert_eq!(f(&["until=-1m"]).unwrap(), Some(10_060));
        assert_eq!(
            f(&["until=banana"]).unwrap_err().to_string(),
            r#""until" filter expects a duration (e.g., '24h'): time: invalid duration "banana""#
        );
        assert_eq!(
            f(&["foo=bar"]).unwrap_err().to_string(),
            "Invalid filter 'foo'"
        );
        assert_eq!(
            f(&["until"]).unwrap_err().to_string(),
            "bad format of filter (expected name=value)"
        );
        assert!(
            f(&["type=regular"])
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2g").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }
}
