//! The `--filter` values of `image prune`, `builder prune` and `system prune`, read as docker
//! 20.10 reads them: its CLI splits `name=value`, and its daemon checks the names, turns
//! `until` into a time and matches `label` against an image's labels.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use jiff::Timestamp;

/// The `--filter` flags, as docker's CLI (`opts.FilterOpt`) reads them: the name lowercased,
/// name and value trimmed, each value once per name (docker keeps a set), in the order given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Filters(Vec<(String, String)>);

impl Filters {
    pub(crate) fn parse(raw: &[String]) -> Result<Self> {
        let mut filters = Self::default();
        for flag in raw.iter().filter(|f| !f.is_empty()) {
            let Some((name, value)) = flag.split_once('=') else {
                bail!("bad format of filter (expected name=value)");
            };
            let pair = (name.trim().to_lowercase(), value.trim().to_owned());
            if !filters.0.contains(&pair) {
                filters.0.push(pair);
            }
        }
        Ok(filters)
    }

    /// The values given for `name`.
    pub(crate) fn get(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Fails with docker's daemon's message on the first name `accepted` does not hold.
    pub(crate) fn accept_only(&self, accepted: &[&str]) -> Result<()> {
        match self.0.iter().find(|(n, _)| !accepted.contains(&n.as_str())) {
            Some((name, _)) => bail!("Invalid filter '{name}'"),
            None => Ok(()),
        }
    }

    /// The filters named `names`, the others dropped.
    pub(crate) fn only(&self, names: &[&str]) -> Self {
        Self(
            self.0
                .iter()
                .filter(|(n, _)| names.contains(&n.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// `name=value` of the `label`, `label!` and `until` filters in natural order, as
    /// `docker system prune`'s prompt lists them.
    pub(crate) fn listed(&self) -> Vec<String> {
        let mut listed: Vec<String> = ["label", "label!", "until"]
            .iter()
            .flat_map(|name| {
                self.get(name)
                    .into_iter()
                    .map(move |v| format!("{name}={v}"))
            })
            .collect();
        listed.sort_by(|a, b| natural_order(a, b));
        listed
    }
}

/// Which images a prune may take, from `image prune`'s (or `system prune`'s) filters: docker's
/// `ImagesPrune` with its `dangling`, `until`, `label` and `label!`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ImageFilter {
    /// `dangling=false` (or `0`): every unused image, as `-a`.
    pub(crate) all: bool,
    /// Only images created at or before this time.
    until: Option<Timestamp>,
    /// `key` or `key=value`, each of which an image must carry.
    labels: Vec<String>,
    /// `key` or `key=value`: an image carrying all of them stays.
    not_labels: Vec<String>,
}

impl ImageFilter {
    pub(crate) const ACCEPTED: &[&str] = &["dangling", "label", "label!", "until"];

    /// Reads `filters`, whose names the caller has checked; `until`'s durations count back
    /// from `now`.
    pub(crate) fn new(filters: &Filters, now: Timestamp) -> Result<Self> {
        // `image prune` adds `dangling=<not --all>` itself before the daemon reads it, so
        // only a `false` or `0` among the values changes anything.
        let all = filters
            .get("dangling")
            .iter()
            .any(|v| matches!(*v, "false" | "0"));
        let until = match filters.get("until")[..] {
            [] => None,
            [value] => Some(until_time(value, now)?),
            _ => bail!("more than one until filter specified"),
        };
        let owned = |name| filters.get(name).into_iter().map(str::to_owned).collect();
        Ok(Self {
            all,
            until,
            labels: owned("label"),
            not_labels: owned("label!"),
        })
    }

    /// Whether [`Self::selects`] needs the image's labels.
    pub(crate) fn reads_labels(&self) -> bool {
        !(self.labels.is_empty() && self.not_labels.is_empty())
    }

    /// Whether the filters let an image go that was created at `created` and whose config
    /// has `labels` (`None`: the image has no container config, so labels do not count, as
    /// in docker). An image without a creation time counts as made at the epoch.
    pub(crate) fn selects(
        &self,
        created: Option<Timestamp>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        if let Some(until) = self.until
            && created.unwrap_or(Timestamp::UNIX_EPOCH) > until
        {
            return false;
        }
        let Some(labels) = labels else {
            return true;
        };
        // docker's `matchLabels`: every `label` must match, and the `label!` ones must not
        // all match.
        all_match(&self.labels, labels)
            && (self.not_labels.is_empty() || !all_match(&self.not_labels, labels))
    }
}

/// docker's `Args.MatchKVList`: true when every `key` or `key=value` in `wanted` is in
/// `labels` (and, when `wanted` is empty, always).
fn all_match(wanted: &[String], labels: &BTreeMap<String, String>) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(w.as_str()),
    })
}

/// The unix second before which the build cache counts as unused, from the `until` filter
/// (and its older name `unused-for`), as docker's daemon reads it for the build cache: a Go
/// duration back from `now`. `label` and `label!` are only `system prune`'s business here
/// (see there); every other name is an error.
pub(crate) fn cache_cutoff(filters: &Filters, now: i64) -> Result<Option<i64>> {
    for (name, _) in &filters.0 {
        match name.as_str() {
            "until" | "unused-for" => {}
            "id" | "parent" | "type" | "description" | "inuse" | "shared" | "private" => {
                bail!("the build cache filter '{name}' is not supported by hoist (only 'until')")
            }
            _ => bail!("Invalid filter '{name}'"),
        }
    }
    let (until, unused_for) = (filters.get("until"), filters.get("unused-for"));
    let (name, value) = match (&until[..], &unused_for[..]) {
        ([], []) => return Ok(None),
        ([value], []) => ("until", *value),
        ([], [value]) => ("unused-for", *value),
        _ => bail!("filters expect only one value"),
    };
    let nanos = parse_go_duration(value)
        .with_context(|| format!("{name:?} filter expects a duration (e.g., '24h')"))?;
    let seconds = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
    Ok(Some(now.saturating_sub(seconds)))
}

/// docker's `timetypes.GetTimestamp` for `until`: a Go duration back from `now` (whole
/// seconds), an RFC 3339 date or time (in the local zone when it names none), or unix
/// `seconds[.fraction]`.
pub(crate) fn until_time(value: &str, now: Timestamp) -> Result<Timestamp> {
    if value != "0"
        && let Ok(nanos) = parse_go_duration(value)
    {
        let back = now.as_nanosecond() - nanos;
        return Timestamp::from_second(back.div_euclid(1_000_000_000) as i64)
            .with_context(|| format!("time out of range: {value:?}"));
    }
    // Go decides on a layout from the value's shape; these are its layouts in strftime form.
    let local = !(value.contains(['z', 'Z', '+']) || value.matches('-').count() == 3);
    let colons = value.matches(':').count();
    let (go_layout, layout) = if value.contains('.') {
        if local {
            ("2006-01-02T15:04:05.999999999", "%Y-%m-%dT%H:%M:%S%.f")
        } else {
            (
                "2006-01-02T15:04:05.999999999Z07:00",
                "%Y-%m-%dT%H:%M:%S%.f%:z",
            )
        }
    } else if value.contains('T') {
        // A `±hh:mm` offset has a colon of its own.
        let colons = if !local && !value.contains(['z', 'Z']) && colons > 0 {
            colons - 1
        } else {
            colons
        };
        match (local, colons) {
            (true, 0) => ("2006-01-02T15", "%Y-%m-%dT%H"),
            (true, 1) => ("2006-01-02T15:04", "%Y-%m-%dT%H:%M"),
            (true, _) => ("2006-01-02T15:04:05", "%Y-%m-%dT%H:%M:%S"),
            (false, 0) => ("2006-01-02T15Z07:00", "%Y-%m-%dT%H%:z"),
            (false, 1) => ("2006-01-02T15:04Z07:00", "%Y-%m-%dT%H:%M%:z"),
            (false, _) => ("2006-01-02T15:04:05Z07:00", "%Y-%m-%dT%H:%M:%S%:z"),
        }
    } else if local {
        ("2006-01-02", "%Y-%m-%d")
    } else {
        ("2006-01-02Z07:00", "%Y-%m-%d%:z")
    };
    let parsed = if local {
        // Go reads it in a fixed zone with the local offset of now.
        let offset = jiff::tz::TimeZone::system().to_offset(now);
        jiff::fmt::strtime::parse(layout, value)
            .and_then(|t| t.to_datetime())
            .and_then(|dt| offset.to_timestamp(dt))
    } else {
        // Go's `Z07:00` takes a `Z` for UTC.
        let value = match value.strip_suffix('Z') {
            Some(rest) => format!("{rest}+00:00"),
            None => value.to_owned(),
        };
        jiff::fmt::strtime::parse(layout, &value).and_then(|t| t.to_timestamp())
    };
    match parsed {
        Ok(time) => Ok(time),
        // With a `-` it was meant as a date: say why it is not one.
        Err(e) if value.contains('-') => {
            Err(anyhow!(e).context(format!("parsing time {value:?} as {go_layout:?}")))
        }
        Err(_) => unix_time(value)
            .ok_or_else(|| anyhow!("failed to parse value as time or duration: {value:?}")),
    }
}

/// `seconds[.fraction]` (docker's `parseTimestamp`).
fn unix_time(value: &str) -> Option<Timestamp> {
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, ""));
    let seconds: i64 = seconds.parse().ok()?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        let n: i64 = fraction.parse().ok()?;
        (n as f64 * 10f64.powi(9 - fraction.len() as i32)) as i64
    };
    Timestamp::new(seconds, 0)
        .ok()?
        .checked_add(jiff::SignedDuration::from_nanos(nanos))
        .ok()
}

/// Parses a Go duration (`time.ParseDuration`): `24h`, `1h30m`, `1.5h`, `300ms`, `-2h`, `0`,
/// in nanoseconds, with Go's error texts.
pub(crate) fn parse_go_duration(s: &str) -> Result<i128> {
    let invalid = || anyhow!("time: invalid duration {s:?}");
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

/// The order of `sortorder.NaturalLess`, which docker sorts the prompt's filters by: runs of
/// digits compare as numbers (and sort before other bytes), the rest byte by byte.
fn natural_order(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !da {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        let run = |s: &[u8], mut k: usize| {
            while k < s.len() && s[k] == b'0' {
                k += 1;
            }
            let start = k;
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            (start, k)
        };
        let ((sa, ea), (sb, eb)) = (run(a, i), run(b, j));
        let order = (ea - sa)
            .cmp(&(eb - sb))
            .then_with(|| a[sa..ea].cmp(&b[sb..eb]))
            .then_with(|| sa.cmp(&sb));
        if order != Ordering::Equal {
            return order;
        }
        (i, j) = (ea, eb);
    }
    (a.len() - i).cmp(&(b.len() - j))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::Timestamp;

    use super::{Filters, ImageFilter, cache_cutoff, natural_order, parse_go_duration, until_time};

    fn filters(raw: &[&str]) -> anyhow::Result<Filters> {
        Filters::parse(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

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
    fn flags_split_as_dockers_cli() {
        let f = filters(&[" Label = a=b ", "label!=c", "", "label=a=b", "until=1h"]).unwrap();
        assert_eq!(f.get("label"), ["a=b"], "lowercased, trimmed, once");
        assert_eq!(f.get("label!"), ["c"]);
        assert_eq!(f.get("until"), ["1h"]);
        assert_eq!(
            filters(&["until"]).unwrap_err().to_string(),
            "bad format of filter (expected name=value)"
        );
        assert_eq!(
            f.accept_only(&["label", "until"]).unwrap_err().to_string(),
            "Invalid filter 'label!'"
        );
        assert!(f.accept_only(ImageFilter::ACCEPTED).is_ok());
        assert_eq!(f.only(&["until"]), filters(&["until=1h"]).unwrap());
    }

    #[test]
    fn prompt_lists_filters_in_natural_order() {
        let f = filters(&[
            "until=24h",
            "label=b10",
            "label=b9",
            "label!=a",
            "dangling=x",
        ]);
        assert_eq!(
            f.unwrap().listed(),
            ["label!=a", "label=b9", "label=b10", "until=24h"]
        );
        assert!(natural_order("a2", "a10").is_lt());
        assert!(natural_order("a02", "a2").is_gt());
        assert!(natural_order("a1", "ab").is_lt());
        assert!(natural_order("ab", "abc").is_lt());
        assert!(natural_order("x", "x").is_eq());
    }

    #[test]
    fn cache_filters() {
        let f = |v: &[&str]| cache_cutoff(&filters(v)?, 10_000);
        assert_eq!(f(&[]).unwrap(), None);
        assert_eq!(f(&["until=1h"]).unwrap(), Some(10_000 - 3600));
        assert_eq!(f(&["unused-for=90s"]).unwrap(), Some(10_000 - 90));
        assert_eq!(f(&["until=-1m"]).unwrap(), Some(10_060));
        assert_eq!(
            format!("{:#}", f(&["until=banana"]).unwrap_err()),
            r#""until" filter expects a duration (e.g., '24h'): time: invalid duration "banana""#
        );
        assert_eq!(
            f(&["until=1h", "unused-for=2h"]).unwrap_err().to_string(),
            "filters expect only one value"
        );
        assert_eq!(
            f(&["foo=bar"]).unwrap_err().to_string(),
            "Invalid filter 'foo'"
        );
        assert_eq!(
            f(&["label=a"]).unwrap_err().to_string(),
            "Invalid filter 'label'"
        );
        assert!(
            f(&["type=regular"])
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn until_times() {
        let now: Timestamp = "2024-06-01T12:00:00.75Z".parse().unwrap();
        let t = |v: &str| until_time(v, now).map(|t| t.to_string());
        // Durations count back from now, to the second.
        assert_eq!(t("1h").unwrap(), "2024-06-01T11:00:00Z");
        assert_eq!(t("90m").unwrap(), "2024-06-01T10:30:00Z");
        assert_eq!(t("-1h").unwrap(), "2024-06-01T13:00:00Z");
        // Times with a zone, in each of Go's layouts.
        assert_eq!(t("2024-01-02T03:04:05Z").unwrap(), "2024-01-02T03:04:05Z");
        assert_eq!(
            t("2024-01-02T03:04:05+02:00").unwrap(),
            "2024-01-02T01:04:05Z"
        );
        assert_eq!(
            t("2024-01-02T03:04:05.5Z").unwrap(),
            "2024-01-02T03:04:05.5Z"
        );
        assert_eq!(t("2024-01-02T03:04Z").unwrap(), "2024-01-02T03:04:00Z");
        assert_eq!(t("2024-01-02T03+01:00").unwrap(), "2024-01-02T02:00:00Z");
        assert_eq!(t("2024-01-02Z").unwrap(), "2024-01-02T00:00:00Z");
        // Unix seconds, "0" among them.
        assert_eq!(t("0").unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(t("1700000000").unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(t("1700000000.5").unwrap(), "2023-11-14T22:13:20.5Z");
        let err = |v: &str| format!("{:#}", until_time(v, now).unwrap_err());
        assert_eq!(
            err("banana"),
            r#"failed to parse value as time or duration: "banana""#
        );
        assert!(
            err("2024-13-01").starts_with(r#"parsing time "2024-13-01" as "2006-01-02""#),
            "{}",
            err("2024-13-01")
        );
    }

    /// Local times: the tests run with `TZ` unset or anything, so compare with the offset
    /// the parser must have used.
    #[test]
    fn until_local_times() {
        let now: Timestamp = "2024-06-01T12:00:00Z".parse().unwrap();
        let offset = jiff::tz::TimeZone::system().to_offset(now);
        let local = |civil: &str| {
            offset
                .to_timestamp(civil.parse().unwrap())
                .unwrap()
                .to_string()
        };
        let t = |v: &str| until_time(v, now).unwrap().to_string();
        assert_eq!(t("2024-01-02"), local("2024-01-02T00:00:00"));
        assert_eq!(t("2024-01-02T03"), local("2024-01-02T03:00:00"));
        assert_eq!(t("2024-01-02T03:04"), local("2024-01-02T03:04:00"));
        assert_eq!(t("2024-01-02T03:04:05"), local("2024-01-02T03:04:05"));
        assert_eq!(t("2024-01-02T03:04:05.25"), local("2024-01-02T03:04:05.25"));
    }

    #[test]
    fn images_by_time_and_labels() {
        let now: Timestamp = "2024-06-01T12:00:00Z".parse().unwrap();
        let filter = |v: &[&str]| ImageFilter::new(&filters(v).unwrap(), now).unwrap();
        let old = Some("2024-06-01T10:00:00Z".parse().unwrap());
        let new = Some("2024-06-01T11:30:00Z".parse().unwrap());
        let none = labels(&[]);
        let until = filter(&["until=1h"]);
        assert!(until.selects(old, Some(&none)));
        assert!(!until.selects(new, Some(&none)));
        assert!(until.selects(None, Some(&none)), "no time: the epoch");
        let at = filter(&["until=2024-06-01T11:30:00Z"]);
        assert!(at.selects(new, None), "created at the time itself: goes");

        let tmp = labels(&[("tmp", "1"), ("team", "a")]);
        let keep = labels(&[("keep", "")]);
        let f = filter(&["label=tmp"]);
        assert!(f.selects(old, Some(&tmp)));
        assert!(!f.selects(old, Some(&keep)));
        assert!(!f.selects(old, Some(&none)));
        assert!(f.selects(old, None), "no config: labels do not count");
        let f = filter(&["label=tmp=1", "label=team=a"]);
        assert!(f.selects(old, Some(&tmp)));
        assert!(!filter(&["label=tmp=2"]).selects(old, Some(&tmp)));
        let f = filter(&["label!=keep"]);
        assert!(f.selects(old, Some(&tmp)));
        assert!(f.selects(old, Some(&none)));
        assert!(!f.selects(old, Some(&keep)));
        // docker keeps an image only when it carries every `label!`.
        let f = filter(&["label!=tmp", "label!=keep"]);
        assert!(f.selects(old, Some(&tmp)));
        let f = filter(&["label!=tmp=1", "label!=team"]);
        assert!(!f.selects(old, Some(&tmp)));

        assert!(!filter(&[]).all);
        assert!(filter(&["dangling=false"]).all);
        assert!(filter(&["dangling=0"]).all);
        assert!(!filter(&["dangling=true"]).all);
        assert_eq!(
            ImageFilter::new(&filters(&["until=1h", "until=2h"]).unwrap(), now)
                .unwrap_err()
                .to_string(),
            "more than one until filter specified"
        );
    }
}
