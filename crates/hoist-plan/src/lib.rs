//! The build plan: what to build, as data. Stages form a graph (each stage
//! starts from scratch, an image or another stage, and may copy from or
//! mount other stages), and every stage is an ordered list of steps whose
//! values are fully resolved, so the engine executes and cache-keys them
//! without knowing anything about Dockerfiles.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// An OS/architecture/variant triple such as `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// A platform without a variant.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Self {
        Self {
            os: os.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// The same platform with `variant` set.
    pub fn with_variant(mut self, variant: impl Into<String>) -> Self {
        let variant = variant.into();
        self.variant = (!variant.is_empty()).then_some(variant);
        self
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Why a platform string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch[/variant]` (lower-cased; `amd64`-style names kept).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |part: &&str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self::new(*os, *arch)),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Self::new(*os, *arch).with_variant(*variant))
            }
            _ => Err(PlatformError(text.to_owned())),
        }
    }
}

/// Where a stage's filesystem and config start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An empty filesystem.
    Scratch,
    /// An image reference as written after expansion (e.g. `alpine:3.20`).
    Image(String),
    /// Another stage of this plan, by position in [`Plan::stages`].
    Stage(usize),
}

/// The whole build: stages in dependency order (every stage comes after
/// the stages it needs), only those the target needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Position of the target stage in `stages` (always the last).
    pub target: usize,
    /// The platform the build runs on.
    pub build_platform: Platform,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS` name, lower-cased.
    pub name: Option<String>,
    /// Position in the Dockerfile, from 0 (for `stage-N` style naming).
    pub dockerfile_index: usize,
    pub base: Base,
    pub platform: Platform,
    /// Other stages this one reads, by position in [`Plan::stages`].
    pub dependencies: Vec<usize>,
    pub steps: Vec<Step>,
    /// Lines of the FROM instruction.
    pub lines: Lines,
    /// The FROM instruction as written.
    pub source: String,
}

/// An inclusive 1-based line range in the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lines {
    pub start: usize,
    pub end: usize,
}

/// One instruction, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    /// Where the instruction is, for error messages.
    pub lines: Lines,
    /// The instruction as written (continuations joined).
    pub source: String,
}

/// `KEY=value`.
pub type EnvVar = (String, String);

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// RUN: execute a process; produces a layer.
    Exec(Exec),
    /// COPY or ADD; produces a layer.
    Copy(Copy),
    /// WORKDIR: set the working directory and create it.
    Workdir(String),
    /// Image-config change only (no layer).
    Meta(Meta),
}

/// A process to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The final argument vector (shell prepended for shell form).
    pub argv: Vec<String>,
    /// The arguments as written: the exec-form array or the one
    /// shell-form string.
    pub args: Vec<String>,
    /// Whether the shell was prepended.
    pub shell_form: bool,
    /// Environment of the process, in order (image env then build args).
    pub env: Vec<EnvVar>,
    /// Declared build args that reach the process, for the history entry
    /// (`RUN |N K=V … cmd`) and the cache key.
    pub build_args: Vec<EnvVar>,
    /// Proxy variables from the predefined proxy args: given to the process
    /// but left out of the history and the cache key.
    pub proxy_env: Vec<EnvVar>,
    pub workdir: String,
    pub user: Option<String>,
    pub mounts: Vec<Mount>,
    /// Inline files mounted read-only under `/dev/pipes/` (heredoc scripts
    /// with a shebang).
    pub inline_files: Vec<InlineFile>,
    pub network: Network,
    pub security: Security,
    /// The history `created_by` text BuildKit writes for this step.
    pub history: String,
}

/// RUN network mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    #[default]
    Default,
    None,
    Host,
}

/// RUN security mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

/// A file given inline (heredoc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    pub name: String,
    pub content: String,
    pub mode: u32,
}

/// Where a RUN mount or COPY reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// The build context.
    Context,
    /// A stage of this plan, by position.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// A RUN mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    pub target: String,
    pub read_only: bool,
}

/// The kind of a RUN mount with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Bind {
        from: SourceRef,
        source: String,
    },
    Cache {
        id: String,
        sharing: Sharing,
        from: Option<SourceRef>,
        source: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        id: String,
        /// Also (or only, when `target` is empty) expose it as this env var.
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Cache mount sharing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// ADD (URLs, git, archive unpacking) rather than COPY.
    pub add: bool,
    pub from: SourceRef,
    /// Source paths or URLs, expanded.
    pub sources: Vec<String>,
    /// Heredoc sources (content expanded when the delimiter was unquoted).
    pub inline: Vec<InlineFile>,
    /// Destination, absolute (resolved against the working directory); a
    /// trailing `/` is kept because it means "into this directory".
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<Chmod>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
    /// The history `created_by` text.
    pub history: String,
}

impl Copy {
    /// A COPY of context `sources` to `dest` with no flags (what a bind mount of the context
    /// is keyed as).
    pub fn from_context(sources: Vec<String>, dest: String) -> Self {
        Self {
            add: false,
            from: SourceRef::Context,
            sources,
            inline: Vec::new(),
            dest,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            excludes: Vec::new(),
            checksum: None,
            keep_git_dir: None,
            unpack: None,
            history: String::new(),
        }
    }
}

/// A `--chmod` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    /// Symbolic (`u=rwX,go=rX`), applied per file.
    Symbolic(String),
}

/// Image-config changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    /// ENV pairs, expanded, in order.
    Env(Vec<EnvVar>),
    /// ARG declarations with their resolved values (not stored in the
    /// image config, recorded in history).
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<EnvVar>),
    User(String),
    /// `port[/proto]` strings as written (expanded).
    Expose(Vec<String>),
    Volume(Vec<String>),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// CMD: final argv (shell prepended for shell form).
    Cmd {
        argv: Vec<String>,
        shell_form: bool,
    },
    /// ENTRYPOINT: final argv; setting it resets an inherited CMD.
    Entrypoint {
        argv: Vec<String>,
        shell_form: bool,
    },
    /// An ONBUILD trigger expression.
    Onbuild(String),
    Maintainer(String),
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Check {
        test: Vec<String>,
        interval: Option<Duration>,
        timeout: Option<Duration>,
        start_period: Option<Duration>,
        start_interval: Option<Duration>,
        retries: Option<u32>,
    },
}

impl Plan {
    /// The target stage.
    pub fn target_stage(&self) -> &Stage {
        &self.stages[self.target]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_round_trip() {
        let platform: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(platform.variant.as_deref(), Some("v8"));
        assert_eq!(platform.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
    }
}
