//! Lowering: from typed instructions to a [`Plan`], resolving ARG/ENV
//! scoping, platform args, stage references (`FROM`, `COPY --from`,
//! `RUN --mount from=`), `--target` and pruning of unused stages.

use std::collections::{BTreeMap, BTreeSet};

use hoist_plan::{
    Base, Chmod as PlanChmod, Copy, Exec, Healthcheck as PlanHealthcheck, InlineFile, Lines, Meta,
    Mount as PlanMount, MountKind, Op, Plan, Platform, Sharing as PlanSharing, SourceRef, Stage,
    Step,
};

use crate::error::{Error, ErrorKind, Span, suggest};
use crate::ignore::clean;
use crate::instructions::{
    Command, FileCopy, Healthcheck, Instruction, Run, parse_command, parse_instructions,
};
use crate::mount::{self, Chmod, MountType, Sharing};
use crate::parser::{Dockerfile, Warning, parse, parse_heredoc};
use crate::shell::{Env, Lexer};

/// The predefined proxy args: usable without `ARG`, given to RUN, kept out
/// of history and cache keys unless declared.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `PATH` for images that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the engine knows about a base image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseImage {
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers, run at the start of a stage built on it.
    pub onbuild: Vec<String>,
}

/// Looks up base image configs (the engine resolves them; tests fake them).
pub trait BaseImages {
    fn base_image(&self, reference: &str, platform: &Platform) -> Option<BaseImage>;
}

/// No base image information: image bases start with an empty config.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBaseImages;

impl BaseImages for NoBaseImages {
    fn base_image(&self, _reference: &str, _platform: &Platform) -> Option<BaseImage> {
        None
    }
}

/// Inputs of [`lower`] besides the Dockerfile.
pub struct LowerOptions<'a> {
    /// `--build-arg` values in command-line order; `None` means "take it from
    /// `environment`".
    pub build_args: Vec<(String, Option<String>)>,
    /// The client environment, for value-less build args.
    pub environment: &'a dyn Env,
    /// `--target`; the last stage when `None`.
    pub target: Option<String>,
    /// `--platform`; the build platform when `None`.
    pub target_platform: Option<Platform>,
    /// The platform the build runs on.
    pub build_platform: Platform,
    pub base_images: &'a dyn BaseImages,
}

impl<'a> LowerOptions<'a> {
    /// Options with no build args, target or base image information.
    pub fn new(build_platform: Platform) -> Self {
        Self {
            build_args: Vec::new(),
            environment: &crate::shell::EmptyEnv,
            target: None,
            target_platform: None,
            build_platform,
            base_images: &NoBaseImages,
        }
    }
}

/// The plan plus what the parser noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    pub plan: Plan,
    pub warnings: Vec<Warning>,
}

/// Parses and lowers Dockerfile text.
pub fn lower(text: &str, options: &LowerOptions<'_>) -> Result<Lowered, Error> {
    let file = parse(text)?;
    let plan = lower_parsed(&file, options)?;
    Ok(Lowered {
        plan,
        warnings: file.warnings,
    })
}

/// An ordered variable list where setting a name replaces it in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(key, _)| key == name) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }
}

impl Env for Vars {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The dispatch state of a stage, inherited by stages built on it.
#[derive(Debug, Clone)]
struct State {
    env: Vars,
    build_args: Vec<(String, Option<String>)>,
    workdir: String,
    user: Option<String>,
    shell: Vec<String>,
    onbuild: Vec<String>,
}

struct StageInfo {
    base: Base,
    platform: Platform,
    image: Option<BaseImage>,
    /// Dockerfile indices of stages read by COPY --from / --mount from=.
    reads: BTreeSet<usize>,
    triggers: Vec<Command>,
}

struct Lowering {
    lexer: Lexer,
    cli: BTreeMap<String, String>,
    global: Vars,
    names: Vec<Option<String>>,
}

/// Lowers an already parsed Dockerfile.
pub fn lower_parsed(file: &Dockerfile, options: &LowerOptions<'_>) -> Result<Plan, Error> {
    let instructions = parse_instructions(file)?;
    let stages = &instructions.stages;
    if stages.is_empty() {
        return Err(Error::new(ErrorKind::Invalid(
            "dockerfile contains no stages to build".to_owned(),
        )));
    }
    let names: Vec<Option<String>> = stages.iter().map(|s| s.from.name.clone()).collect();
    let target = match &options.target {
        None => stages.len() - 1,
        Some(target) => {
            let lower = target.to_lowercase();
            names
                .iter()
                .position(|name| name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
                    let error = Error::new(ErrorKind::UnknownTarget(target.clone()));
                    match suggest(target, &known) {
                        Some(close) => error.with_hint(format!("did you mean {close}?")),
                        None => error,
                    }
                })?
        }
    };

    let mut cli = BTreeMap::new();
    for (name, value) in &options.build_args {
        let value = value
            .clone()
            .or_else(|| options.environment.lookup(name).map(str::to_owned));
        if let Some(value) = value {
            cli.insert(name.clone(), value);
        }
    }
    let lexer = Lexer::new(file.escape);
    let build = &options.build_platform;
    let target_platform = options
        .target_platform
        .clone()
        .unwrap_or_else(|| build.clone());
    let target_stage = options
        .target
        .clone()
        .or_else(|| names[target].clone())
        .unwrap_or_else(|| "default".to_owned());
    let mut global = Vars::default();
    for (name, value) in [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.architecture.clone()),
        ("BUILDVARIANT", build.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", target_platform.to_string()),
        ("TARGETOS", target_platform.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target_platform.architecture.clone()),
        (
            "TARGETVARIANT",
            target_platform.variant.clone().unwrap_or_default(),
        ),
        ("TARGETSTAGE", target_stage),
    ] {
        let value = cli.get(name).cloned().unwrap_or(value);
        global.set(name, &value);
    }
    for command in &instructions.global_args {
        let Instruction::Arg(declarations) = &command.instruction else {
            continue;
        };
        for declaration in declarations {
            let value = match (cli.get(&declaration.name), &declaration.default) {
                (Some(value), _) => Some(value.clone()),
                (None, Some(default)) => Some(
                    lexer
                        .expand_word(default, &global)
                        .map_err(|e| Error::from(e).with_span(command.span))?,
                ),
                (None, None) => None,
            };
            if let Some(value) = value {
                global.set(&declaration.name, &value);
            }
        }
    }

    let lowering = Lowering {
        lexer,
        cli,
        global,
        names,
    };

    // First pass: bases, platforms and the stages each one reads.
    let mut infos = Vec::with_capacity(stages.len());
    for stage in stages {
        let span = stage.span;
        let image = lowering
            .lexer
            .expand_word(&stage.from.image, &lowering.global)
            .map_err(|e| Error::from(e).with_span(span))?;
        if image.trim().is_empty() {
            return Err(
                Error::at(ErrorKind::BlankBase(stage.from.image.clone()), span).with_hint(
                    "set the ARG used in FROM before the first FROM, or pass --build-arg",
                ),
            );
        }
        let platform = match &stage.from.platform {
            Some(raw) => {
                let expanded = lowering
                    .lexer
                    .expand_word(raw, &lowering.global)
                    .map_err(|e| Error::from(e).with_span(span))?;
                expanded
                    .parse::<Platform>()
                    .map_err(|_| Error::at(ErrorKind::Platform(expanded.clone()), span))?
            }
            None => target_platform.clone(),
        };
        let lower_image = image.to_lowercase();
        let earlier = lowering.names[..stage.index]
            .iter()
            .position(|name| name.as_deref() == Some(lower_image.as_str()));
        let (base, base_image) = match earlier {
            Some(index) => (Base::Stage(index), None),
            None if lower_image == "scratch" => (Base::Scratch, None),
            None => {
                let found = options.base_images.base_image(&image, &platform);
                (Base::Image(image), found)
            }
        };
        let trigger_source = match &base {
            Base::Stage(parent) => stages[*parent]
                .commands
                .iter()
                .filter_map(|c| match &c.instruction {
                    Instruction::Onbuild(expression) => Some(expression.clone()),
                    _ => None,
                })
                .collect(),
            _ => base_image
                .as_ref()
                .map(|b| b.onbuild.clone())
                .unwrap_or_default(),
        };
        let mut triggers = Vec::new();
        for expression in &trigger_source {
            let parsed = parse(expression).map_err(|e| e.with_span(span))?;
            for node in &parsed.nodes {
                let mut command = parse_command(node)
                    .map_err(|e| Error::new(e.kind().clone()).with_span(span))?;
                command.span = span;
                triggers.push(command);
            }
        }
        let mut reads = BTreeSet::new();
        for command in triggers.iter().chain(&stage.commands) {
            for reference in stage_references(command)? {
                if let Some(index) = lowering.stage_index(&reference, command.span)? {
                    reads.insert(index);
                }
            }
        }
        infos.push(StageInfo {
            base,
            platform,
            image: base_image,
            reads,
            triggers,
        });
    }

    // Reachable stages from the target, dependencies first.
    let mut order = Vec::new();
    let mut marks = vec![0u8; stages.len()];
    visit(target, &infos, &mut marks, &mut order, &lowering.names)?;
    let mut position = vec![usize::MAX; stages.len()];
    for (plan_index, &stage_index) in order.iter().enumerate() {
        position[stage_index] = plan_index;
    }

    let mut plan_stages: Vec<Stage> = Vec::with_capacity(order.len());
    let mut states: Vec<Option<State>> = vec![None; stages.len()];
    for &index in &order {
        let stage = &stages[index];
        let info = &infos[index];
        let mut state = match &info.base {
            Base::Stage(parent) => states[*parent].clone().ok_or_else(|| {
                Error::at(
                    ErrorKind::Cycle(stage_label(&lowering.names, index)),
                    stage.span,
                )
            })?,
            _ => initial_state(info.image.as_ref(), &info.platform),
        };
        state.onbuild.clear();
        let mut steps = Vec::new();
        for command in info.triggers.iter().chain(&stage.commands) {
            let step = lowering.dispatch(command, &mut state, &position, &info.platform)?;
            steps.push(step);
        }
        let dependencies = info
            .reads
            .iter()
            .map(|&read| position[read])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let base = match &info.base {
            Base::Stage(parent) => Base::Stage(position[*parent]),
            other => other.clone(),
        };
        plan_stages.push(Stage {
            name: stage.from.name.clone(),
            dockerfile_index: index,
            base,
            platform: info.platform.clone(),
            dependencies,
            steps,
            lines: lines(stage.span),
            source: stage.original.clone(),
        });
        states[index] = Some(state);
    }
    let target = plan_stages.len() - 1;
    Ok(Plan {
        stages: plan_stages,
        target,
        build_platform: options.build_platform.clone(),
    })
}

fn stage_label(names: &[Option<String>], index: usize) -> String {
    names[index]
        .clone()
        .unwrap_or_else(|| format!("stage-{index}"))
}

fn visit(
    index: usize,
    infos: &[StageInfo],
    marks: &mut [u8],
    order: &mut Vec<usize>,
    names: &[Option<String>],
) -> Result<(), Error> {
    match marks[index] {
        2 => return Ok(()),
        1 => return Err(Error::new(ErrorKind::Cycle(stage_label(names, index)))),
        _ => {}
    }
    marks[index] = 1;
    let info = &infos[index];
    let mut needs: BTreeSet<usize> = info.reads.clone();
    if let Base::Stage(parent) = info.base {
        needs.insert(parent);
    }
    for need in needs {
        visit(need, infos, marks, order, names)?;
    }
    marks[index] = 2;
    order.push(index);
    Ok(())
}

/// The raw `--from` values a command reads from (COPY and RUN mounts).
fn stage_references(command: &Command) -> Result<Vec<String>, Error> {
    Ok(match &command.instruction {
        Instruction::Copy(copy) => copy.from.iter().cloned().collect(),
        Instruction::Run(run) => {
            let mut found = Vec::new();
            for raw in &run.mounts {
                let parsed = mount::parse_mount(raw, &mut |value| Ok(value.to_owned()))
                    .map_err(|e| e.with_span(command.span))?;
                found.extend(parsed.from);
            }
            found
        }
        _ => Vec::new(),
    })
}

fn initial_state(image: Option<&BaseImage>, platform: &Platform) -> State {
    let mut env = Vars::default();
    if let Some(image) = image {
        for (key, value) in &image.env {
            env.set(key, value);
        }
    }
    if env.lookup("PATH").is_none() {
        env.set("PATH", DEFAULT_PATH);
    }
    let default_shell = if platform.os == "windows" {
        vec!["cmd".to_owned(), "/S".to_owned(), "/C".to_owned()]
    } else {
        vec!["/bin/sh".to_owned(), "-c".to_owned()]
    };
    State {
        env,
        build_args: Vec::new(),
        workdir: image
            .and_then(|i| i.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
        user: image.and_then(|i| i.user.clone()).filter(|u| !u.is_empty()),
        shell: image.and_then(|i| i.shell.clone()).unwrap_or(default_shell),
        onbuild: image.map(|i| i.onbuild.clone()).unwrap_or_default(),
    }
}

fn lines(span: Span) -> Lines {
    Lines {
        start: span.start,
        end: span.end,
    }
}

/// `path` resolved against `workdir`; a trailing `/` (or `.`) is kept as
/// "into this directory" when `keep_slash`.
fn resolve_path(workdir: &str, path: &str, keep_slash: bool) -> String {
    let joined = if path.starts_with('/') {
        clean(path)
    } else {
        clean(&format!("/{workdir}/{path}"))
    };
    let wants_slash = path.is_empty() || path == "." || path.ends_with('/') || path.ends_with("/.");
    if keep_slash && wants_slash && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

impl Lowering {
    /// A stage name or index; `Ok(None)` means "an image reference".
    fn stage_index(&self, reference: &str, span: Span) -> Result<Option<usize>, Error> {
        if !reference.is_empty() && reference.chars().all(|c| c.is_ascii_digit()) {
            return match reference.parse::<usize>() {
                Ok(index) if index < self.names.len() => Ok(Some(index)),
                _ => Err(
                    Error::at(ErrorKind::UnknownStage(reference.to_owned()), span).with_hint(
                        format!(
                            "stage indexes go from 0 to {}",
                            self.names.len().saturating_sub(1)
                        ),
                    ),
                ),
            };
        }
        let lower = reference.to_lowercase();
        Ok(self
            .names
            .iter()
            .position(|name| name.as_deref() == Some(lower.as_str())))
    }

    fn source_ref(
        &self,
        reference: Option<&str>,
        position: &[usize],
        span: Span,
    ) -> Result<SourceRef, Error> {
        let Some(reference) = reference.filter(|r| !r.is_empty()) else {
            return Ok(SourceRef::Context);
        };
        Ok(match self.stage_index(reference, span)? {
            Some(index) => SourceRef::Stage(position[index]),
            None => SourceRef::Image(reference.to_owned()),
        })
    }

    fn dispatch(
        &self,
        command: &Command,
        state: &mut State,
        position: &[usize],
        platform: &Platform,
    ) -> Result<Step, Error> {
        let span = command.span;
        let at = |error: Error| error.with_span(span);
        let expand =
            |word: &str, env: &Vars| self.lexer.expand_word(word, env).map_err(|e| at(e.into()));
        let op = match &command.instruction {
            Instruction::From(_) => {
                return Err(Error::at(
                    ErrorKind::Invalid("unexpected FROM".to_owned()),
                    span,
                ));
            }
            Instruction::Env(pairs) => {
                let before = state.env.clone();
                let mut expanded = Vec::new();
                for pair in pairs {
                    let key = expand(&pair.key, &before)?;
                    let value = expand(&pair.value, &before)?;
                    state.env.set(&key, &value);
                    expanded.push((key, value));
                }
                Op::Meta(Meta::Env(expanded))
            }
            Instruction::Arg(declarations) => {
                let mut resolved = Vec::new();
                for declaration in declarations {
                    let name = declaration.name.clone();
                    let value = match (self.cli.get(&name), &declaration.default) {
                        (Some(value), _) => Some(value.clone()),
                        (None, Some(default)) => Some(expand(default, &state.env)?),
                        (None, None) => self.global.lookup(&name).map(str::to_owned),
                    };
                    if let Some(value) = &value {
                        state.env.set(&name, value);
                    }
                    state.build_args.push((name.clone(), value.clone()));
                    resolved.push((name, value));
                }
                Op::Meta(Meta::Arg(resolved))
            }
            Instruction::Label(pairs) => {
                let mut expanded = Vec::new();
                for pair in pairs {
                    expanded.push((
                        expand(&pair.key, &state.env)?,
                        expand(&pair.value, &state.env)?,
                    ));
                }
                Op::Meta(Meta::Label(expanded))
            }
            Instruction::Run(run) => Op::Exec(self.run(run, state, position, span, platform)?),
            Instruction::Cmd(line) | Instruction::Entrypoint(line) => {
                let argv = if line.shell_form {
                    if line.args.is_empty() {
                        Vec::new()
                    } else {
                        let mut argv = state.shell.clone();
                        argv.push(line.args.join(" "));
                        argv
                    }
                } else {
                    line.args.clone()
                };
                let shell_form = line.shell_form;
                Op::Meta(match command.instruction {
                    Instruction::Cmd(_) => Meta::Cmd { argv, shell_form },
                    _ => Meta::Entrypoint { argv, shell_form },
                })
            }
            Instruction::Shell(shell) => {
                state.shell = shell.clone();
                Op::Meta(Meta::Shell(shell.clone()))
            }
            Instruction::Copy(copy) | Instruction::Add(copy) => {
                let add = matches!(command.instruction, Instruction::Add(_));
                Op::Copy(self.copy(copy, add, state, position, span)?)
            }
            Instruction::Workdir(path) => {
                let path = expand(path, &state.env)?;
                state.workdir = resolve_path(&state.workdir, &path, false);
                Op::Workdir(state.workdir.clone())
            }
            Instruction::User(user) => {
                let user = expand(user, &state.env)?;
                state.user = Some(user.clone());
                Op::Meta(Meta::User(user))
            }
            Instruction::Volume(volumes) => {
                let mut expanded = Vec::new();
                for volume in volumes {
                    expanded.push(expand(volume, &state.env)?);
                }
                Op::Meta(Meta::Volume(expanded))
            }
            Instruction::Expose(ports) => {
                let mut expanded = Vec::new();
                for port in ports {
                    let words = self
                        .lexer
                        .expand_words(port, &state.env)
                        .map_err(|e| at(e.into()))?;
                    expanded.extend(words);
                }
                // In the order written: BuildKit's history line lists them so.
                Op::Meta(Meta::Expose(expanded))
            }
            Instruction::StopSignal(signal) => {
                Op::Meta(Meta::StopSignal(expand(signal, &state.env)?))
            }
            Instruction::Healthcheck(check) => Op::Meta(Meta::Healthcheck(match check {
                Healthcheck::None => PlanHealthcheck::None,
                Healthcheck::Check {
                    test,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => PlanHealthcheck::Check {
                    test: test.clone(),
                    interval: *interval,
                    timeout: *timeout,
                    start_period: *start_period,
                    start_interval: *start_interval,
                    retries: *retries,
                },
            })),
            Instruction::Onbuild(expression) => {
                state.onbuild.push(expression.clone());
                Op::Meta(Meta::Onbuild(expression.clone()))
            }
            Instruction::Maintainer(name) => Op::Meta(Meta::Maintainer(name.clone())),
        };
        Ok(Step {
            op,
            lines: lines(span),
            source: command.original.clone(),
        })
    }

    fn run(
        &self,
        run: &Run,
        state: &State,
        position: &[usize],
        span: Span,
        platform: &Platform,
    ) -> Result<Exec, Error> {
        let at = |error: Error| error.with_span(span);
        let command = &run.command;
        let mut args = command.args.clone();
        let mut inline_files = Vec::new();
        if !command.heredocs.is_empty() {
            let [line] = args.as_slice() else {
                return Err(Error::at(
                    ErrorKind::Invalid(format!(
                        "parsing produced an invalid run command: {args:?}"
                    )),
                    span,
                ));
            };
            if !command.shell_form {
                return Err(Error::at(
                    ErrorKind::Invalid("heredocs need the shell form of RUN".to_owned()),
                    span,
                ));
            }
            let first = &command.heredocs[0];
            if parse_heredoc(line).ok().flatten().is_some() {
                let data = first.chomped_content();
                if platform.os != "windows" && data.starts_with("#!") {
                    args = vec![format!("/dev/pipes/{}", first.name)];
                    inline_files.push(InlineFile {
                        name: first.name.clone(),
                        content: data,
                        mode: 0o755,
                    });
                } else {
                    args = vec![data];
                }
            } else {
                let mut script = line.clone();
                for heredoc in &command.heredocs {
                    script.push('\n');
                    script.push_str(&heredoc.content);
                    script.push_str(&heredoc.name);
                }
                args = vec![script];
            }
        }
        let argv = if command.shell_form {
            let mut argv = state.shell.clone();
            argv.push(args.join(" "));
            argv
        } else {
            args.clone()
        };

        let mut mounts = Vec::new();
        let mut ssh_count = 0;
        for raw in &run.mounts {
            let parsed = mount::parse_mount(raw, &mut |value| {
                self.lexer
                    .expand_word(value, &state.env)
                    .map_err(Error::from)
            })
            .map_err(at)?;
            let target = parsed
                .target
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| resolve_path(&state.workdir, t, false));
            let from = match &parsed.from {
                Some(from) => Some(self.source_ref(Some(from), position, span)?),
                None => None,
            };
            let source = parsed.source.clone().unwrap_or_default();
            let (kind, target) = match parsed.kind {
                MountType::Bind => (
                    MountKind::Bind {
                        from: from.unwrap_or(SourceRef::Context),
                        source,
                    },
                    target.unwrap_or_default(),
                ),
                MountType::Cache => {
                    let target = target.unwrap_or_default();
                    (
                        MountKind::Cache {
                            id: parsed.id.clone().unwrap_or_else(|| target.clone()),
                            sharing: match parsed.sharing.unwrap_or_default() {
                                Sharing::Shared => PlanSharing::Shared,
                                Sharing::Private => PlanSharing::Private,
                                Sharing::Locked => PlanSharing::Locked,
                            },
                            from,
                            source,
                            mode: parsed.mode.unwrap_or(0o755),
                            uid: parsed.uid.unwrap_or(0),
                            gid: parsed.gid.unwrap_or(0),
                        },
                        target,
                    )
                }
                MountType::Tmpfs => (
                    MountKind::Tmpfs { size: parsed.size },
                    target.unwrap_or_default(),
                ),
                MountType::Secret => {
                    let id = parsed
                        .id
                        .clone()
                        .or_else(|| parsed.source.clone())
                        .or_else(|| {
                            target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    let target = match (&target, &parsed.env) {
                        (Some(target), _) => target.clone(),
                        (None, Some(_)) => String::new(),
                        (None, None) => format!("/run/secrets/{id}"),
                    };
                    (
                        MountKind::Secret {
                            id,
                            env: parsed.env.clone(),
                            required: parsed.required,
                            mode: parsed.mode.unwrap_or(0o400),
                            uid: parsed.uid.unwrap_or(0),
                            gid: parsed.gid.unwrap_or(0),
                        },
                        target,
                    )
                }
                MountType::Ssh => {
                    ssh_count += 1;
                    (
                        MountKind::Ssh {
                            id: parsed.id.clone().unwrap_or_else(|| "default".to_owned()),
                            required: parsed.required,
                            mode: parsed.mode.unwrap_or(0o600),
                            uid: parsed.uid.unwrap_or(0),
                            gid: parsed.gid.unwrap_or(0),
                        },
                        target.unwrap_or_else(|| {
                            format!("/run/buildkit/ssh_agent.{}", ssh_count - 1)
                        }),
                    )
                }
            };
            mounts.push(PlanMount {
                kind,
                target,
                read_only: parsed.read_only,
            });
        }

        // Declared build args, first position wins, last value wins; ENV
        // takes precedence over the ARG value.
        let mut build_args: Vec<(String, String)> = Vec::new();
        for (name, value) in &state.build_args {
            let value = state
                .env
                .lookup(name)
                .map(str::to_owned)
                .or_else(|| value.clone())
                .unwrap_or_default();
            match build_args.iter_mut().find(|(key, _)| key == name) {
                Some(entry) => entry.1 = value,
                None => build_args.push((name.clone(), value)),
            }
        }
        let mut history = String::from("RUN ");
        if !build_args.is_empty() {
            history.push_str(&format!("|{} ", build_args.len()));
            for (name, value) in &build_args {
                history.push_str(&format!("{name}={value} "));
            }
        }
        history.push_str(&argv.join(" "));
        history.push_str(" # buildkit");

        let proxy_env = PROXY_ARGS
            .iter()
            .filter_map(|name| {
                self.cli
                    .get(*name)
                    .map(|value| ((*name).to_owned(), value.clone()))
            })
            .collect();

        Ok(Exec {
            argv,
            args: command.args.clone(),
            shell_form: command.shell_form,
            env: state.env.0.clone(),
            build_args,
            proxy_env,
            workdir: state.workdir.clone(),
            user: state.user.clone(),
            mounts,
            inline_files,
            network: run.network,
            security: run.security,
            history,
        })
    }

    fn copy(
        &self,
        copy: &FileCopy,
        add: bool,
        state: &State,
        position: &[usize],
        span: Span,
    ) -> Result<Copy, Error> {
        let at = |error: Error| error.with_span(span);
        let expand = |word: &str| {
            self.lexer
                .expand_word(word, &state.env)
                .map_err(|e| at(e.into()))
        };
        let optional = |word: &Option<String>| -> Result<Option<String>, Error> {
            word.as_deref().map(expand).transpose()
        };
        let sources = copy
            .sources
            .iter()
            .map(|s| expand(s))
            .collect::<Result<Vec<_>, _>>()?;
        let raw_dest = expand(&copy.dest)?;
        let dest = resolve_path(&state.workdir, &raw_dest, true);
        let chown = optional(&copy.chown)?.filter(|c| !c.is_empty());
        let chmod = match optional(&copy.chmod)?.filter(|c| !c.is_empty()) {
            None => None,
            Some(value) => Some(match mount::parse_chmod(&value).map_err(at)? {
                Chmod::Octal(mode) => PlanChmod::Octal(mode),
                Chmod::Symbolic(text) => PlanChmod::Symbolic(text),
            }),
        };
        let raw_lexer = Lexer::new('\\').skip_quotes(true);
        let mut inline = Vec::new();
        for file in &copy.inline {
            let content = if file.expand {
                raw_lexer
                    .expand_word(&file.content, &state.env)
                    .map_err(|e| at(e.into()))?
            } else {
                file.content.clone()
            };
            inline.push(InlineFile {
                name: file.name.clone(),
                content,
                mode: 0o644,
            });
        }
        let excludes = copy
            .excludes
            .iter()
            .map(|e| expand(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut history = String::from(if add { "ADD" } else { "COPY" });
        if copy.parents {
            history.push_str(" --parents");
        }
        if let Some(chown) = &chown {
            history.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = optional(&copy.chmod)?.filter(|c| !c.is_empty()) {
            history.push_str(&format!(" --chmod={chmod}"));
        }
        for source in &sources {
            history.push_str(&format!(" {source}"));
        }
        for file in &inline {
            history.push_str(&format!(" <<{}", file.name));
        }
        history.push_str(&format!(" {raw_dest} # buildkit"));
        Ok(Copy {
            add,
            from: self.source_ref(copy.from.as_deref(), position, span)?,
            sources,
            inline,
            dest,
            chown,
            chmod,
            link: copy.link,
            parents: copy.parents,
            excludes,
            checksum: optional(&copy.checksum)?.filter(|c| !c.is_empty()),
            keep_git_dir: copy.keep_git_dir,
            unpack: copy.unpack,
            history,
        })
    }
}
