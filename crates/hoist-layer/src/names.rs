//! Entry-name normalisation, shared by the apply side.

/// Why a name could not be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    /// `..` climbs above the root.
    Escapes,
    /// A NUL byte (not representable as a path).
    Invalid,
}

/// Normalises a tar entry name the way docker does: leading `/` and `./` are dropped, `.`
/// components vanish, and `..` is resolved lexically. Returns the components; an empty list
/// is the root itself.
pub(crate) fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, NameError> {
    if raw.contains(&0) {
        return Err(NameError::Invalid);
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() {
                    return Err(NameError::Escapes);
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

/// Joins components with `/`.
pub(crate) fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        type Case<'a> = (&'a [u8], Result<&'a [u8], NameError>);
        let cases: &[Case<'_>] = &[
            (b"etc/passwd", Ok(b"etc/passwd")),
            (b"/etc/passwd", Ok(b"etc/passwd")),
            (b"./etc/", Ok(b"etc")),
            (b"./", Ok(b"")),
            (b"a/./b//c/", Ok(b"a/b/c")),
            (b"a/../b", Ok(b"b")),
            (b"../etc", Err(NameError::Escapes)),
            (b"a/../../etc", Err(NameError::Escapes)),
            (b"/../etc", Err(NameError::Escapes)),
        ];
        for (raw, want) in cases {
            let got = normalize(raw).map(|p| join(&p));
            assert_eq!(got, want.map(<[u8]>::to_vec), "{raw:?}");
        }
    }
}
