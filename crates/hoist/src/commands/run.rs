//! `hoist run`: one command in a throwaway container of an image, in the foreground, as
//! `docker run --rm` runs it. Hoist keeps no containers: the container's writable layer is
//! removed when the command ends, with or without `--rm`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use hoist_executor::{ExecError, Output, SandboxError};
use hoist_oci::{ContainerConfig, Reference};
use hoist_store::{Store, StoreError};

/// docker's status for its own errors, before the command starts.
const STATUS_ERROR: u8 = 125;
/// The command could not be executed (permission denied, a directory).
const STATUS_CANNOT_EXEC: u8 = 126;
/// The command was not found.
const STATUS_NOT_FOUND: u8 = 127;

#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    override_usage = "hoist run [OPTIONS] IMAGE [COMMAND] [ARG...]"
)]
pub(crate) struct RunArgs {
    /// Automatically remove the container when it exits (always: hoist keeps no containers, so
    /// the container's filesystem is removed after every run, with or without --rm)
    #[arg(long)]
    pub(crate) rm: bool,
    /// Set environment variables (KEY=VALUE, or KEY to take it from hoist's environment)
    #[arg(short, long = "env", value_name = "list")]
    pub(crate) env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long, value_name = "list")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "string")]
    pub(crate) workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long, value_name = "string")]
    pub(crate) user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long, value_name = "string")]
    pub(crate) entrypoint: Option<String>,
    /// Bind mount a host path (HOST:CONTAINER[:ro|rw]; HOST must be absolute)
    #[arg(short, long = "volume", value_name = "list")]
    pub(crate) volume: Vec<String>,
    /// Network: host (the default: hoist has no bridge) or none (only a loopback interface)
    #[arg(
        long = "network",
        alias = "net",
        value_name = "network",
        default_value = "host"
    )]
    pub(crate) network: String,
    /// Assign a name to the container (accepted; hoist keeps no containers to name)
    #[arg(long, value_name = "string")]
    pub(crate) name: Option<String>,
    /// Keep STDIN open
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Container host name (default: the first 12 digits of a random container id)
    #[arg(short = 'h', long, value_name = "string")]
    pub(crate) hostname: Option<String>,
    /// Not supported: the container uses the host's network, so its ports are the host's
    #[arg(short = 'p', long = "publish", value_name = "list", hide = true)]
    pub(crate) publish: Vec<String>,
    /// Not supported: the container uses the host's network
    #[arg(short = 'P', long = "publish-all", hide = true)]
    pub(crate) publish_all: bool,
    /// Not supported: hoist runs containers in the foreground only
    #[arg(short = 'd', long, hide = true)]
    pub(crate) detach: bool,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(
        value_name = "IMAGE [COMMAND] [ARG...]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) image_and_command: Vec<String>,
}

/// An error with the exit status docker gives it.
struct Failure {
    status: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            status: STATUS_ERROR,
            error: e.into(),
        }
    }
}

/// Runs the container; every error is printed here, with docker's exit status.
pub(crate) fn run(root: &Path, args: &RunArgs) -> ExitCode {
    match run_inner(root, args) {
        Ok(code) => code,
        Err(f) => {
            let _ = std::io::stdout().flush();
            let _ = writeln!(
                std::io::stderr().lock(),
                "Error: {}",
                crate::render_chain(&f.error)
            );
            ExitCode::from(f.status)
        }
    }
}

fn run_inner(root: &Path, args: &RunArgs) -> Result<ExitCode, Failure> {
    refuse_unsupported(args)?;
    let (image, command) = match args.image_and_command.split_first() {
        Some((image, command)) => (image.as_str(), command),
        None => return Err(anyhow!("\"hoist run\" requires at least 1 argument").into()),
    };
    // The positional takes hyphen values so a command's own flags pass through; one before
    // the image is a flag hoist does not know.
    if image.starts_with('-') {
        return Err(anyhow!("unknown flag: {image}\nSee 'hoist run --help'.").into());
    }
    if args.tty && args.interactive && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Failure {
            status: 1,
            error: anyhow!("the input device is not a TTY"),
        });
    }
    let network = match args.network.as_str() {
        "host" | "default" => hoist_executor::Network::Host,
        "none" => hoist_executor::Network::None,
        other => {
            return Err(anyhow!(
                "network {other} is not supported: hoist run has host (the default) and none"
            )
            .into());
        }
    };
    let workdir = match &args.workdir {
        Some(w) if !w.starts_with('/') => {
            return Err(anyhow!(
                "the working directory '{w}' is invalid, it needs to be an absolute path"
            )
            .into());
        }
        w => w.clone(),
    };
    let mounts = args
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;

    let store = super::open_store(root)?;
    let id = find_or_pull(&store, image)?;
    let config = store.config(&id)?;
    let container = config.config.clone().unwrap_or_default();

    let container_id = random_id()?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| container_id[..12].to_owned());
    let argv = command_line(&container, args.entrypoint.as_deref(), command);
    if argv.is_empty() {
        return Err(anyhow!("No command specified").into());
    }
    let env = environment(&container, args, &hostname)?;

    // The container's writable layer lives in the store's tmp (same filesystem as the
    // snapshots) and goes when this guard drops.
    let scratch = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(store.tmp_dir())
        .context("creating the container's directory")?;
    let (upper, work) = (scratch.path().join("upper"), scratch.path().join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut lowerdirs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Topmost first; overlayfs refuses the same lower dir twice.
    for diff_id in config.rootfs.diff_ids.iter().rev() {
        if !seen.insert(diff_id.clone()) {
            continue;
        }
        let layer = store
            .layer(diff_id)?
            .ok_or_else(|| StoreError::MissingLayer(diff_id.clone()))?;
        lowerdirs.push(store.snapshot_dir(&layer));
    }
    if lowerdirs.is_empty() {
        let empty = scratch.path().join("empty");
        std::fs::create_dir(&empty).with_context(|| format!("creating {}", empty.display()))?;
        lowerdirs.push(empty);
    }

    let spec = hoist_executor::RunSpec {
        rootfs: hoist_executor::Rootfs::Overlay {
            lowerdirs,
            upperdir: upper,
            workdir: work,
        },
        args: argv,
        env,
        cwd: workdir
            .or(container.working_dir.clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".to_owned()),
        user: args
            .user
            .clone()
            .or(container.user.clone())
            .unwrap_or_default(),
        hostname,
        network,
        extra_hosts: Vec::new(),
        mounts,
        stdin: if args.interactive {
            hoist_executor::Stdin::Inherit
        } else {
            hoist_executor::Stdin::Null
        },
        tty: args.tty,
    };

    // From here on hoist's signals are the command's (docker's --sig-proxy).
    let forwarder = hoist_executor::SignalForwarder::install()?;
    let status = hoist_executor::run_with(&spec, &mut write_output, Some(&forwarder));
    drop(forwarder);
    drop(scratch);
    let status = status.map_err(exec_failure)?;
    let _ = std::io::stdout().flush();
    Ok(ExitCode::from(u8::try_from(status.code()).unwrap_or(255)))
}

/// Output goes straight through, unbuffered, so it interleaves as the command wrote it.
fn write_output(out: Output<'_>) {
    // A closed stdout (e.g. `| head`) must not stop the command; docker ignores it too.
    let _ = match out {
        Output::Stdout(b) => {
            let mut o = std::io::stdout().lock();
            o.write_all(b).and_then(|()| o.flush())
        }
        Output::Stderr(b) => std::io::stderr().lock().write_all(b),
    };
}

/// docker's statuses for a command that did not start: 127 not found, 126 not executable.
fn exec_failure(e: ExecError) -> Failure {
    let status = match &e {
        ExecError::Sandbox(SandboxError::NotFound { .. }) => STATUS_NOT_FOUND,
        ExecError::Sandbox(SandboxError::Exec { errno, .. }) => match errno.0 {
            libc_errno::ENOENT => STATUS_NOT_FOUND,
            libc_errno::EACCES | libc_errno::EISDIR | libc_errno::ENOEXEC => STATUS_CANNOT_EXEC,
            _ => STATUS_ERROR,
        },
        _ => STATUS_ERROR,
    };
    Failure {
        status,
        error: e.into(),
    }
}

/// The errno values `exec_failure` tells apart (Linux numbers; hoist is Linux-only).
mod libc_errno {
    pub(super) const ENOENT: i32 = 2;
    pub(super) const ENOEXEC: i32 = 8;
    pub(super) const EACCES: i32 = 13;
    pub(super) const EISDIR: i32 = 21;
}

fn refuse_unsupported(args: &RunArgs) -> Result<()> {
    if !args.publish.is_empty() || args.publish_all {
        let flag = if args.publish.is_empty() { "-P" } else { "-p" };
        bail!(
            "{flag} is not supported: hoist run uses the host's network, so the container's ports are the host's"
        );
    }
    if args.detach {
        bail!(
            "-d is not supported: hoist keeps no containers, so hoist run runs in the foreground only"
        );
    }
    Ok(())
}

/// The image's id, pulling it first when it is not in the store, as docker run does.
fn find_or_pull(store: &Store, image: &str) -> Result<hoist_oci::Digest> {
    match store.resolve(image) {
        Ok(id) => return Ok(id),
        Err(StoreError::NoSuchImage(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // A full id that is not here is not pullable.
    let is_id = image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit())
        || image.starts_with("sha256:");
    let reference = match Reference::parse(image) {
        Ok(r) if !is_id => r,
        _ => bail!("No such image: {image}"),
    };
    let reference = if reference.digest().is_some() {
        reference
    } else {
        reference.with_default_tag()
    };
    let shown = reference.familiar();
    let stderr = std::io::stderr();
    writeln!(stderr.lock(), "Unable to find image '{shown}' locally")?;
    let pull = crate::cli::PullArgs {
        all_tags: false,
        platform: None,
        quiet: false,
        tls_verify: true,
        name: shown.clone(),
    };
    // docker run prints the pull's progress and status to stderr, without `docker pull`'s last
    // line (the full reference).
    let mut out = SkipLine {
        skip: reference.to_string(),
        line: Vec::new(),
    };
    super::pull::run(store, &pull, &mut out)?;
    out.flush()?;
    Ok(store.resolve(&shown)?)
}

/// Writes whole lines to stderr, dropping the one equal to `skip`.
struct SkipLine {
    skip: String,
    line: Vec<u8>,
}

impl Write for SkipLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.line.push(b);
            if b == b'\n' {
                self.emit()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.emit()?;
        }
        std::io::stderr().flush()
    }
}

impl SkipLine {
    fn emit(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        if line.trim_ascii_end() != self.skip.as_bytes() {
            std::io::stderr().lock().write_all(&line)?;
        }
        Ok(())
    }
}

/// docker's ENTRYPOINT/CMD merge: a command line replaces the image's CMD; `--entrypoint`
/// replaces the ENTRYPOINT and drops the image's CMD (`--entrypoint ""` leaves no entrypoint).
fn command_line(
    image: &ContainerConfig,
    entrypoint: Option<&str>,
    command: &[String],
) -> Vec<String> {
    let (entrypoint, image_cmd) = match entrypoint {
        Some("") => (Vec::new(), None),
        Some(e) => (vec![e.to_owned()], None),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            image.cmd.clone(),
        ),
    };
    let cmd = if command.is_empty() {
        image_cmd.unwrap_or_default()
    } else {
        command.to_vec()
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// docker's environment: PATH, HOSTNAME (and TERM with -t), then the image's ENV, the
/// --env-files and the -e flags, each replacing an earlier value of the same name in place.
fn environment(image: &ContainerConfig, args: &RunArgs, hostname: &str) -> Result<Vec<String>> {
    let mut env = vec![
        format!("PATH={}", hoist_executor::DEFAULT_PATH),
        format!("HOSTNAME={hostname}"),
    ];
    if args.tty {
        env.push("TERM=xterm".to_owned());
    }
    let mut user = image.env.clone().unwrap_or_default();
    for file in &args.env_file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("open {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match from_caller(line) {
                Ok(Some(e)) => user.push(e),
                Ok(None) => {}
                Err(()) => bail!(
                    "invalid environment variable in {} line {}: {line:?}",
                    file.display(),
                    n + 1
                ),
            }
        }
    }
    for e in &args.env {
        match from_caller(e) {
            Ok(Some(e)) => user.push(e),
            Ok(None) => {}
            Err(()) => {
                bail!("invalid argument \"{e}\" for \"-e, --env\" flag: variable name is empty")
            }
        }
    }
    for e in user {
        let name = e.split_once('=').map_or(e.as_str(), |(n, _)| n);
        match env
            .iter_mut()
            .find(|x| x.split_once('=').map_or(x.as_str(), |(n, _)| n) == name)
        {
            Some(slot) => *slot = e,
            None => env.push(e),
        }
    }
    Ok(env)
}

/// `K=V` as is; a bare `K` takes hoist's own value, and is left out when hoist has none.
fn from_caller(entry: &str) -> Result<Option<String>, ()> {
    match entry.split_once('=') {
        Some(("", _)) => Err(()),
        Some(_) => Ok(Some(entry.to_owned())),
        None => {
            let name = entry.trim_end();
            if name.is_empty() {
                return Err(());
            }
            Ok(std::env::var(name).ok().map(|v| format!("{name}={v}")))
        }
    }
}

/// `-v HOST:CONTAINER[:ro|rw]` as a bind mount; a missing host directory is created, as docker
/// does for -v.
fn parse_volume(spec: &str) -> Result<hoist_executor::Mount> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, mode) = match parts.as_slice() {
        [host, target] => (*host, *target, ""),
        [host, target, mode] => (*host, *target, *mode),
        [_] => bail!(
            "invalid volume specification: '{spec}': hoist run has no volumes, only bind mounts HOST:CONTAINER"
        ),
        _ => bail!("invalid volume specification: '{spec}'"),
    };
    if !host.starts_with('/') {
        bail!(
            "invalid volume specification: '{spec}': the host path must be absolute (hoist run has no named volumes)"
        );
    }
    if !target.starts_with('/') {
        bail!("invalid volume specification: '{spec}': mount path must be absolute");
    }
    let readonly = match mode {
        "" | "rw" => false,
        "ro" => true,
        other => bail!("invalid mode: {other}"),
    };
    let source = PathBuf::from(host);
    if !source.exists() {
        std::fs::create_dir_all(&source)
            .with_context(|| format!("creating the host directory {}", source.display()))?;
    }
    Ok(hoist_executor::Mount::Bind {
        source,
        target: target.to_owned(),
        readonly,
    })
}

/// A container id as docker makes them: 32 random bytes in hex.
fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ContainerConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            ..ContainerConfig::default()
        }
    }

    fn s(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_like_docker() {
        let img = image(Some(&["/ep", "a"]), Some(&["c1", "c2"]));
        assert_eq!(command_line(&img, None, &[]), s(&["/ep", "a", "c1", "c2"]));
        assert_eq!(command_line(&img, None, &s(&["x"])), s(&["/ep", "a", "x"]));
        assert_eq!(command_line(&img, Some("sh"), &[]), s(&["sh"]));
        assert_eq!(
            command_line(&img, Some("sh"), &s(&["-c", "x"])),
            s(&["sh", "-c", "x"])
        );
        assert_eq!(command_line(&img, Some(""), &[]), Vec::<String>::new());
        assert_eq!(command_line(&img, Some(""), &s(&["ls"])), s(&["ls"]));
        let img = image(None, Some(&["sh"]));
        assert_eq!(command_line(&img, None, &[]), s(&["sh"]));
        assert_eq!(
            command_line(&img, None, &s(&["ls", "-l"])),
            s(&["ls", "-l"])
        );
    }

    #[test]
    fn volumes() {
        assert!(parse_volume("rel:/x").is_err());
        assert!(parse_volume("/tmp:rel").is_err());
        assert!(parse_volume("/tmp:/x:zz").is_err());
        assert!(parse_volume("/x").is_err());
        assert_eq!(
            parse_volume("/tmp:/x:ro").unwrap(),
            hoist_executor::Mount::Bind {
                source: "/tmp".into(),
                target: "/x".into(),
                readonly: true
            }
        );
    }
}
