//! `hoist build`: reads the context and Dockerfile, runs the engine, tags the result, and renders
//! progress and failures the way BuildKit does.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use hoist_engine::{BuildError, BuildOptions, Engine, ImageSource, NetworkMode};
use hoist_oci::{Digest, Platform, Reference};
use hoist_store::Store;

use crate::cli::BuildArgs;
use crate::progress::{Mode, Progress};

/// Base images come from the store, and from their registry when missing (or with `--pull`),
/// as docker's builder resolves them.
struct BaseImages<'a> {
    store: &'a Store,
    registry: hoist_registry::RegistryOptions,
}

impl ImageSource for BaseImages<'_> {
    fn resolve(&self, reference: &str, platform: &Platform, pull: bool) -> Result<Digest, String> {
        let r = Reference::parse(reference)
            .map_err(|e| e.to_string())?
            .with_default_tag();
        if !pull && let Ok(id) = self.store.resolve(&r.to_string()) {
            return Ok(id);
        }
        let options = hoist_registry::PullOptions {
            registry: Some(&self.registry),
            progress: None,
            concurrency: 0,
        };
        hoist_registry::pull(self.store, &r, platform, options).map_err(|e| crate::error_chain(&e))
    }

    fn fetch(&self, url: &str, out: &mut dyn Write) -> Result<hoist_engine::Fetched, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(600)))
            .build()
            .into();
        let fail = |e: &dyn std::fmt::Display| format!("failed to load {url}: {e}");
        let response = agent.get(url).call().map_err(|e| fail(&e))?;
        let last_modified = response
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
            .map(|z| z.timestamp().as_second());
        let mut body = response.into_body();
        std::io::copy(&mut body.as_reader(), out).map_err(|e| fail(&e))?;
        Ok(hoist_engine::Fetched { last_modified })
    }
}

/// The context as a directory: the one given, or a temporary one unpacked from a tar.
struct ContextDir {
    path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// A Dockerfile that came on stdin instead of a context.
    stdin_dockerfile: Option<String>,
}

fn unpack(reader: impl Read, store: &Store) -> Result<ContextDir> {
    let tmp = tempfile::Builder::new()
        .prefix("context-")
        .tempdir_in(store.tmp_dir())?;
    let decoded = hoist_layer::decompress(io::BufReader::new(reader))?;
    let opts = hoist_layer::ApplyOptions {
        whiteouts: hoist_layer::WhiteoutMode::Apply,
        ..hoist_layer::ApplyOptions::default()
    };
    hoist_layer::apply_layer(decoded, tmp.path(), &opts).context("unpacking the build context")?;
    Ok(ContextDir {
        path: tmp.path().to_owned(),
        _tmp: Some(tmp),
        stdin_dockerfile: None,
    })
}

fn context_dir(arg: &str, store: &Store, dockerfile_from_stdin: bool) -> Result<ContextDir> {
    if arg == "-" {
        if dockerfile_from_stdin {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        let mut stdin = io::stdin().lock();
        let (encoding, mut sniffed) = hoist_layer::sniff(&mut stdin)?;
        let mut head = Vec::new();
        (&mut sniffed).take(4096).read_to_end(&mut head)?;
        let rest = io::Cursor::new(head.clone()).chain(sniffed);
        let is_tar = encoding != hoist_layer::Compression::None
            || (head.len() >= 262 && &head[257..262] == b"ustar");
        if is_tar {
            return unpack(rest, store);
        }
        let mut text = String::new();
        io::BufReader::new(rest)
            .read_to_string(&mut text)
            .context("reading the Dockerfile from stdin")?;
        let tmp = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(store.tmp_dir())?;
        return Ok(ContextDir {
            path: tmp.path().to_owned(),
            _tmp: Some(tmp),
            stdin_dockerfile: Some(text),
        });
    }
    let path = Path::new(arg);
    if path.is_dir() {
        // Absolute, because the sandbox and mounts see it from elsewhere.
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("unable to prepare context: {arg}"))?;
        return Ok(ContextDir {
            path,
            _tmp: None,
            stdin_dockerfile: None,
        });
    }
    if path.is_file() {
        let f = std::fs::File::open(path).with_context(|| format!("open {arg}"))?;
        return unpack(f, store);
    }
    if arg.contains("://") || arg.starts_with("git@") {
        bail!("remote build contexts ({arg}) are not supported yet");
    }
    bail!("unable to prepare context: path {arg:?} not found")
}

fn parse_kv(s: &str) -> (String, Option<String>) {
    match s.split_once('=') {
        Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
        None => (s.to_owned(), None),
    }
}

pub(crate) fn run(store: &Store, args: &BuildArgs, out: &mut dyn Write) -> Result<ExitCode> {
    if let Some(p) = &args.platform {
        let want: Platform = p.parse()?;
        if !want.matches(&Platform::host()) {
            bail!(
                "building for {want} is not supported yet: this machine builds {} only",
                Platform::host()
            );
        }
    }
    let network = match args.network.as_str() {
        "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => bail!("network mode {other:?} not supported by hoist: use default, none or host"),
    };
    let mut extra_hosts = Vec::new();
    for h in &args.add_hosts {
        let (host, ip) = h.split_once([':', '=']).ok_or_else(|| {
            anyhow!("invalid argument {h:?} for \"--add-host\" flag: bad format for add-host")
        })?;
        let ip: IpAddr = ip
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| anyhow!("invalid IP address in add-host: {ip:?}"))?;
        extra_hosts.push((host.to_owned(), ip));
    }
    let tags = args
        .tags
        .iter()
        .map(|t| super::rmi::parse_target(t))
        .collect::<Result<Vec<_>>>()?;
    let mut labels = Vec::new();
    for l in &args.labels {
        let (k, v) = parse_kv(l);
        labels.push((k, v.unwrap_or_default()));
    }
    let dockerfile_stdin = args.file.as_deref() == Some("-");
    let ctx = context_dir(&args.context, store, dockerfile_stdin)?;
    let mut dockerfile_dir = None;
    let (dockerfile, dockerfile_name) = if let Some(text) = ctx.stdin_dockerfile.clone() {
        (text, "Dockerfile".to_owned())
    } else if dockerfile_stdin {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from stdin")?;
        (text, "Dockerfile".to_owned())
    } else {
        let path = match &args.file {
            Some(f) if Path::new(f).is_absolute() || Path::new(f).exists() => PathBuf::from(f),
            Some(f) => ctx.path.join(f),
            None => ctx.path.join("Dockerfile"),
        };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "failed to read dockerfile: open {}: no such file or directory",
                path.display()
            )
        })?;
        let name = path.file_name().map_or_else(
            || "Dockerfile".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        dockerfile_dir = path.parent().map(Path::to_owned);
        (text, name)
    };
    let opts = BuildOptions {
        context: ctx.path.clone(),
        dockerfile: dockerfile.clone(),
        dockerfile_name: dockerfile_name.clone(),
        dockerfile_dir,
        build_args: args.build_args.iter().map(|b| parse_kv(b)).collect(),
        environment: std::env::vars().collect::<HashMap<_, _>>(),
        target: args.target.clone(),
        labels,
        network,
        extra_hosts,
        pull: args.pull,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        explain_cache: args.explain_cache,
        secrets: parse_secrets(&args.secrets)?,
        ssh: parse_ssh(&args.ssh)?,
    };
    let mode = Mode::parse(&args.progress, args.quiet)?;
    let mut progress = Progress::new(mode);
    let source = BaseImages {
        store,
        registry: hoist_registry::RegistryOptions {
            skip_tls_verify: !args.tls_verify,
            ..super::pull::registry_options()?
        },
    };
    let engine = Engine::new(store, &source);
    let result = engine.build(&opts, &mut |e| progress.event(&e));
    let built = match result {
        Ok(b) => b,
        Err(e) => {
            progress.finish();
            let mut err = io::stderr().lock();
            let _ = err
                .write_all(render_failure(&e, &progress, &dockerfile_name, &dockerfile).as_bytes());
            return Ok(ExitCode::from(1));
        }
    };
    let export = progress.next_id();
    let started = Instant::now();
    progress.event(&hoist_engine::Event::Started {
        id: export,
        name: "exporting to image",
    });
    progress.export_line(export, &format!("writing image {} done", built.id));
    for t in &tags {
        store.tag(t, &built.id)?;
        progress.export_line(export, &format!("naming to {t} done"));
    }
    progress.event(&hoist_engine::Event::Done {
        id: export,
        elapsed: started.elapsed(),
    });
    progress.finish();
    if let Some(f) = &args.iidfile {
        std::fs::write(f, built.id.as_str()).with_context(|| format!("writing {}", f.display()))?;
    }
    if args.quiet {
        writeln!(out, "{}", built.id)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `--secret id=x,src=FILE` / `id=x,env=VAR` / `id=x` (the variable `x`), as buildx reads them.
fn parse_secrets(specs: &[String]) -> Result<HashMap<String, hoist_engine::SecretSource>> {
    let mut out = HashMap::new();
    for spec in specs {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid secret {spec:?}: expected key=value fields"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_owned()),
                "src" | "source" => src = Some(v.to_owned()),
                "env" => env = Some(v.to_owned()),
                "type" => kind = Some(v.to_owned()),
                other => bail!("invalid secret {spec:?}: unexpected key {other:?}"),
            }
        }
        let id = id
            .or_else(|| src.clone().or_else(|| env.clone()))
            .ok_or_else(|| anyhow!("invalid secret {spec:?}: no id"))?;
        let source = match (kind.as_deref(), src, env) {
            (Some("env"), Some(v), _) | (_, None, Some(v)) => hoist_engine::SecretSource::Env(v),
            (_, Some(p), _) => hoist_engine::SecretSource::File(PathBuf::from(p)),
            (Some("file"), None, None) => hoist_engine::SecretSource::File(PathBuf::from(&id)),
            _ => hoist_engine::SecretSource::Env(id.clone()),
        };
        out.insert(id, source);
    }
    Ok(out)
}

/// `--ssh default` (the agent at $SSH_AUTH_SOCK) or `--ssh id=/path/to/socket`.
fn parse_ssh(specs: &[String]) -> Result<HashMap<String, PathBuf>> {
    let mut out = HashMap::new();
    for spec in specs {
        let (id, path) = match spec.split_once('=') {
            Some((id, path)) => (
                id.to_owned(),
                PathBuf::from(path.split(',').next().unwrap_or(path)),
            ),
            None => {
                let sock = std::env::var_os("SSH_AUTH_SOCK")
                    .ok_or_else(|| anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set; give a socket path: {spec}=/path/to/agent.sock"))?;
                (spec.clone(), PathBuf::from(sock))
            }
        };
        if !path.exists() {
            bail!("--ssh {id}: {} does not exist", path.display());
        }
        out.insert(id, path);
    }
    Ok(out)
}

/// BuildKit's failure report: the failing vertex's output, the Dockerfile snippet, the error.
fn render_failure(e: &BuildError, progress: &Progress, name: &str, source: &str) -> String {
    match e {
        BuildError::Dockerfile(d) => crate::diagnostic::render_dockerfile_error(d, name, source),
        BuildError::Step {
            lines,
            vertex,
            message,
        } => {
            let mut s = progress.failure_block(vertex);
            s.push_str(&crate::diagnostic::snippet(
                name,
                source,
                lines.start,
                lines.end,
            ));
            s.push_str(&format!("ERROR: failed to solve: {message}\n"));
            s
        }
        other => format!("ERROR: failed to solve: {}\n", crate::error_chain(other)),
    }
}
