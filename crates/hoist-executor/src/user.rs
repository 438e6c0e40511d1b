//! Resolve `USER` the way BuildKit does (`executor/oci/user.go` over moby/sys/user's
//! `GetExecUser`), from the image's /etc/passwd and /etc/group text.

use crate::error::SandboxError;

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// setgroups list; starts with the primary gid like containerd's `ensureAdditionalGids`.
    pub(crate) groups: Vec<u32>,
    /// From passwd by uid; "/" when absent (runc's default).
    pub(crate) home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

// Malformed lines are skipped like moby/sys/user does.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(PasswdEntry {
            name: f.first().copied()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        Some(GroupEntry {
            name: f.first().copied()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

fn parse_id(s: &str, spec: &str) -> Result<Option<u32>, SandboxError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    s.parse::<u32>().map(Some).map_err(|_| SandboxError::BadId {
        spec: spec.to_owned(),
    })
}

/// Resolve `spec` against the file contents (`None` = file missing).
pub(crate) fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, SandboxError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let home_of = |uid: u32| {
        passwd_entries(passwd)
            .find(|e| e.uid == uid)
            .map_or_else(|| "/".to_owned(), |e| e.home.to_owned())
    };
    let finish = |uid: u32, gid: u32, mut groups: Vec<u32>| {
        // containerd's ensureAdditionalGids: the primary gid comes first.
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        ExecUser {
            uid,
            gid,
            groups,
            home: home_of(uid),
        }
    };

    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    // BuildKit's fast path: "uid:gid" both numeric ("root" counts as 0), no supplementary groups.
    let fast = |s: &str| {
        if s == "root" {
            Ok(Some(0))
        } else {
            parse_id(s, spec)
        }
    };
    if let Some(g) = group_arg
        && let (Some(uid), Some(gid)) = (fast(user_arg)?, fast(g)?)
    {
        return Ok(finish(uid, gid, Vec::new()));
    }

    // The empty user is uid 0; a failed lookup then falls back to 0:0 (BuildKit's isDefault).
    let (user_arg, is_default) = if user_arg.is_empty() {
        ("0", group_arg.is_none())
    } else {
        (user_arg, false)
    };
    let uid_arg = parse_id(user_arg, spec)?;
    let matched = passwd_entries(passwd).find(|e| match uid_arg {
        Some(uid) => e.uid == uid,
        None => e.name == user_arg,
    });
    let (uid, mut gid, name) = match (&matched, uid_arg) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => {
            return Err(SandboxError::UnknownUser {
                name: user_arg.to_owned(),
            });
        }
    };
    let mut sgids = Vec::new();
    match group_arg {
        Some(g) if !g.is_empty() => {
            let gid_arg = parse_id(g, spec)?;
            let found = group_entries(group).find(|e| match gid_arg {
                Some(gid) => e.gid == gid,
                None => e.name == g,
            });
            gid = match (found, gid_arg) {
                (Some(e), _) => e.gid,
                (None, Some(n)) => n,
                (None, None) if is_default => 0,
                (None, None) => {
                    return Err(SandboxError::UnknownGroup { name: g.to_owned() });
                }
            };
        }
        _ => {
            if let Some(name) = name {
                sgids = group_entries(group)
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(finish(uid, gid, sgids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nwheel:x:10:root,app\n";

    fn r(spec: &str) -> Result<ExecUser, SandboxError> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn default_is_root_with_its_groups() {
        let u = r("").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![0, 10], "/root")
        );
    }

    #[test]
    fn name_gets_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.groups, vec![1000, 2000, 10]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn explicit_group_drops_supplementary_groups() {
        let u = r("app:extra").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 2000, vec![2000]));
    }

    #[test]
    fn numeric_forms() {
        let u = r("1000:1000").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (1000, 1000, vec![1000], "/home/app")
        );
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 1000, vec![1000, 2000, 10]));
        let u = r("4242:77").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 77));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            r("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
    }

    #[test]
    fn missing_files_still_allow_numeric_and_default() {
        let u = resolve("", None, None).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.groups, u.home.as_str()),
            (0, 0, vec![0], "/")
        );
        assert!(resolve("app", None, None).is_err());
        assert_eq!(resolve("5:6", None, None).unwrap().gid, 6);
    }
}
