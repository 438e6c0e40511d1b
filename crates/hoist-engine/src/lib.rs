//! hoist-engine: executes a build plan into an image in the local store.
//!
//! Every layer-producing step makes a fresh directory that becomes the new layer
//! ([`Store::commit_snapshot`] hashes its deterministic tar once, keeps no tar): RUN runs in the
//! executor's sandbox with it as the upper directory of an overlay over its parent's snapshots,
//! WORKDIR acts on that overlay's merged view here, and COPY/ADD write straight into it (or
//! through the merged view when a destination crosses a symlink). A COPY rebuilt after a change
//! hard-links its unchanged files from its earlier layer and resumes that layer's digest, and a
//! COPY's digest runs on another thread while the step after it runs on its directory. A
//! COPY's files go through in chunks (the copy of one directory as its walk lists it, the key's
//! stat lookups, hashing and records, with the records past 4096 set aside in a temporary file),
//! so a build's memory does not grow with its context. Writable overlays are `volatile`: their
//! teardown would otherwise sync the whole filesystem under them.
//! Metadata steps change the config and add history as BuildKit does. Base images
//! come through [`ImageSource`], which the binary backs with the store and a registry, so the
//! engine itself never touches the network. The engine never prints: progress is [`Event`]s.

mod cache;
mod context;
mod copy;
mod fsutil;
pub mod glob;
mod meta;
mod mounts;
mod par;
mod solve;
mod userdb;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_dockerfile::ignore::{IgnoreFile, Matcher, choose_ignore_file, read_ignore_file};
use hoist_dockerfile::lower::{BaseImage, BaseImages, LowerOptions, lower};
use hoist_oci::{ContainerConfig, Digest, History, ImageConfig, Platform, RootFs};
use hoist_plan::Lines;
use hoist_store::{LayerInfo, Store, StoreError};

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds (and if needed fetches) base images.
pub trait ImageSource: Sync {
    /// The id of `reference` for `platform` in the store; `pull` asks for a fresh copy even when
    /// one is stored.
    fn resolve(&self, reference: &str, platform: &Platform, pull: bool) -> Result<Digest, String>;

    /// Downloads `url` (ADD of a URL) into `out`; the network stays in the binary.
    fn fetch(&self, url: &str, out: &mut dyn std::io::Write) -> Result<Fetched, String> {
        let _ = out;
        Err(format!(
            "cannot fetch {url}: no network access was given to the build"
        ))
    }
}

/// What a download said about its file.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// `Last-Modified`, as Unix seconds (the file's mtime, as BuildKit sets it).
    pub last_modified: Option<i64>,
}

/// RUN's network unless the instruction says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network (what BuildKit's `default` gives a build).
    #[default]
    Default,
    /// No network.
    None,
    /// The host's network.
    Host,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The Dockerfile's file name (for `<name>.dockerignore`).
    pub dockerfile_name: String,
    /// The directory holding the Dockerfile, where `<name>.dockerignore` is looked for
    /// (the context when `None`).
    pub dockerfile_dir: Option<PathBuf>,
    /// `--build-arg`s; `None` takes the value from the environment.
    pub build_args: Vec<(String, Option<String>)>,
    /// The client's environment (for value-less build args).
    pub environment: HashMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--label`s, added to the final image.
    pub labels: Vec<(String, String)>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--add-host`.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// `--pull`.
    pub pull: bool,
    /// `--no-cache`: run every step (results are still cached for later builds).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages whose steps always run.
    pub no_cache_filter: Vec<String>,
    /// `--explain-cache`: say for each step that runs why its cache missed.
    pub explain_cache: bool,
    /// `--secret id=…`: where each secret comes from.
    pub secrets: HashMap<String, SecretSource>,
    /// `--ssh id=socket`: agent sockets to forward.
    pub ssh: HashMap<String, PathBuf>,
}

/// Where a `--secret` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the client.
    File(PathBuf),
    /// An environment variable of the client.
    Env(String),
}

/// Progress of a build, for the binary to render.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step started; `name` is BuildKit's vertex name (`[stage 2/5] RUN make`).
    Started { id: usize, name: &'a str },
    /// Output of a running step.
    Output { id: usize, bytes: &'a [u8] },
    /// A step finished.
    Done { id: usize, elapsed: Duration },
    /// A step's result came from the build cache.
    Cached { id: usize },
    /// Why a step's cache missed (with `explain_cache`).
    Explain { id: usize, message: &'a str },
    /// A warning from the frontend.
    Warning { message: &'a str },
}

/// The built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its id (config digest).
    pub id: Digest,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Dockerfile(#[from] hoist_dockerfile::Error),
    /// A step failed: rendered with the Dockerfile snippet of `lines`.
    #[error("{message}")]
    Step {
        lines: Lines,
        vertex: String,
        message: String,
    },
    #[error("failed to resolve source metadata for {reference}: {message}")]
    Base { reference: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] hoist_layer::LayerError),
    #[error(transparent)]
    Exec(#[from] hoist_executor::ExecError),
    #[error("failed to mount {layers} layers at {target}")]
    Mount {
        target: PathBuf,
        layers: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to compute cache key: {0:?}: not found")]
    SourceNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} is not supported yet")]
    Unsupported(String),
}

impl BuildError {
    pub(crate) fn io(context: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            context,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn at(self, lines: Lines, vertex: &str) -> Self {
        match self {
            e @ (Self::Step { .. } | Self::Dockerfile(_)) => e,
            other => Self::Step {
                lines,
                vertex: vertex.to_owned(),
                message: error_chain(&other),
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The state of a stage being built.
#[derive(Clone)]
pub(crate) struct StageImage {
    pub(crate) layers: Vec<LayerInfo>,
    pub(crate) config: ImageConfig,
}

impl StageImage {
    pub(crate) fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }
}

/// Looks base images up for the frontend (it needs their ENV, WORKDIR, USER, SHELL, ONBUILD).
pub(crate) struct Bases<'a> {
    store: &'a Store,
    source: &'a dyn ImageSource,
    pull: bool,
    resolved: std::sync::Mutex<HashMap<String, Result<Digest, String>>>,
}

impl Bases<'_> {
    pub(crate) fn id(&self, reference: &str, platform: &Platform) -> Result<Digest, String> {
        let mut cache = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(reference.to_owned())
            .or_insert_with(|| self.source.resolve(reference, platform, self.pull))
            .clone()
    }
}

pub(crate) fn oci_platform(p: &hoist_plan::Platform) -> Platform {
    Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
        os_version: None,
        os_features: None,
    }
}

impl BaseImages for Bases<'_> {
    fn base_image(&self, reference: &str, platform: &hoist_plan::Platform) -> Option<BaseImage> {
        let id = self.id(reference, &oci_platform(platform)).ok()?;
        let config = self.store.config(&id).ok()?;
        let c = config.config.unwrap_or_default();
        Some(BaseImage {
            env: c
                .env
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            working_dir: c.working_dir,
            user: c.user,
            shell: c.shell,
            onbuild: c.on_build.unwrap_or_default(),
        })
    }
}

fn host_plan_platform() -> hoist_plan::Platform {
    let h = Platform::host();
    let p = hoist_plan::Platform::new(h.os, h.architecture);
    match h.variant {
        Some(v) => p.with_variant(v),
        None => p,
    }
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// The engine: a store, where base images come from, and scratch space.
pub struct Engine<'a> {
    store: &'a Store,
    source: &'a dyn ImageSource,
}

impl<'a> Engine<'a> {
    /// An engine over `store`.
    pub fn new(store: &'a Store, source: &'a dyn ImageSource) -> Self {
        Self { store, source }
    }

    /// Builds the image `opts` describes and records it in the store (untagged).
    pub fn build(
        &self,
        opts: &BuildOptions,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Built, BuildError> {
        let bases = Bases {
            store: self.store,
            source: self.source,
            pull: opts.pull,
            resolved: std::sync::Mutex::new(HashMap::new()),
        };
        let mut lower_opts = LowerOptions::new(host_plan_platform());
        lower_opts.build_args = opts.build_args.clone();
        lower_opts.environment = &opts.environment;
        lower_opts.target = opts.target.clone();
        lower_opts.base_images = &bases;
        let lowered = lower(&opts.dockerfile, &lower_opts)?;
        for w in &lowered.warnings {
            on_event(Event::Warning {
                message: &format!("{} (line {})", w.short, w.span.start),
            });
        }
        if let Some(syntax) = hoist_dockerfile::directives::detect_syntax(&opts.dockerfile) {
            // hoist has one frontend built in; a frontend image is never fetched or run.
            on_event(Event::Warning {
                message: &format!(
                    "the syntax directive ({}) is ignored: hoist builds with its own Dockerfile frontend",
                    syntax.reference
                ),
            });
        }
        let ignore = self.ignore_matcher(opts)?;
        let scratch = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(self.store.tmp_dir())
            .map_err(|e| {
                BuildError::io("creating a build directory in", &self.store.tmp_dir(), e)
            })?;
        let empty = scratch.path().join("empty");
        std::fs::create_dir(&empty).map_err(|e| BuildError::io("creating", &empty, e))?;
        let solver = solve::Solver {
            engine: self,
            opts,
            plan: &lowered.plan,
            bases: &bases,
            ignore: ignore.as_ref(),
            empty: &empty,
            next_id: std::sync::atomic::AtomicUsize::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
        };
        let mut done = solver.solve(on_event)?;
        let mut image = done
            .swap_remove(lowered.plan.target)
            .ok_or_else(|| BuildError::Invalid("the target stage was not built".into()))?
            .image;
        if !opts.labels.is_empty() {
            let labels = image
                .container()
                .labels
                .get_or_insert_with(Default::default);
            for (k, v) in &opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        image.config.created = fill_history_times(&mut image.config.history);
        image.config.rootfs = RootFs {
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            ..RootFs::default()
        };
        let id = self.store.put_image(&image.config.to_bytes(), None)?;
        Ok(Built { id })
    }

    fn ignore_matcher(&self, opts: &BuildOptions) -> Result<Option<Matcher>, BuildError> {
        let dockerfile_dir = opts
            .dockerfile_dir
            .clone()
            .unwrap_or_else(|| opts.context.clone());
        let path_of = |f: &IgnoreFile| match f {
            IgnoreFile::NextToDockerfile(name) => dockerfile_dir.join(name),
            IgnoreFile::ContextRoot => opts.context.join(".dockerignore"),
        };
        let Some(which) = choose_ignore_file(&opts.dockerfile_name, |f| path_of(f).is_file())
        else {
            return Ok(None);
        };
        let path = path_of(&which);
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text =
            std::fs::read_to_string(&path).map_err(|e| BuildError::io("reading", &path, e))?;
        let patterns = read_ignore_file(Some(&text));
        let matcher =
            Matcher::new(patterns).map_err(|e| BuildError::Invalid(format!("{file}: {e}")))?;
        Ok(Some(matcher))
    }
}

/// BuildKit's export rule for history times: an entry without one takes the time of the layer
/// before it, or of the first new layer when none came before; the image's own `created` is the
/// last entry's. So a rebuild from cached layers yields the same image id.
fn fill_history_times(history: &mut [History]) -> Option<String> {
    // The time the first untimed entries take: the first time after an untimed entry (the
    // first new layer), else the last time there is.
    let mut created = None;
    let mut seen_missing = false;
    for h in history.iter() {
        match &h.created {
            Some(t) => {
                created = Some(t.clone());
                if seen_missing {
                    break;
                }
            }
            None => seen_missing = true,
        }
    }
    let mut seen_missing = false;
    for h in history.iter_mut() {
        match &h.created {
            Some(t) if seen_missing => created = Some(t.clone()),
            Some(_) => {}
            None => {
                seen_missing = true;
                h.created.clone_from(&created);
            }
        }
    }
    history
        .iter()
        .rev()
        .find_map(|h| h.created.clone())
        .or_else(|| Some(now_rfc3339()))
}

/// WORKDIR's `mkdir -p`, as the image's USER (BuildKit creates it with that owner, 0755).
pub(crate) fn mkdir_all(root: &Path, path: &str, user: &str) -> Result<(), BuildError> {
    let owner = if user.is_empty() {
        userdb::Owner::default()
    } else {
        userdb::resolve_chown(root, user)
    };
    let mut built = String::new();
    for part in fsutil::clean(path) {
        built.push('/');
        built.push_str(&part);
        let real = fsutil::resolve(root, &built, true);
        if real.exists() {
            continue;
        }
        std::fs::create_dir(&real).map_err(|e| BuildError::io("creating", &real, e))?;
        std::os::unix::fs::chown(&real, Some(owner.uid), Some(owner.gid))
            .map_err(|e| BuildError::io("chown", &real, e))?;
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| BuildError::io("chmod", &real, e))?;
    }
    Ok(())
}
