//! `hoist images`: docker's image list, its filters and formats.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Result, bail};
use hoist_store::{ImageRecord, Store};
use serde_json::json;

use crate::cli::ImagesArgs;
use hoist_engine::glob::path_match;

struct Filters {
    dangling: Option<bool>,
    references: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    before: Option<jiff::Timestamp>,
    since: Option<jiff::Timestamp>,
}

fn parse_filters(store: &Store, args: &ImagesArgs) -> Result<Filters> {
    let mut f = Filters {
        dangling: None,
        references: Vec::new(),
        labels: Vec::new(),
        before: None,
        since: None,
    };
    let created = |name: &str| -> Result<jiff::Timestamp> {
        let id = store.resolve(name)?;
        Ok(store.image(&id)?.created.unwrap_or_default())
    };
    for raw in &args.filters {
        let Some((key, value)) = raw.split_once('=') else {
            bail!("bad format of filter (expected name=value)");
        };
        match key {
            "dangling" => {
                f.dangling = Some(match value.to_ascii_lowercase().as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => bail!("invalid filter 'dangling={value}'"),
                });
            }
            "reference" => f.references.push(value.to_owned()),
            "label" => f.labels.push(match value.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (value.to_owned(), None),
            }),
            "before" => f.before = Some(created(value)?),
            "since" => f.since = Some(created(value)?),
            _ => bail!("invalid filter '{key}'"),
        }
    }
    if let Some(repo) = &args.repository {
        f.references.push(repo.clone());
    }
    Ok(f)
}

pub(crate) fn run(store: &Store, args: &ImagesArgs, out: &mut dyn Write) -> Result<()> {
    let filters = parse_filters(store, args)?;
    let now = jiff::Timestamp::now();
    let mut rows = Vec::new();
    for img in store.images()? {
        let dangling = img.tags.is_empty();
        if filters.dangling.is_some_and(|d| d != dangling) {
            continue;
        }
        if filters
            .before
            .is_some_and(|b| img.created.unwrap_or_default() >= b)
            || filters
                .since
                .is_some_and(|s| img.created.unwrap_or_default() <= s)
        {
            continue;
        }
        if !filters.labels.is_empty() {
            let labels = store
                .config(&img.id)?
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default();
            let ok = filters.labels.iter().all(|(k, v)| match v {
                Some(v) => labels.get(k) == Some(v),
                None => labels.contains_key(k),
            });
            if !ok {
                continue;
            }
        }
        let mut img = img;
        if !filters.references.is_empty() {
            // Only the names that match are shown; an image with none is left out.
            let keep = |r: &hoist_oci::Reference| {
                let (name, full) = (r.familiar_repository(), r.familiar());
                filters
                    .references
                    .iter()
                    .any(|p| path_match(p, &name) || path_match(p, &full))
            };
            img.tags.retain(keep);
            img.digests.retain(keep);
            if img.tags.is_empty() && img.digests.is_empty() {
                continue;
            }
        }
        push_rows(&img, args, now, &mut rows);
    }
    let format = hoist_format::Format::images(
        args.format.as_deref().unwrap_or(""),
        args.quiet,
        args.digests,
    );
    hoist_format::render(&format, hoist_format::IMAGES_HEADERS, &rows, out)?;
    Ok(())
}

/// An image's creation time as docker's image list has it: whole seconds (the API's
/// `Created` is a unix time), so `.CreatedAt` never shows a fraction.
pub(crate) fn whole_seconds(t: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// An image's row as docker's image list has it, before its name: the id (12 characters
/// unless `full_id`), its age and size; `Repository`, `Tag` and `Digest` are `<none>`, and
/// `Containers`, `SharedSize` and `UniqueSize` are `N/A`, as the list does not count them.
pub(crate) fn image_row(
    img: &ImageRecord,
    full_id: bool,
    now: jiff::Timestamp,
) -> serde_json::Value {
    let id = if full_id {
        img.id.to_string()
    } else {
        img.id.short().to_owned()
    };
    let created = img.created.map(whole_seconds);
    let created_since = created
        .map(|c| hoist_format::created_since(c, now))
        .unwrap_or_default();
    let created_at = created
        .map(|c| hoist_format::go_time_string(c, &jiff::tz::TimeZone::system()))
        .unwrap_or_default();
    json!({
        "ID": id, "Repository": "<none>", "Tag": "<none>", "Digest": "<none>",
        "CreatedSince": created_since, "CreatedAt": created_at,
        "Size": hoist_format::human_size_with_precision(img.size as f64, 3),
        "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A",
        "VirtualSize": hoist_format::human_size(img.size as f64),
    })
}

fn push_rows(
    img: &ImageRecord,
    args: &ImagesArgs,
    now: jiff::Timestamp,
    rows: &mut Vec<serde_json::Value>,
) {
    let base = image_row(img, args.no_trunc, now);
    let row = |repo: &str, tag: &str, digest: &str| {
        let mut r = base.clone();
        r["Repository"] = repo.into();
        r["Tag"] = tag.into();
        r["Digest"] = digest.into();
        r
    };
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut digests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &img.tags {
        tags.entry(t.familiar_repository())
            .or_default()
            .push(t.tag().unwrap_or("latest").to_owned());
    }
    for d in &img.digests {
        if let Some(dg) = d.digest() {
            digests
                .entry(d.familiar_repository())
                .or_default()
                .push(dg.to_string());
        }
    }
    for (repo, repo_tags) in &tags {
        // A repository with tags shows its digests on the tag rows, never as rows of their own.
        let ds = digests
            .remove(repo)
            .filter(|_| args.digests)
            .unwrap_or_default();
        for tag in repo_tags {
            if ds.is_empty() {
                rows.push(row(repo, tag, "<none>"));
            } else {
                for d in &ds {
                    rows.push(row(repo, tag, d));
                }
            }
        }
    }
    for (repo, ds) in &digests {
        if args.digests {
            for d in ds {
                rows.push(row(repo, "<none>", d));
            }
        } else {
            rows.push(row(repo, "<none>", ""));
        }
    }
    if img.tags.is_empty() && img.digests.is_empty() {
        rows.push(row("<none>", "<none>", "<none>"));
    }
}
