//! hoist-engine: executes a build plan into an image in the local store.
//!
//! Every layer-producing step is an overlay over its parent's snapshots: RUN runs in the
//! executor's sandbox on it, COPY/ADD/WORKDIR act on its merged view here, and the upper
//! directory becomes the new layer ([`Store::commit_snapshot`] hashes its deterministic tar once,
//! keeps no tar). Metadata steps change the config and add history as BuildKit does. Base images
//! come through [`ImageSource`], which the binary backs with the store and a registry, so the
//! engine itself never touches the network. The engine never prints: progress is [`Event`]s.

mod context;
mod copy;
mod fsutil;
pub mod glob;
mod meta;
mod mounts;
mod userdb;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hoist_dockerfile::ignore::{IgnoreFile, Matcher, choose_ignore_file, read_ignore_file};
use hoist_dockerfile::lower::{BaseImage, BaseImages, LowerOptions, lower};
use hoist_oci::{ContainerConfig, Digest, History, ImageConfig, Platform, Reference, RootFs};
use hoist_plan::{Base, Lines, Op, Plan, SourceRef, Stage};
use hoist_store::{LayerInfo, Store, StoreError};

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds (and if needed fetches) base images.
pub trait ImageSource: Sync {
    /// The id of `reference` for `platform` in the store; `pull` asks for a fresh copy even when
    /// one is stored.
    fn resolve(&self, reference: &str, platform: &Platform, pull: bool) -> Result<Digest, String>;
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

    fn at(self, lines: Lines, vertex: &str) -> Self {
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
struct StageImage {
    layers: Vec<LayerInfo>,
    config: ImageConfig,
}

impl StageImage {
    fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }
}

/// Looks base images up for the frontend (it needs their ENV, WORKDIR, USER, SHELL, ONBUILD).
struct Bases<'a> {
    store: &'a Store,
    source: &'a dyn ImageSource,
    pull: bool,
    resolved: std::sync::Mutex<HashMap<String, Result<Digest, String>>>,
}

impl Bases<'_> {
    fn id(&self, reference: &str, platform: &Platform) -> Result<Digest, String> {
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

fn oci_platform(p: &hoist_plan::Platform) -> Platform {
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

fn now_rfc3339() -> String {
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
        let mut run = Run {
            engine: self,
            opts,
            plan: &lowered.plan,
            bases: &bases,
            ignore: ignore.as_ref(),
            empty: &empty,
            next_id: 0,
            on_event,
        };
        let mut done: Vec<Option<StageImage>> = vec![None; lowered.plan.stages.len()];
        for (i, stage) in lowered.plan.stages.iter().enumerate() {
            let image = run.stage(stage, &done)?;
            done[i] = Some(image);
        }
        let mut image = done
            .swap_remove(lowered.plan.target)
            .ok_or_else(|| BuildError::Invalid("the target stage was not built".into()))?;
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

struct Run<'r, 'a> {
    engine: &'r Engine<'a>,
    opts: &'r BuildOptions,
    plan: &'r Plan,
    bases: &'r Bases<'a>,
    ignore: Option<&'r Matcher>,
    empty: &'r Path,
    next_id: usize,
    on_event: &'r mut dyn FnMut(Event<'_>),
}

impl Run<'_, '_> {
    fn store(&self) -> &Store {
        self.engine.store
    }

    fn image_of(&self, id: &Digest) -> Result<StageImage, BuildError> {
        let config = self.store().config(id)?;
        let mut layers = Vec::new();
        for d in &config.rootfs.diff_ids {
            layers.push(
                self.store()
                    .layer(d)?
                    .ok_or_else(|| StoreError::MissingLayer(d.clone()))?,
            );
        }
        Ok(StageImage { layers, config })
    }

    fn base(&self, stage: &Stage, done: &[Option<StageImage>]) -> Result<StageImage, BuildError> {
        let platform = oci_platform(&stage.platform);
        match &stage.base {
            Base::Scratch => Ok(StageImage {
                layers: Vec::new(),
                config: ImageConfig {
                    architecture: platform.architecture.clone(),
                    os: platform.os.clone(),
                    variant: platform.variant.clone(),
                    config: Some(ContainerConfig {
                        env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
                        working_dir: Some("/".into()),
                        ..ContainerConfig::default()
                    }),
                    ..ImageConfig::default()
                },
            }),
            Base::Stage(i) => done
                .get(*i)
                .cloned()
                .flatten()
                .ok_or_else(|| BuildError::Invalid(format!("stage {i} was not built"))),
            Base::Image(reference) => {
                let id =
                    self.bases
                        .id(reference, &platform)
                        .map_err(|message| BuildError::Base {
                            reference: reference.clone(),
                            message,
                        })?;
                let mut image = self.image_of(&id)?;
                // What BuildKit keeps of a base config: the image fields, not the build metadata.
                image.config.created = None;
                image.config.comment = None;
                Ok(image)
            }
        }
    }

    fn stage(
        &mut self,
        stage: &Stage,
        done: &[Option<StageImage>],
    ) -> Result<StageImage, BuildError> {
        // BuildKit numbers only the steps that become operations: FROM and the steps that
        // make layers; metadata instructions change the config without a vertex.
        let total = 1 + stage
            .steps
            .iter()
            .filter(|s| !matches!(s.op, Op::Meta(_)))
            .count();
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.dockerfile_index));
        let many = self.plan.stages.len() > 1;
        let vertex = |n: usize, text: &str| {
            if many {
                format!("[{label} {n}/{total}] {text}")
            } else {
                format!("[{n}/{total}] {text}")
            }
        };
        let from_text = match &stage.base {
            Base::Image(r) => format!(
                "FROM {}",
                Reference::parse(r).map_or_else(|_| r.clone(), |r| r.to_string())
            ),
            _ => stage.source.clone(),
        };
        let from_vertex = vertex(1, &from_text);
        let mut image = if matches!(stage.base, Base::Image(_)) {
            let id = self.start(&from_vertex);
            let started = Instant::now();
            let image = self
                .base(stage, done)
                .map_err(|e| e.at(stage.lines, &from_vertex))?;
            (self.on_event)(Event::Done {
                id,
                elapsed: started.elapsed(),
            });
            image
        } else {
            self.base(stage, done)
                .map_err(|e| e.at(stage.lines, &from_vertex))?
        };
        if image
            .config
            .config
            .as_ref()
            .is_some_and(|c| c.on_build.is_some())
        {
            // The triggers ran as this stage's first steps (the frontend put them there).
            image.container().on_build = None;
        }
        let mut flags = meta::StageFlags::default();
        let mut n = 1;
        for step in &stage.steps {
            if matches!(step.op, Op::Meta(_)) {
                self.step(0, &step.op, &mut image, &mut flags, done)
                    .map_err(|e| e.at(step.lines, &step.source))?;
                continue;
            }
            n += 1;
            let name = vertex(n, &step.source);
            if matches!(step.op, Op::Exec(_))
                && !oci_platform(&stage.platform).matches(&Platform::host())
            {
                let message = format!(
                    "running a {} command on this {} machine is not supported yet",
                    stage.platform,
                    Platform::host()
                );
                return Err(BuildError::Step {
                    lines: step.lines,
                    vertex: name,
                    message,
                });
            }
            let id = self.start(&name);
            let started = Instant::now();
            self.step(id, &step.op, &mut image, &mut flags, done)
                .map_err(|e| e.at(step.lines, &name))?;
            (self.on_event)(Event::Done {
                id,
                elapsed: started.elapsed(),
            });
        }
        Ok(image)
    }

    fn start(&mut self, name: &str) -> usize {
        self.next_id += 1;
        (self.on_event)(Event::Started {
            id: self.next_id,
            name,
        });
        self.next_id
    }

    fn history(image: &mut StageImage, created_by: String, layer: bool) {
        image.config.history.push(History {
            // A layer's time is when it was made; metadata entries get theirs at export.
            created: layer.then(now_rfc3339),
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: !layer,
            ..History::default()
        });
    }

    fn lowerdirs(&self, image: &StageImage) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.store().snapshot_dir(l))
            .collect()
    }

    /// Fresh upper and work directories for a layer-producing step.
    fn upper(&self) -> Result<(tempfile::TempDir, PathBuf, PathBuf), BuildError> {
        let tmp = self.store().tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp)
            .map_err(|e| BuildError::io("creating a layer directory in", &tmp, e))?;
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(|e| BuildError::io("creating", d, e))?;
        }
        Ok((dir, upper, work))
    }

    fn commit(&self, image: &mut StageImage, upper: &Path) -> Result<(), BuildError> {
        let layer = self.store().commit_snapshot(upper)?;
        image.layers.push(layer);
        Ok(())
    }

    fn step(
        &mut self,
        id: usize,
        op: &Op,
        image: &mut StageImage,
        flags: &mut meta::StageFlags,
        done: &[Option<StageImage>],
    ) -> Result<(), BuildError> {
        match op {
            Op::Meta(m) => {
                let mut author = image.config.author.take();
                let line = meta::apply(image.container(), &mut author, flags, m);
                image.config.author = author;
                if !line.is_empty() {
                    Self::history(image, line, false);
                }
                Ok(())
            }
            Op::Workdir(path) => {
                image.container().working_dir = Some(path.clone());
                if path == "/" {
                    Self::history(image, format!("WORKDIR {path}"), false);
                    return Ok(());
                }
                let (_dir, upper, work) = self.upper()?;
                {
                    let mount = mounts::OverlayMount::new(
                        &self.store().tmp_dir(),
                        &self.lowerdirs(image),
                        Some((&upper, &work)),
                        self.empty,
                    )?;
                    let user = image
                        .config
                        .config
                        .as_ref()
                        .and_then(|c| c.user.clone())
                        .unwrap_or_default();
                    mkdir_all(mount.path(), path, &user)?;
                }
                self.commit(image, &upper)?;
                Self::history(image, format!("WORKDIR {path}"), true);
                Ok(())
            }
            Op::Copy(c) => {
                let (_dir, upper, work) = self.upper()?;
                {
                    let mount = mounts::OverlayMount::new(
                        &self.store().tmp_dir(),
                        &self.lowerdirs(image),
                        Some((&upper, &work)),
                        self.empty,
                    )?;
                    let from_mount;
                    let exclude = if c.excludes.is_empty() {
                        None
                    } else {
                        let m = Matcher::new(c.excludes.clone())
                            .map_err(|e| BuildError::Invalid(format!("invalid --exclude: {e}")))?;
                        Some(m)
                    };
                    let mut tree = match &c.from {
                        SourceRef::Context => context::SourceTree {
                            root: self.opts.context.clone(),
                            ignore: self.ignore,
                            exclude: None,
                        },
                        SourceRef::Stage(i) => {
                            let other = done.get(*i).cloned().flatten().ok_or_else(|| {
                                BuildError::Invalid(format!("stage {i} was not built"))
                            })?;
                            from_mount = mounts::OverlayMount::new(
                                &self.store().tmp_dir(),
                                &self.lowerdirs(&other),
                                None,
                                self.empty,
                            )?;
                            context::SourceTree {
                                root: from_mount.path().to_owned(),
                                ignore: None,
                                exclude: None,
                            }
                        }
                        SourceRef::Image(reference) => {
                            let platform = Platform::host();
                            let id = self.bases.id(reference, &platform).map_err(|message| {
                                BuildError::Base {
                                    reference: reference.clone(),
                                    message,
                                }
                            })?;
                            let other = self.image_of(&id)?;
                            from_mount = mounts::OverlayMount::new(
                                &self.store().tmp_dir(),
                                &self.lowerdirs(&other),
                                None,
                                self.empty,
                            )?;
                            context::SourceTree {
                                root: from_mount.path().to_owned(),
                                ignore: None,
                                exclude: None,
                            }
                        }
                    };
                    tree.exclude = exclude;
                    copy::copy(c, &tree, mount.path())?;
                }
                self.commit(image, &upper)?;
                Self::history(image, c.history.clone(), true);
                Ok(())
            }
            Op::Exec(e) => {
                if !e.mounts.is_empty() {
                    return Err(BuildError::Unsupported("RUN --mount".into()));
                }
                if e.security == hoist_plan::Security::Insecure {
                    return Err(BuildError::Unsupported("RUN --security=insecure".into()));
                }
                let (dir, upper, work) = self.upper()?;
                // Heredoc scripts with a shebang run from read-only files under /dev/pipes/.
                let mut mounts = Vec::new();
                for f in &e.inline_files {
                    let path = dir.path().join(format!("pipe-{}", mounts.len()));
                    std::fs::write(&path, &f.content)
                        .map_err(|err| BuildError::io("writing", &path, err))?;
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(f.mode),
                    )
                    .map_err(|err| BuildError::io("chmod", &path, err))?;
                    mounts.push(hoist_executor::Mount::Bind {
                        source: path,
                        target: format!("/dev/pipes/{}", f.name),
                        readonly: true,
                    });
                }
                let network = match (e.network, self.opts.network) {
                    (hoist_plan::Network::None, _)
                    | (hoist_plan::Network::Default, NetworkMode::None) => {
                        hoist_executor::Network::None
                    }
                    _ => hoist_executor::Network::Host,
                };
                let mut env: Vec<String> = e.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                env.extend(e.proxy_env.iter().map(|(k, v)| format!("{k}={v}")));
                let spec = hoist_executor::RunSpec {
                    rootfs: hoist_executor::Rootfs::Overlay {
                        lowerdirs: self.lowerdirs_or_empty(image),
                        upperdir: upper.clone(),
                        workdir: work,
                    },
                    args: e.argv.clone(),
                    env,
                    cwd: e.workdir.clone(),
                    user: e.user.clone().unwrap_or_default(),
                    hostname: hoist_executor::DEFAULT_HOSTNAME.into(),
                    network,
                    extra_hosts: self.opts.extra_hosts.clone(),
                    mounts,
                    stdin: hoist_executor::Stdin::Null,
                    tty: false,
                };
                let on_event = &mut self.on_event;
                let status = hoist_executor::run(&spec, &mut |out| {
                    let bytes = match out {
                        hoist_executor::Output::Stdout(b) | hoist_executor::Output::Stderr(b) => b,
                    };
                    on_event(Event::Output { id, bytes });
                })?;
                if !status.success() {
                    return Err(BuildError::Invalid(format!(
                        "process {:?} did not complete successfully: {status}",
                        e.argv.join(" ")
                    )));
                }
                self.commit(image, &upper)?;
                Self::history(image, e.history.clone(), true);
                Ok(())
            }
        }
    }

    fn lowerdirs_or_empty(&self, image: &StageImage) -> Vec<PathBuf> {
        let mut dirs = self.lowerdirs(image);
        if dirs.is_empty() {
            dirs.push(self.empty.to_owned());
        }
        dirs
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
fn mkdir_all(root: &Path, path: &str, user: &str) -> Result<(), BuildError> {
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
