//! Instruction flags (`--name=value`): the declared set per instruction,
//! parsed the way BuildKit's `BFlags` does.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, suggest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    Bool,
    String,
    /// Repeatable.
    Strings,
}

/// The flags given on one instruction.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    values: BTreeMap<&'static str, Vec<String>>,
    bools: BTreeMap<&'static str, bool>,
}

impl Flags {
    pub(crate) fn parse(
        raw: &[String],
        declared: &[(&'static str, FlagKind)],
    ) -> Result<Self, Error> {
        let mut flags = Self::default();
        for argument in raw {
            if argument == "--" {
                break;
            }
            let Some(body) = argument.strip_prefix("--") else {
                return Err(Error::new(ErrorKind::Invalid(format!(
                    "arg should start with -- : {argument}"
                ))));
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let flag_name = format!("--{name}");
            let Some(&(declared_name, kind)) = declared.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = declared.iter().map(|(n, _)| *n).collect();
                let error = Error::new(ErrorKind::UnknownFlag(flag_name));
                return Err(match suggest(name, &names) {
                    Some(close) => error.with_hint(format!("did you mean --{close}?")),
                    None if names.is_empty() => error.with_hint("this instruction takes no flags"),
                    None => error.with_hint(format!(
                        "valid flags are {}",
                        names
                            .iter()
                            .map(|n| format!("--{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
            };
            let seen =
                flags.values.contains_key(declared_name) || flags.bools.contains_key(declared_name);
            if seen && kind != FlagKind::Strings {
                return Err(Error::new(ErrorKind::DuplicateFlag(flag_name)));
            }
            match kind {
                FlagKind::Bool => {
                    let parsed = match value.map(str::to_ascii_lowercase).as_deref() {
                        Some("") => return Err(Error::new(ErrorKind::MissingFlagValue(flag_name))),
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(_) => {
                            return Err(Error::new(ErrorKind::BadBool {
                                flag: flag_name,
                                value: value.unwrap_or_default().to_owned(),
                            }));
                        }
                    };
                    flags.bools.insert(declared_name, parsed);
                }
                FlagKind::String | FlagKind::Strings => {
                    let Some(value) = value else {
                        return Err(Error::new(ErrorKind::MissingFlagValue(flag_name)));
                    };
                    flags
                        .values
                        .entry(declared_name)
                        .or_default()
                        .push(value.to_owned());
                }
            }
        }
        Ok(flags)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.values
            .get(name)
            .and_then(|values| values.last().cloned())
    }

    pub(crate) fn strings(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    /// `None` when the flag was not given.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
}
