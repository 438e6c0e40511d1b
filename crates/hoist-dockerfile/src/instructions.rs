//! Typed instructions: every instruction and flag BuildKit accepts, checked
//! before any variable is expanded. Unknown instructions and flags are
//! errors with a did-you-mean hint.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Span, suggest};
use crate::flags::{FlagKind, Flags};
use crate::mount;
use crate::parser::{Dockerfile, Heredoc, Node, parse_heredoc};

/// Every instruction name, upper-cased.
pub const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One typed instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// The lines it covers.
    pub span: Span,
    /// The logical line as written (for history entries).
    pub original: String,
}

/// The instructions, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From(From),
    Arg(Vec<ArgDeclaration>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Copy(FileCopy),
    Add(FileCopy),
    Workdir(String),
    User(String),
    Volume(Vec<String>),
    Expose(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger expression stored in the image, run by child builds.
    Onbuild(String),
    Maintainer(String),
}

/// `FROM [--platform=…] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Image reference, `scratch` or a stage name (unexpanded).
    pub image: String,
    /// Stage name, lower-cased.
    pub name: Option<String>,
    /// `--platform` (unexpanded).
    pub platform: Option<String>,
}

/// `NAME[=default]` in an ARG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDeclaration {
    /// The name (unexpanded).
    pub name: String,
    /// The default (unexpanded).
    pub default: Option<String>,
}

/// A key and value of ENV or LABEL (both unexpanded, quotes still in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A command in exec form or shell form, with its heredoc files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec-form arguments, or the one shell-form string.
    pub args: Vec<String>,
    /// Shell form: the arguments are wrapped in the current SHELL.
    pub shell_form: bool,
    /// Heredoc bodies, in order.
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network` and `--security` take the plan's own types: they pass through unchanged.
pub use hoist_plan::{Network, Security};

/// `RUN [--mount=…]… [--network=…] [--security=…] command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    /// `--mount` values, unexpanded; see [`mount::parse_mount`].
    pub mounts: Vec<String>,
    pub network: Network,
    pub security: Security,
}

/// An inline file from a heredoc source of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc name, used as the file name.
    pub name: String,
    /// Content, tabs already chomped for `<<-`.
    pub content: String,
    /// Whether variables in the content are expanded.
    pub expand: bool,
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    /// Source paths or URLs (unexpanded), heredoc sources excluded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineFile>,
    /// Destination (unexpanded).
    pub dest: String,
    /// COPY `--from` (never expanded).
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// COPY `--parents`.
    pub parents: bool,
    pub excludes: Vec<String>,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`, when given.
    pub keep_git_dir: Option<bool>,
    /// ADD `--unpack`, when given.
    pub unpack: Option<bool>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the inherited check.
    None,
    /// `HEALTHCHECK [options] CMD …`.
    Check {
        /// `["CMD", args…]` or `["CMD-SHELL", command]`.
        test: Vec<String>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

/// One build stage: its FROM and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Position among the stages, from 0.
    pub index: usize,
    pub from: From,
    /// The FROM line's span and text.
    pub span: Span,
    pub original: String,
    pub commands: Vec<Command>,
}

/// A Dockerfile typed: the ARGs before the first FROM, then the stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instructions {
    pub global_args: Vec<Command>,
    pub stages: Vec<Stage>,
}

/// Types every instruction and groups them into stages.
pub fn parse_instructions(file: &Dockerfile) -> Result<Instructions, Error> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &file.nodes {
        let command = parse_command(node)?;
        match command.instruction {
            Instruction::From(from) => stages.push(Stage {
                index: stages.len(),
                from,
                span: command.span,
                original: command.original,
                commands: Vec::new(),
            }),
            Instruction::Arg(_) if stages.is_empty() => global_args.push(command),
            _ => match stages.last_mut() {
                Some(stage) => stage.commands.push(command),
                None => {
                    return Err(Error::at(ErrorKind::NoStage, command.span)
                        .with_hint("only ARG may come before the first FROM"));
                }
            },
        }
    }
    Ok(Instructions {
        global_args,
        stages,
    })
}

/// Types one instruction node.
pub fn parse_command(node: &Node) -> Result<Command, Error> {
    let instruction = parse_instruction(node).map_err(|error| error.with_span(node.span))?;
    Ok(Command {
        instruction,
        span: node.span,
        original: node.original.trim().to_owned(),
    })
}

fn no_flags(node: &Node) -> Result<(), Error> {
    Flags::parse(&node.flags, &[]).map(drop)
}

fn arguments_error(message: String) -> Error {
    Error::new(ErrorKind::Arguments(message))
}

fn exactly_one(node: &Node, name: &str) -> Result<String, Error> {
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(arguments_error(format!(
            "{name} requires exactly one argument"
        ))),
    }
}

fn at_least_one(node: &Node, name: &str) -> Result<(), Error> {
    if node.args.is_empty() {
        return Err(arguments_error(format!(
            "{name} requires at least one argument"
        )));
    }
    Ok(())
}

fn parse_instruction(node: &Node) -> Result<Instruction, Error> {
    let name = node.name();
    Ok(match name.as_str() {
        "from" => Instruction::From(parse_from(node)?),
        "arg" => {
            at_least_one(node, "ARG")?;
            no_flags(node)?;
            let mut declarations = Vec::new();
            for word in &node.args {
                let declaration = match word.split_once('=') {
                    Some(("", _)) => {
                        return Err(arguments_error("ARG names can not be blank".to_owned()));
                    }
                    Some((name, value)) => ArgDeclaration {
                        name: name.to_owned(),
                        default: Some(value.to_owned()),
                    },
                    None => ArgDeclaration {
                        name: word.clone(),
                        default: None,
                    },
                };
                declarations.push(declaration);
            }
            Instruction::Arg(declarations)
        }
        "env" => Instruction::Env(key_values(node, "ENV")?),
        "label" => Instruction::Label(key_values(node, "LABEL")?),
        "maintainer" => {
            let value = exactly_one(node, "MAINTAINER")?;
            no_flags(node)?;
            Instruction::Maintainer(value)
        }
        "run" => {
            let flags = Flags::parse(
                &node.flags,
                &[
                    ("mount", FlagKind::Strings),
                    ("network", FlagKind::String),
                    ("security", FlagKind::String),
                ],
            )?;
            let network = match flags.string("network").as_deref() {
                None | Some("default") => Network::Default,
                Some("none") => Network::None,
                Some("host") => Network::Host,
                Some(other) => {
                    return Err(Error::new(ErrorKind::Invalid(format!(
                        "invalid network mode {other:?}"
                    )))
                    .with_hint("use one of default, none, host"));
                }
            };
            let security = match flags.string("security").as_deref() {
                None | Some("sandbox") => Security::Sandbox,
                Some("insecure") => Security::Insecure,
                Some(other) => {
                    return Err(Error::new(ErrorKind::Invalid(format!(
                        "security {other:?} is not valid"
                    )))
                    .with_hint("use one of sandbox, insecure"));
                }
            };
            let mounts = flags.strings("mount");
            for raw in &mounts {
                mount::check_mount(raw)?;
            }
            Instruction::Run(Run {
                command: command_line(node),
                mounts,
                network,
                security,
            })
        }
        "cmd" => {
            no_flags(node)?;
            Instruction::Cmd(command_line(node))
        }
        "entrypoint" => {
            no_flags(node)?;
            Instruction::Entrypoint(command_line(node))
        }
        "shell" => {
            no_flags(node)?;
            at_least_one(node, "SHELL")?;
            if !node.json {
                return Err(arguments_error(
                    "SHELL requires the arguments to be in JSON form".to_owned(),
                )
                .with_hint(r#"write it as SHELL ["executable", "parameters"]"#));
            }
            Instruction::Shell(node.args.clone())
        }
        "copy" | "add" => parse_copy(node, name == "add")?,
        "workdir" => {
            let path = exactly_one(node, "WORKDIR")?;
            no_flags(node)?;
            Instruction::Workdir(path)
        }
        "user" => {
            let user = exactly_one(node, "USER")?;
            no_flags(node)?;
            Instruction::User(user)
        }
        "volume" => {
            at_least_one(node, "VOLUME")?;
            no_flags(node)?;
            let mut volumes = Vec::new();
            for volume in &node.args {
                let volume = volume.trim();
                if volume.is_empty() {
                    return Err(arguments_error(
                        "VOLUME specified can not be an empty string".to_owned(),
                    ));
                }
                volumes.push(volume.to_owned());
            }
            Instruction::Volume(volumes)
        }
        "expose" => {
            at_least_one(node, "EXPOSE")?;
            no_flags(node)?;
            let mut ports = node.args.clone();
            ports.sort();
            Instruction::Expose(ports)
        }
        "stopsignal" => Instruction::StopSignal(exactly_one(node, "STOPSIGNAL")?),
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(node)?),
        "onbuild" => {
            let Some(trigger) = &node.nested else {
                return Err(arguments_error(
                    "ONBUILD requires at least one argument".to_owned(),
                ));
            };
            no_flags(node)?;
            let trigger_name = trigger.keyword.trim().to_ascii_uppercase();
            match trigger_name.as_str() {
                "ONBUILD" => {
                    return Err(Error::new(ErrorKind::Invalid(
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned(),
                    )));
                }
                "MAINTAINER" | "FROM" => {
                    return Err(Error::new(ErrorKind::Invalid(format!(
                        "{trigger_name} isn't allowed as an ONBUILD trigger"
                    ))));
                }
                _ => {}
            }
            let mut expression = strip_keyword(&node.original, "onbuild").to_owned();
            for heredoc in &node.heredocs {
                expression.push('\n');
                expression.push_str(&heredoc.content);
                expression.push_str(&heredoc.name);
            }
            Instruction::Onbuild(expression)
        }
        _ => {
            let error = Error::new(ErrorKind::UnknownInstruction(node.keyword.clone()));
            return Err(match suggest(&node.keyword, &INSTRUCTIONS) {
                Some(close) => error.with_hint(format!("did you mean {close}?")),
                None => error,
            });
        }
    })
}

/// `original` without its leading keyword and the blanks after it.
fn strip_keyword<'a>(original: &'a str, keyword: &str) -> &'a str {
    let trimmed = original.trim_start();
    match trimmed.get(..keyword.len()) {
        Some(head) if head.eq_ignore_ascii_case(keyword) => trimmed[keyword.len()..].trim_start(),
        _ => trimmed,
    }
}

fn parse_from(node: &Node) -> Result<From, Error> {
    let args = &node.args;
    let name = match args.len() {
        1 => None,
        3 if args[1].eq_ignore_ascii_case("as") => {
            let lower = args[2].to_lowercase();
            if !valid_stage_name(&lower) {
                return Err(Error::new(ErrorKind::Invalid(format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    crate::go_quote(&args[2])
                ))));
            }
            Some(lower)
        }
        count => {
            let error = arguments_error("FROM requires either one or three arguments".to_owned());
            return Err(if count == 2 && args[1].eq_ignore_ascii_case("as") {
                error.with_hint("name the stage after AS, e.g. `FROM <image> AS build`")
            } else {
                error
            });
        }
    };
    let flags = Flags::parse(&node.flags, &[("platform", FlagKind::String)])?;
    Ok(From {
        image: node.args[0].clone(),
        name,
        platform: flags.string("platform"),
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn key_values(node: &Node, name: &str) -> Result<Vec<KeyValue>, Error> {
    no_flags(node)?;
    if node.args.is_empty() {
        return Err(arguments_error(format!(
            "{name} requires at least one argument"
        )));
    }
    let mut pairs = Vec::new();
    for triple in node.args.chunks(3) {
        let [key, value, _] = triple else {
            return Err(arguments_error(format!(
                "Bad input to {name}, too many arguments"
            )));
        };
        if key.is_empty() {
            return Err(arguments_error(format!("{name} names can not be blank")));
        }
        pairs.push(KeyValue {
            key: key.clone(),
            value: value.clone(),
        });
    }
    Ok(pairs)
}

fn command_line(node: &Node) -> CommandLine {
    CommandLine {
        args: node.args.clone(),
        shell_form: !node.json,
        heredocs: node.heredocs.clone(),
    }
}

fn parse_copy(node: &Node, add: bool) -> Result<Instruction, Error> {
    let keyword = if add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(arguments_error(format!(
            "{keyword} requires at least two arguments, but only one was provided. Destination could not be determined"
        )));
    }
    let mut declared = vec![
        ("chown", FlagKind::String),
        ("chmod", FlagKind::String),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Strings),
    ];
    if add {
        declared.extend([
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
        ]);
    } else {
        declared.extend([("from", FlagKind::String), ("parents", FlagKind::Bool)]);
    }
    let flags = Flags::parse(&node.flags, &declared)?;

    let (dest, sources) = node
        .args
        .split_last()
        .unwrap_or_else(|| unreachable!("two arguments checked"));
    if parse_heredoc(dest).ok().flatten().is_some() {
        return Err(arguments_error(format!(
            "{keyword} cannot accept a heredoc as a destination"
        )));
    }
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    for source in sources {
        match parse_heredoc(source).ok().flatten() {
            Some(word) => {
                let body = node.heredocs.iter().find(|h| h.name == word.name);
                let content = body.map(|h| h.content.clone()).unwrap_or_default();
                inline.push(InlineFile {
                    name: word.name,
                    content: if word.chomp {
                        crate::chomp(&content)
                    } else {
                        content
                    },
                    expand: word.expand,
                });
            }
            None => paths.push(source.clone()),
        }
    }
    if let Some(chmod) = flags.string("chmod")
        && !chmod.contains('$')
    {
        mount::parse_chmod(&chmod)?;
    }
    let copy = FileCopy {
        sources: paths,
        inline,
        dest: dest.clone(),
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        excludes: flags.strings("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.bool("unpack"),
    };
    Ok(if add {
        Instruction::Add(copy)
    } else {
        Instruction::Copy(copy)
    })
}

fn parse_healthcheck(node: &Node) -> Result<Healthcheck, Error> {
    let Some((kind, args)) = node.args.split_first() else {
        return Err(arguments_error(
            "HEALTHCHECK requires at least one argument".to_owned(),
        ));
    };
    let kind = kind.to_ascii_uppercase();
    if kind == "NONE" {
        if !args.is_empty() {
            return Err(arguments_error(
                "HEALTHCHECK NONE takes no arguments".to_owned(),
            ));
        }
        return Ok(Healthcheck::None);
    }
    let flags = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    if kind != "CMD" {
        return Err(Error::new(ErrorKind::Invalid(format!(
            "Unknown type {} in HEALTHCHECK (try CMD)",
            crate::go_quote(&kind)
        ))));
    }
    if args.is_empty() {
        return Err(arguments_error(
            "Missing command after HEALTHCHECK CMD".to_owned(),
        ));
    }
    let test_kind = if node.json { "CMD" } else { "CMD-SHELL" };
    let mut test = vec![test_kind.to_owned()];
    test.extend(args.iter().cloned());
    let interval = |name: &str| -> Result<Option<Duration>, Error> {
        let Some(value) = flags.string(name).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let duration = parse_duration(&value).ok_or_else(|| {
            Error::new(ErrorKind::Invalid(format!(
                "time: invalid duration {}",
                crate::go_quote(&value)
            )))
        })?;
        if duration.is_zero() {
            return Ok(None);
        }
        if duration < Duration::from_millis(1) {
            return Err(Error::new(ErrorKind::Invalid(format!(
                "Interval {name:?} cannot be less than 1ms"
            ))));
        }
        Ok(Some(duration))
    };
    let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
        None => None,
        Some(value) => {
            let parsed: i32 = value.parse().map_err(|_| {
                Error::new(ErrorKind::Invalid(format!(
                    "invalid --retries value {value:?}"
                )))
            })?;
            if parsed < 0 {
                return Err(Error::new(ErrorKind::Invalid(format!(
                    "--retries cannot be negative ({parsed})"
                ))));
            }
            Some(parsed.unsigned_abs())
        }
    };
    Ok(Healthcheck::Check {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration` for non-negative values (`1h30m`, `1.5s`, `300ms`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * nanos_per_unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn command(text: &str) -> Result<Instruction, Error> {
        let file = parse(text)?;
        parse_command(&file.nodes[0]).map(|c| c.instruction)
    }

    #[test]
    fn run_flags() {
        let Instruction::Run(run) =
            command("RUN --mount=type=cache,target=/c --network=none --security=insecure make")
                .unwrap()
        else {
            panic!("not a RUN");
        };
        assert_eq!(run.mounts, ["type=cache,target=/c"]);
        assert_eq!(run.network, Network::None);
        assert_eq!(run.security, Security::Insecure);
        assert!(run.command.shell_form);
    }

    #[test]
    fn copy_flags_and_heredoc_source() {
        let text = "COPY --from=build --chown=1:2 --chmod=u+x --link --parents --exclude=*.md <<EOF /dst\nhi\nEOF\n";
        let Instruction::Copy(copy) = command(text).unwrap() else {
            panic!("not a COPY");
        };
        assert_eq!(copy.from.as_deref(), Some("build"));
        assert_eq!(copy.chmod.as_deref(), Some("u+x"));
        assert!(copy.link && copy.parents);
        assert_eq!(copy.excludes, ["*.md"]);
        assert_eq!(copy.inline[0].content, "hi\n");
        assert!(copy.sources.is_empty());
    }

    #[test]
    fn add_flags() {
        let Instruction::Add(add) =
            command("ADD --checksum=sha256:abc --keep-git-dir --unpack=false https://x/y.tar /d")
                .unwrap()
        else {
            panic!("not an ADD");
        };
        assert_eq!(add.keep_git_dir, Some(true));
        assert_eq!(add.unpack, Some(false));
        assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn unknown_flag_suggests() {
        let error = command("COPY --chmood=755 a b").unwrap_err();
        assert_eq!(error.kind(), &ErrorKind::UnknownFlag("--chmood".to_owned()));
        assert_eq!(error.hint(), Some("did you mean --chmod?"));
        assert!(command("ADD --from=x a b").is_err());
    }

    #[test]
    fn unknown_instruction_suggests() {
        let error = command("RUNN x").unwrap_err();
        assert_eq!(error.hint(), Some("did you mean RUN?"));
    }

    #[test]
    fn healthcheck_forms() {
        assert_eq!(
            command("HEALTHCHECK NONE").unwrap(),
            Instruction::Healthcheck(Healthcheck::None)
        );
        let Instruction::Healthcheck(Healthcheck::Check {
            test,
            interval,
            retries,
            ..
        }) = command("HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f x").unwrap()
        else {
            panic!("not a check");
        };
        assert_eq!(test, ["CMD-SHELL", "curl -f x"]);
        assert_eq!(interval, Some(Duration::from_secs(90)));
        assert_eq!(retries, Some(3));
        assert!(command("HEALTHCHECK --interval=1us CMD x").is_err());
        assert!(command("HEALTHCHECK FOO x").is_err());
    }

    #[test]
    fn onbuild_forbidden_forms() {
        assert!(command("ONBUILD ONBUILD RUN x").is_err());
        assert!(command("ONBUILD FROM x").is_err());
        assert!(command("ONBUILD MAINTAINER x").is_err());
        assert_eq!(
            command("onbuild RUN echo hi").unwrap(),
            Instruction::Onbuild("RUN echo hi".to_owned())
        );
    }

    #[test]
    fn from_forms() {
        assert!(command("FROM a AS").is_err());
        assert!(command("FROM a AS 1bad").is_err());
        let Instruction::From(from) = command("FROM --platform=$BUILDPLATFORM a AS Build").unwrap()
        else {
            panic!("not FROM");
        };
        assert_eq!(from.name.as_deref(), Some("build"));
        assert_eq!(from.platform.as_deref(), Some("$BUILDPLATFORM"));
    }

    #[test]
    fn shell_must_be_json() {
        assert!(command("SHELL /bin/bash -c").is_err());
        assert_eq!(
            command(r#"SHELL ["/bin/bash", "-c"]"#).unwrap(),
            Instruction::Shell(vec!["/bin/bash".to_owned(), "-c".to_owned()])
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_duration("5"), None);
    }
}
