//! Image-config instructions: how each changes the config, and the history line BuildKit writes
//! for it (`ENV A=b`, `CMD ["sh"]`, `HEALTHCHECK {Test:[…] Interval:5m0s …}`).

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_dockerfile::go_quote;
use hoist_oci::{ContainerConfig, EmptyObject, HealthConfig};
use hoist_plan::{Healthcheck, Meta};

/// Per-stage facts the config alone does not carry.
#[derive(Debug, Default)]
pub(crate) struct StageFlags {
    /// CMD was set in this stage (a later ENTRYPOINT then keeps it).
    pub(crate) cmd_set: bool,
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub(crate) fn go_quoted_list(args: &[String]) -> String {
    let items: Vec<String> = args.iter().map(|a| go_quote(a)).collect();
    format!("[{}]", items.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_list(args: &[String]) -> String {
    format!("[{}]", args.join(" "))
}

/// Go's `time.Duration.String()`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim_frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim_frac(ns, 1_000_000));
    }
    let total_s = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let (h, m, s) = (total_s / 3600, (total_s / 60) % 60, total_s % 60);
    let secs = if frac == 0 {
        s.to_string()
    } else {
        trim_frac(s * 1_000_000_000 + frac, 1_000_000_000)
    };
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

fn trim_frac(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn nanos(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `80` → `80/tcp`, `53/UDP` → `53/udp`, `8000-8001` → both ports (BuildKit's parsePorts).
fn port_specs(spec: &str) -> Vec<String> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let port = port.rsplit(':').next().unwrap_or(port);
    match port
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
    {
        Some((a, b)) if a <= b && b - a < 65536 => {
            (a..=b).map(|p| format!("{p}/{proto}")).collect()
        }
        _ => vec![format!("{port}/{proto}")],
    }
}

/// Applies one metadata instruction; returns its history line.
pub(crate) fn apply(
    config: &mut ContainerConfig,
    author: &mut Option<String>,
    flags: &mut StageFlags,
    meta: &Meta,
) -> String {
    match meta {
        Meta::Env(pairs) => {
            let mut line = String::from("ENV");
            let env = config.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs {
                let entry = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
                {
                    Some(slot) => *slot = entry.clone(),
                    None => env.push(entry.clone()),
                }
                line.push(' ');
                line.push_str(&entry);
            }
            line
        }
        Meta::Arg(args) => {
            let parts: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            format!("ARG {}", parts.join(" "))
        }
        Meta::Label(pairs) => {
            let mut line = String::from("LABEL");
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs {
                labels.insert(k.clone(), v.clone());
                line.push_str(&format!(" {k}={v}"));
            }
            line
        }
        Meta::User(u) => {
            config.user = Some(u.clone());
            format!("USER {u}")
        }
        Meta::Expose(ports) => {
            let ports: Vec<String> = ports.iter().flat_map(|p| port_specs(p)).collect();
            let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in &ports {
                exposed.insert(p.clone(), EmptyObject {});
            }
            format!("EXPOSE {}", go_list(&ports))
        }
        Meta::Volume(vols) => {
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                volumes.insert(v.clone(), EmptyObject {});
            }
            format!("VOLUME {}", go_list(vols))
        }
        Meta::Shell(shell) => {
            config.shell = Some(shell.clone());
            format!("SHELL {}", go_list(shell))
        }
        Meta::StopSignal(s) => {
            config.stop_signal = Some(s.clone());
            format!("STOPSIGNAL {s}")
        }
        Meta::Healthcheck(h) => {
            let hc = match h {
                Healthcheck::None => HealthConfig {
                    test: Some(vec!["NONE".into()]),
                    ..HealthConfig::default()
                },
                Healthcheck::Check {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => HealthConfig {
                    test: Some(test.clone()),
                    interval: nanos(*interval),
                    timeout: nanos(*timeout),
                    start_period: nanos(*start_period),
                    start_interval: nanos(*start_interval),
                    retries: i64::from(retries.unwrap_or(0)),
                },
            };
            let d = |n: i64| go_duration(Duration::from_nanos(u64::try_from(n).unwrap_or(0)));
            let line = format!(
                "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                go_list(hc.test.as_deref().unwrap_or_default()),
                d(hc.interval),
                d(hc.timeout),
                d(hc.start_period),
                d(hc.start_interval),
                hc.retries
            );
            config.healthcheck = Some(hc);
            line
        }
        Meta::Cmd { argv, .. } => {
            config.cmd = Some(argv.clone());
            config.args_escaped = Some(true);
            flags.cmd_set = true;
            format!("CMD {}", go_quoted_list(argv))
        }
        Meta::Entrypoint { argv, .. } => {
            config.entrypoint = Some(argv.clone());
            if !flags.cmd_set {
                config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quoted_list(argv))
        }
        Meta::Onbuild(expr) => {
            config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expr.clone());
            String::new()
        }
        Meta::Maintainer(m) => {
            *author = Some(m.clone());
            format!("MAINTAINER {m}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(3), "3s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_micros(2), "2µs"),
            (Duration::from_nanos(30), "30ns"),
            (Duration::from_secs(3725), "1h2m5s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn history_lines() {
        let mut c = ContainerConfig::default();
        let mut author = None;
        let mut f = StageFlags::default();
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "echo \"hi\"".to_owned(),
        ];
        assert_eq!(
            apply(
                &mut c,
                &mut author,
                &mut f,
                &Meta::Cmd {
                    argv,
                    shell_form: true
                }
            ),
            r#"CMD ["/bin/sh" "-c" "echo \"hi\""]"#
        );
        assert_eq!(
            apply(
                &mut c,
                &mut author,
                &mut f,
                &Meta::Env(vec![("A".into(), "b c".into())])
            ),
            "ENV A=b c"
        );
        assert_eq!(
            apply(
                &mut c,
                &mut author,
                &mut f,
                &Meta::Entrypoint {
                    argv: vec!["top".into()],
                    shell_form: false
                }
            ),
            r#"ENTRYPOINT ["top"]"#
        );
        assert!(
            c.cmd.is_some(),
            "CMD set in the same stage survives ENTRYPOINT"
        );
        let hc = Meta::Healthcheck(Healthcheck::Check {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(Duration::from_secs(300)),
            timeout: Some(Duration::from_secs(3)),
            start_period: None,
            start_interval: None,
            retries: Some(3),
        });
        assert_eq!(
            apply(&mut c, &mut author, &mut f, &hc),
            "HEALTHCHECK {Test:[CMD-SHELL true] Interval:5m0s Timeout:3s StartPeriod:0s StartInterval:0s Retries:3}"
        );
    }
}
