//! `RUN --mount` values and `--chmod` modes.

use crate::error::{Error, ErrorKind, suggest};

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountType {
    #[default]
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// Cache mount sharing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// A parsed `RUN --mount`, values expanded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    pub kind: MountType,
    /// `from=`: stage name, index or image (never expanded).
    pub from: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: bool,
    /// tmpfs `size=` in bytes.
    pub size: Option<u64>,
    /// `id=` (cache id or secret id).
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub required: bool,
    /// Secret `env=`.
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

fn mount_error(message: String) -> Error {
    Error::new(ErrorKind::Mount(message))
}

/// The checks BuildKit makes before variables are known: the value is valid
/// CSV and `from=` holds no variable.
pub(crate) fn check_mount(raw: &str) -> Result<(), Error> {
    for field in csv_fields(raw)? {
        if let Some((key, value)) = field.split_once('=')
            && key.eq_ignore_ascii_case("from")
            && value
                .find('$')
                .is_some_and(|index| index + 1 != value.len())
        {
            return Err(mount_error(
                "'from' doesn't support variable expansion, define alias stage instead".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Parses a `--mount` value; `expand` is applied to every value except
/// `from`.
pub fn parse_mount(
    raw: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, Error>,
) -> Result<Mount, Error> {
    check_mount(raw)?;
    let mut mount = Mount::default();
    let mut read_only_set = false;
    for field in csv_fields(raw)? {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    mount.read_only = true;
                    read_only_set = true;
                }
                "readwrite" | "rw" => {
                    mount.read_only = false;
                    read_only_set = true;
                }
                "required" if matches!(mount.kind, MountType::Secret | MountType::Ssh) => {
                    mount.required = true;
                }
                "required" => {
                    return Err(mount_error(format!(
                        "unexpected key 'required' for mount type '{}'",
                        type_name(mount.kind)
                    )));
                }
                _ => {
                    return Err(mount_error(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let value = if key == "from" {
            value.to_owned()
        } else {
            expand(value)?
        };
        let bad = |key: &str| mount_error(format!("invalid value for {key}: {value}"));
        match key.as_str() {
            "type" => {
                mount.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let error = mount_error(format!("unsupported mount type {value:?}"));
                        let types = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        return Err(match suggest(&value, &types) {
                            Some(close) => error.with_hint(format!("did you mean {close}?")),
                            None => error,
                        });
                    }
                };
            }
            "from" => mount.from = Some(value),
            "source" | "src" => mount.source = Some(value),
            "target" | "dst" | "destination" => mount.target = Some(value),
            "readonly" | "ro" => {
                mount.read_only = parse_bool(&value).ok_or_else(|| bad(&key))?;
                read_only_set = true;
            }
            "readwrite" | "rw" => {
                mount.read_only = !parse_bool(&value).ok_or_else(|| bad(&key))?;
                read_only_set = true;
            }
            "required" => {
                if !matches!(mount.kind, MountType::Secret | MountType::Ssh) {
                    return Err(mount_error(format!(
                        "unexpected key 'required' for mount type '{}'",
                        type_name(mount.kind)
                    )));
                }
                mount.required = parse_bool(&value).ok_or_else(|| bad(&key))?;
            }
            "size" => {
                if mount.kind != MountType::Tmpfs {
                    return Err(mount_error(format!(
                        "unexpected key 'size' for mount type '{}'",
                        type_name(mount.kind)
                    )));
                }
                mount.size = Some(parse_ram_size(&value).ok_or_else(|| bad(&key))?);
            }
            "id" => mount.id = Some(value),
            "sharing" => {
                mount.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(mount_error(format!("unsupported sharing value {value:?}"))
                            .with_hint("use one of shared, private, locked"));
                    }
                });
            }
            "mode" => {
                mount.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| mount_error(format!("invalid value {value} for mode")))?,
                );
            }
            "uid" => {
                mount.uid = Some(
                    value
                        .parse()
                        .map_err(|_| mount_error(format!("invalid value {value} for uid")))?,
                );
            }
            "gid" => {
                mount.gid = Some(
                    value
                        .parse()
                        .map_err(|_| mount_error(format!("invalid value {value} for gid")))?,
                );
            }
            "env" => mount.env = Some(value),
            _ => {
                let error = mount_error(format!("unexpected key '{key}' in '{field}'"));
                return Err(match suggest(&key, &KEYS) {
                    Some(close) => error.with_hint(format!("did you mean {close}?")),
                    None => error,
                });
            }
        }
    }

    let file_info = matches!(
        mount.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info {
        for (name, set) in [
            ("mode", mount.mode.is_some()),
            ("uid", mount.uid.is_some()),
            ("gid", mount.gid.is_some()),
        ] {
            if set {
                return Err(mount_error(format!(
                    "{name} not allowed for {:?} type mounts",
                    type_name(mount.kind)
                )));
            }
        }
    }
    if !read_only_set {
        mount.read_only = !matches!(mount.kind, MountType::Cache | MountType::Tmpfs);
    }
    if mount.kind == MountType::Secret {
        if mount.from.is_some() {
            return Err(mount_error(
                "secret mount should not have a from".to_owned(),
            ));
        }
        if mount.sharing.is_some() {
            return Err(mount_error(
                "secret mount should not define sharing".to_owned(),
            ));
        }
        if mount.source.is_none() && mount.target.is_none() && mount.id.is_none() {
            return Err(mount_error(
                "invalid secret mount. one of source, target required".to_owned(),
            ));
        }
        if mount.source.is_some() && mount.id.is_some() {
            return Err(mount_error("both source and id can't be set".to_owned()));
        }
    }
    if mount.sharing.is_some() && mount.kind != MountType::Cache {
        return Err(mount_error(format!(
            "invalid cache sharing set for {} mount",
            type_name(mount.kind)
        )));
    }
    if matches!(
        mount.kind,
        MountType::Bind | MountType::Cache | MountType::Tmpfs
    ) && mount.target.as_deref().is_none_or(str::is_empty)
    {
        return Err(mount_error("mount target is required".to_owned())
            .with_hint("add target=<path in the container>"));
    }
    Ok(mount)
}

/// Lower-case mount type name.
pub fn type_name(kind: MountType) -> &'static str {
    match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5GiB`, `1024` (binary units).
fn parse_ram_size(value: &str) -> Option<u64> {
    let number_end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let number: f64 = value[..number_end].parse().ok()?;
    let unit = value[number_end..]
        .trim_start_matches(' ')
        .to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = number * multiplier;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Splits one CSV record (`a,"b,c",d`); `""` inside quotes is a quote.
fn csv_fields(raw: &str) -> Result<Vec<String>, Error> {
    let mut fields = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(ch) => field.push(ch),
                    None => {
                        return Err(mount_error(format!(
                            "failed to parse csv mounts: unterminated quote in {raw:?}"
                        )));
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(_) => {
                    return Err(mount_error(format!(
                        "failed to parse csv mounts: extraneous or missing \" in quoted-field in {raw:?}"
                    )));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(mount_error(format!(
                            "failed to parse csv mounts: bare \" in non-quoted field in {raw:?}"
                        )));
                    }
                    Some(ch) => field.push(ch),
                }
            }
        }
        fields.push(field);
    }
}

/// A `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// `0755`.
    Octal(u32),
    /// `u=rwX,go=rX`, `+x`, `g=u`: applied per file by the engine.
    Symbolic(String),
}

/// Parses an octal or symbolic (`[ugoa]*[+-=]([rwxXst]*|[ugo])`, comma
/// separated) mode.
pub fn parse_chmod(value: &str) -> Result<Chmod, Error> {
    let invalid = |reason: &str| {
        Error::new(ErrorKind::Chmod {
            value: value.to_owned(),
            reason: reason.to_owned(),
        })
        .with_hint("use an octal mode such as 0755 or a symbolic one such as u=rwX,go=rX")
    };
    if value.is_empty() {
        return Err(invalid("empty mode"));
    }
    if value.chars().all(|c| c.is_ascii_digit()) {
        let mode = u32::from_str_radix(value, 8).map_err(|_| invalid("not an octal number"))?;
        if mode > 0o7777 {
            return Err(invalid("octal mode out of range"));
        }
        return Ok(Chmod::Octal(mode));
    }
    for clause in value.split(',') {
        let rest = clause.trim_start_matches(['u', 'g', 'o', 'a']);
        if rest.is_empty() {
            return Err(invalid("missing operator"));
        }
        let mut chars = rest.chars().peekable();
        while let Some(op) = chars.next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(invalid("expected +, - or ="));
            }
            if matches!(chars.peek(), Some('u' | 'g' | 'o')) {
                chars.next();
                continue;
            }
            while chars
                .peek()
                .is_some_and(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
            {
                chars.next();
            }
        }
    }
    Ok(Chmod::Symbolic(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Mount, Error> {
        parse_mount(raw, &mut |value| Ok(value.replace("$T", "/t")))
    }

    #[test]
    fn mount_types_and_defaults() {
        let bind = parse("target=/src,from=build,source=/out").unwrap();
        assert_eq!(bind.kind, MountType::Bind);
        assert!(bind.read_only);
        let cache = parse("type=cache,target=$T,id=x,sharing=locked,mode=0700,uid=1").unwrap();
        assert_eq!(cache.target.as_deref(), Some("/t"));
        assert_eq!(cache.mode, Some(0o700));
        assert!(!cache.read_only);
        let tmpfs = parse("type=tmpfs,target=/tmp,size=64m").unwrap();
        assert_eq!(tmpfs.size, Some(64 << 20));
        let secret = parse("type=secret,id=tok,env=TOKEN,required").unwrap();
        assert!(secret.required);
        assert!(parse("type=ssh").is_ok());
    }

    #[test]
    fn mount_errors() {
        assert!(parse("type=bind,target=/x,mode=0600").is_err());
        assert!(parse("type=cach,target=/x").unwrap_err().hint().is_some());
        assert!(parse("type=bind,target=/x,required").is_err());
        assert!(parse("type=secret").is_err());
        assert!(parse("from=$STAGE,target=/x").is_err());
        assert!(parse("type=bind,target=/x,sharing=shared").is_err());
        assert!(parse("target=/x,\"unterminated").is_err());
    }

    #[test]
    fn chmod_forms() {
        assert_eq!(parse_chmod("755").unwrap(), Chmod::Octal(0o755));
        assert!(matches!(
            parse_chmod("u=rwX,go=rX").unwrap(),
            Chmod::Symbolic(_)
        ));
        assert!(matches!(parse_chmod("+x").unwrap(), Chmod::Symbolic(_)));
        assert!(matches!(parse_chmod("g=u").unwrap(), Chmod::Symbolic(_)));
        assert!(parse_chmod("abc").is_err());
        assert!(parse_chmod("999").is_err());
        assert!(parse_chmod("u+q").is_err());
    }
}
