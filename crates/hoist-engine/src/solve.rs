//! The solver: stages run as soon as the stages they read are built, several at once (bounded by
//! the cores), each step looked up in the build cache before it runs. Worker threads report
//! through a channel; only the calling thread sees [`Event`]s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hoist_dockerfile::ignore::Matcher;
use hoist_oci::{ContainerConfig, Digest, History, ImageConfig, Platform, Reference};
use hoist_plan::{Base, Copy, Exec, Op, Plan, SourceRef, Stage};
use hoist_store::{DigestedSnapshot, LayerInfo, Store, StoreError};

use crate::cache::{self, Inputs};
use crate::{
    Bases, BuildError, BuildOptions, DEFAULT_PATH, Engine, Event, HISTORY_COMMENT, NetworkMode,
    StageImage, context, copy, meta, mkdir_all, mounts, now_rfc3339, oci_platform,
};

/// A built stage: its image and the cache key of its last layer (what later stages chain on).
#[derive(Clone)]
pub(crate) struct BuiltStage {
    pub(crate) image: StageImage,
    pub(crate) key: String,
}

/// What a step needs of the stage running it.
#[derive(Clone, Copy)]
struct StepRun<'a, 'r, 's, 'e> {
    id: usize,
    use_cache: bool,
    identity: &'a str,
    run: &'a StageRun<'r>,
    scope: &'s std::thread::Scope<'s, 'e>,
}

/// A COPY's layer whose digest is being computed on another thread while the step after it
/// runs with the layer's directory as its top lower layer; committed before any other layer
/// joins the image.
struct Pending<'s> {
    /// Holds `upper` until the commit moves it into the store.
    _dir: tempfile::TempDir,
    upper: PathBuf,
    digest: std::thread::ScopedJoinHandle<'s, Result<DigestedSnapshot, StoreError>>,
    /// What an early copy's step records beside the next step: its stat-cache rows and its
    /// inputs.
    recording: Vec<std::thread::ScopedJoinHandle<'s, Result<(), BuildError>>>,
    key: String,
    /// The key before the files' contents went in (see `Store::cache_may_hold`).
    partial: Option<String>,
    created: String,
}

/// What worker threads send to the calling thread.
enum Msg {
    Started(usize, String),
    Output(usize, Vec<u8>),
    Done(usize, Duration),
    Cached(usize),
    Explain(usize, String),
    Stage(usize, Box<Result<BuiltStage, BuildError>>),
}

pub(crate) struct Solver<'s, 'a> {
    pub(crate) engine: &'s Engine<'a>,
    pub(crate) opts: &'s BuildOptions,
    pub(crate) plan: &'s Plan,
    pub(crate) bases: &'s Bases<'a>,
    pub(crate) ignore: Option<&'s Matcher>,
    pub(crate) empty: &'s Path,
    pub(crate) next_id: AtomicUsize,
    pub(crate) failed: AtomicBool,
}

/// A stage's view while it runs: its channel and the stages it may read.
struct StageRun<'t> {
    tx: &'t mpsc::Sender<Msg>,
    deps: &'t HashMap<usize, BuiltStage>,
}

impl StageRun<'_> {
    fn send(&self, m: Msg) {
        // The receiver outlives every worker (they are scoped).
        let _ = self.tx.send(m);
    }
}

/// Starts hashing the layer directory `upper` on a thread of `scope`, resuming from `earlier`
/// (the layer it was copied from) if any, and following the copy still writing it with `gate`.
fn spawn_digest<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    store: &'s Store,
    upper: PathBuf,
    earlier: Option<hoist_store::LayerInfo>,
    gate: Option<hoist_layer::Gate>,
) -> std::thread::ScopedJoinHandle<'s, Result<DigestedSnapshot, StoreError>> {
    scope.spawn(move || {
        // Behind the copy it follows and the next step's own processes for the CPU (this
        // thread and the hashing thread it starts): a RUN that keeps one core busy keeps it,
        // and the digest takes what is left, which it has all of once that RUN is done.
        let _ = rustix::process::setpriority_process(None, 10);
        store.digest_snapshot(&upper, earlier.as_ref(), gate)
    })
}

/// The key the steps after `op` chain on: a RUN's with the layer it gave (see
/// [`cache::result_key`]); any other layer step's own key, since its layer follows from it.
fn chain_key(op: &Op, key: String, layer: &hoist_store::LayerInfo) -> String {
    match op {
        Op::Exec(_) => cache::result_key(&key, &layer.diff_id),
        _ => key,
    }
}

fn dependencies(stage: &Stage) -> Vec<usize> {
    let mut d = stage.dependencies.clone();
    if let Base::Stage(i) = stage.base {
        d.push(i);
    }
    d.sort_unstable();
    d.dedup();
    d
}

impl Solver<'_, '_> {
    fn store(&self) -> &Store {
        self.engine.store
    }

    /// Builds every stage of the plan; returns them by position.
    pub(crate) fn solve(
        &self,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<Vec<Option<BuiltStage>>, BuildError> {
        let n = self.plan.stages.len();
        let deps: Vec<Vec<usize>> = self.plan.stages.iter().map(dependencies).collect();
        // Stages mostly wait (on processes, the network, the disk), so a few per core keep the
        // cores busy without letting a 50-stage file start 50 sandboxes at once.
        let workers = std::thread::available_parallelism()
            .map_or(2, std::num::NonZero::get)
            .saturating_mul(4)
            .max(4);
        let (tx, rx) = mpsc::channel::<Msg>();
        let mut done: Vec<Option<BuiltStage>> = vec![None; n];
        let mut first_error: Option<BuildError> = None;
        std::thread::scope(|scope| {
            let mut started = vec![false; n];
            let (mut running, mut finished) = (0usize, 0usize);
            loop {
                if first_error.is_none() {
                    for i in 0..n {
                        let ready = deps[i].iter().all(|d| done[*d].is_some());
                        if started[i] || !ready || running >= workers {
                            continue;
                        }
                        started[i] = true;
                        running += 1;
                        let inputs: HashMap<usize, BuiltStage> = deps[i]
                            .iter()
                            .filter_map(|d| done[*d].clone().map(|b| (*d, b)))
                            .collect();
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let run = StageRun {
                                tx: &tx,
                                deps: &inputs,
                            };
                            let result = self.stage(&self.plan.stages[i], &run);
                            if result.is_err() {
                                self.failed.store(true, Ordering::SeqCst);
                            }
                            run.send(Msg::Stage(i, Box::new(result)));
                        });
                    }
                }
                if running == 0 && (finished == n || first_error.is_some()) {
                    break;
                }
                let Ok(msg) = rx.recv() else { break };
                match msg {
                    Msg::Started(id, name) => on_event(Event::Started { id, name: &name }),
                    Msg::Output(id, bytes) => on_event(Event::Output { id, bytes: &bytes }),
                    Msg::Done(id, elapsed) => on_event(Event::Done { id, elapsed }),
                    Msg::Cached(id) => on_event(Event::Cached { id }),
                    Msg::Explain(id, why) => on_event(Event::Explain { id, message: &why }),
                    Msg::Stage(i, result) => {
                        running -= 1;
                        finished += 1;
                        match *result {
                            Ok(b) => done[i] = Some(b),
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
            }
        });
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    fn start(&self, run: &StageRun<'_>, name: &str) -> usize {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        run.send(Msg::Started(id, name.to_owned()));
        id
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

    fn image_id(&self, reference: &str, platform: &Platform) -> Result<Digest, BuildError> {
        self.bases
            .id(reference, platform)
            .map_err(|message| BuildError::Base {
                reference: reference.to_owned(),
                message,
            })
    }

    /// The stage's starting image and the key its steps chain on.
    fn base(&self, stage: &Stage, run: &StageRun<'_>) -> Result<BuiltStage, BuildError> {
        let platform = oci_platform(&stage.platform);
        match &stage.base {
            Base::Scratch => Ok(BuiltStage {
                image: StageImage {
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
                },
                key: format!("scratch {platform}"),
            }),
            Base::Stage(i) => run
                .deps
                .get(i)
                .cloned()
                .ok_or_else(|| BuildError::Invalid(format!("stage {i} was not built"))),
            Base::Image(reference) => {
                let id = self.image_id(reference, &platform)?;
                let mut image = self.image_of(&id)?;
                // What BuildKit keeps of a base config: the image fields, not the build metadata.
                image.config.created = None;
                image.config.comment = None;
                Ok(BuiltStage {
                    image,
                    key: format!("image {id}"),
                })
            }
        }
    }

    fn stage(&self, stage: &Stage, run: &StageRun<'_>) -> Result<BuiltStage, BuildError> {
        // BuildKit numbers only the steps that become operations: FROM and the steps that make
        // layers; metadata instructions change the config without a vertex.
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
        let mut built = if matches!(stage.base, Base::Image(_)) {
            let id = self.start(run, &from_vertex);
            let started = Instant::now();
            let b = self
                .base(stage, run)
                .map_err(|e| e.at(stage.lines, &from_vertex))?;
            run.send(Msg::Done(id, started.elapsed()));
            b
        } else {
            self.base(stage, run)
                .map_err(|e| e.at(stage.lines, &from_vertex))?
        };
        if built
            .image
            .config
            .config
            .as_ref()
            .is_some_and(|c| c.on_build.is_some())
        {
            // The triggers ran as this stage's first steps (the frontend put them there).
            built.image.container().on_build = None;
        }
        let use_cache = !self.opts.no_cache
            && !stage.name.as_ref().is_some_and(|n| {
                self.opts
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });
        let mut flags = meta::StageFlags::default();
        std::thread::scope(|scope| {
            let mut pending = None;
            let mut n = 1;
            for (index, step) in stage.steps.iter().enumerate() {
                if self.failed.load(Ordering::SeqCst) {
                    return Err(BuildError::Invalid("canceled: another stage failed".into()));
                }
                if let Op::Meta(m) = &step.op {
                    let image = &mut built.image;
                    let mut author = image.config.author.take();
                    let line = meta::apply(image.container(), &mut author, &mut flags, m);
                    image.config.author = author;
                    if !line.is_empty() {
                        history(image, line, None);
                    }
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
                let id = self.start(run, &name);
                let started = Instant::now();
                let identity = format!(
                    "{}\u{0}{}\u{0}{}\u{0}{index}",
                    self.opts.context.display(),
                    self.opts.dockerfile_name,
                    stage.dockerfile_index
                );
                let step_run = StepRun {
                    id,
                    use_cache,
                    identity: &identity,
                    run,
                    scope,
                };
                let cached = self
                    .layer_step(&step.op, &mut built, &step_run, &mut pending)
                    .map_err(|e| e.at(step.lines, &name))?;
                if cached {
                    run.send(Msg::Cached(id));
                } else {
                    run.send(Msg::Done(id, started.elapsed()));
                }
            }
            self.resolve(pending.take(), &mut built)?;
            Ok(built)
        })
    }

    /// Commits a [`Pending`] layer into the image (and the cache).
    fn resolve(
        &self,
        pending: Option<Pending<'_>>,
        built: &mut BuiltStage,
    ) -> Result<(), BuildError> {
        let Some(p) = pending else {
            return Ok(());
        };
        for recorded in p.recording {
            recorded
                .join()
                .map_err(|_| BuildError::Invalid("a recording thread panicked".into()))??;
        }
        let digested = p
            .digest
            .join()
            .map_err(|_| BuildError::Invalid("the layer digest thread panicked".into()))??;
        let layer = self.store().commit_digested(&p.upper, &digested)?;
        self.store()
            .cache_put(&p.key, p.partial.as_deref(), &layer, &p.created)?;
        built.image.layers.push(layer);
        Ok(())
    }

    /// Runs (or finds in the cache) one layer-producing step; true when it was cached.
    fn layer_step<'s, 'e: 's>(
        &'e self,
        op: &Op,
        built: &mut BuiltStage,
        step: &StepRun<'_, '_, 's, 'e>,
        pending: &mut Option<Pending<'s>>,
    ) -> Result<bool, BuildError> {
        let StepRun {
            id,
            use_cache,
            identity,
            run,
            scope,
        } = *step;
        // Only a RUN uses a pending layer as it is; anything else needs it committed first.
        if !matches!(op, Op::Exec(_)) {
            self.resolve(pending.take(), built)?;
        }
        let parent = built.key.clone();
        let user = built
            .image
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default();
        // Where COPY reads from, mounted read-only when it is another stage or an image.
        let mut from_mount = None;
        let mut tree = None;
        // ADD of URLs: the downloads, and the COPY of them that replaces the ADD.
        let mut fetched: Option<(tempfile::TempDir, Copy)> = None;
        // A layer directory a COPY already filled (see the COPY arm below).
        let mut copied_early = None;
        // The digest of a COPY's layer, which follows the copy.
        let mut layer_digest = None;
        // What an early copy's step records beside the next step (see `Pending`).
        let mut recording = Vec::new();
        // The key this step had at its last build here, if it was built here.
        let prev_key = self.store().step_key(identity)?;
        let (key, history_line) = match op {
            Op::Workdir(path) => {
                built.image.container().working_dir = Some(path.clone());
                if path == "/" {
                    history(&mut built.image, format!("WORKDIR {path}"), None);
                    return Ok(false);
                }
                (
                    cache::workdir_key(&parent, path, &user),
                    format!("WORKDIR {path}"),
                )
            }
            Op::Exec(e) => {
                if e.security == hoist_plan::Security::Insecure {
                    return Err(BuildError::Unsupported("RUN --security=insecure".into()));
                }
                let mut key = cache::exec_key(&parent, e);
                cache::exec_build_fields(
                    &mut key,
                    e,
                    self.opts.network == crate::NetworkMode::None,
                    &self.opts.extra_hosts,
                );
                self.mount_inputs(e, run, &mut key)?;
                (key, e.history.clone())
            }
            Op::Copy(c) if c.add && c.sources.iter().any(|s| is_url(s)) => {
                let (dir, local, key) = self.fetch_urls(&parent, c)?;
                tree = Some(context::SourceTree {
                    root: dir.path().to_owned(),
                    ignore: None,
                    exclude: None,
                });
                fetched = Some((dir, local));
                (key, c.history.clone())
            }
            Op::Copy(c) => {
                if c.checksum.is_some() {
                    // As BuildKit: a checksum pins a download; a local file has none to pin.
                    return Err(BuildError::Invalid(
                        "checksum can't be specified for non-HTTP(S) sources".into(),
                    ));
                }
                let (t, from_key) = self.copy_source(c, run, &mut from_mount)?;
                // A step never built here, whose key before its files' contents no cache entry
                // has, cannot hit whatever the files hold (a new project's first build).
                let cannot_hit = || -> Result<bool, BuildError> {
                    Ok(prev_key.is_none()
                        && !self
                            .store()
                            .cache_may_hold(&cache::copy_partial_key(&parent, c))?)
                };
                // A stage or an image: named by its key, cached by what it copies. The name
                // found standing for the key this step had last time is a hit without reading
                // the files; else they are hashed.
                let named = match &from_key {
                    Some(from_key) => Some(
                        cache::copy_key(&parent, c, &t, Some(from_key), self.store(), false)?
                            .peek(),
                    ),
                    None => None,
                };
                if use_cache
                    && let Some(named) = &named
                    && let Some(content) = self.store().cache_alias(named)?
                    && prev_key.as_deref() == Some(content.as_str())
                    && let Some(hit) = self.store().cache_get(&content)?
                {
                    self.resolve(pending.take(), built)?;
                    built.key = content;
                    built.image.layers.push(hit.layer);
                    history(&mut built.image, c.history.clone(), Some(hit.created));
                    return Ok(true);
                }
                if !self.opts.explain_cache && (!use_cache || cannot_hit()?) {
                    // The key is only recorded, not looked up first: it is made beside the
                    // copy, from the digests of what the copy reads. A full copy: with the
                    // cache off nothing is reused, and a step never built here has no earlier
                    // layer.
                    let made = self.upper()?;
                    let fed = if named.is_none() {
                        // The stat cache's rows are written beside the next step; the recorder
                        // ends when `fed` goes, with the key.
                        let (rows, recorder) = mpsc::sync_channel::<cache::StatRows>(2);
                        let store = self.store();
                        recording.push(scope.spawn(move || {
                            for rows in recorder {
                                store
                                    .stat_record(rows.iter().map(|(p, s, d)| (p.as_str(), s, d)))?;
                            }
                            Ok(())
                        }));
                        cache::Fed::recording_to(rows)
                    } else {
                        // A stage's files are the store's own: no stat of them is remembered.
                        cache::Fed::default()
                    };
                    let (key, digest) = std::thread::scope(|s| {
                        let key = s.spawn(|| match named {
                            None => cache::copy_key_fed(&parent, c, &t, self.store(), &fed),
                            Some(_) => {
                                cache::copy_content_key(&parent, c, &t, self.store(), Some(&fed))
                            }
                        });
                        let feeding = fed.feeding();
                        let digest = self.copy_followed(scope, &made.1, None, |seals| {
                            let besides = copy::Besides {
                                fed: Some(&fed),
                                seals: Some(seals),
                                ..copy::Besides::default()
                            };
                            self.full_copy(c, &t, &built.image, &made.1, &made.2, besides)
                        });
                        drop(feeding);
                        (key.join(), digest)
                    });
                    // Hashed as the copy went, and then while the inputs are recorded and
                    // the next step runs.
                    layer_digest = Some(digest?);
                    let key = key.map_err(|_| {
                        BuildError::Invalid("the cache key thread panicked".into())
                    })??;
                    if let Some(named) = &named {
                        self.store().cache_alias_put(named, &key.peek())?;
                    }
                    copied_early = Some(made);
                    (key, c.history.clone())
                } else if let Some(named) = &named {
                    let key = cache::copy_content_key(&parent, c, &t, self.store(), None)?;
                    self.store().cache_alias_put(named, &key.peek())?;
                    tree = Some(t);
                    (key, c.history.clone())
                } else {
                    let mut key =
                        cache::copy_key(&parent, c, &t, from_key.as_deref(), self.store(), false)?;
                    // Recognised from stats alone, the key has no per-file inputs; a step whose
                    // key moved records them (for --explain-cache and an incremental copy).
                    if c.from == SourceRef::Context
                        && !key.has_file_inputs()
                        && prev_key.as_deref() != Some(key.peek().as_str())
                    {
                        key = cache::copy_key(
                            &parent,
                            c,
                            &t,
                            from_key.as_deref(),
                            self.store(),
                            true,
                        )?;
                    }
                    tree = Some(t);
                    (key, c.history.clone())
                }
            }
            Op::Meta(_) => return Ok(true),
        };
        let partial = key.partial().map(str::to_owned);
        let (key, mut inputs) = key.finish();
        // The inputs are written only when the key moved: an unchanged 20k-file COPY costs no
        // serialisation.
        let mut old = None;
        // An early copy's inputs have no earlier ones to read (it is not cached, or was never
        // built here): recorded beside the next step, not before it.
        if copied_early.is_some() && prev_key.as_deref() != Some(key.as_str()) {
            // Nothing after this reads them: an early copy is neither explained nor reused.
            let inputs = std::mem::take(&mut inputs);
            let (store, identity, key) = (self.store(), identity.to_owned(), key.clone());
            recording.push(scope.spawn(move || {
                let (len, write) = inputs.json().map_err(|e| {
                    BuildError::io("reading back the inputs set aside in", &store.tmp_dir(), e)
                })?;
                Ok(store.swap_step_inputs(&identity, &key, len, write, None)?)
            }));
        } else if prev_key.as_deref() != Some(key.as_str()) {
            let (len, write) = inputs.json().map_err(|e| {
                BuildError::io(
                    "reading back the inputs set aside in",
                    &self.store().tmp_dir(),
                    e,
                )
            })?;
            // Unreadable earlier inputs are as good as none: nothing is reused or explained.
            let keep_all = self.opts.explain_cache;
            let mut read = |r: &mut dyn std::io::Read| {
                old = cache::Recorded::read(r, keep_all);
                Ok(())
            };
            let want_old = use_cache || self.opts.explain_cache;
            self.store().swap_step_inputs(
                identity,
                &key,
                len,
                write,
                want_old.then_some(&mut read as &mut hoist_store::ReadOld<'_>),
            )?;
        }
        if use_cache && let Some(hit) = self.store().cache_get(&key)? {
            self.resolve(pending.take(), built)?;
            built.key = chain_key(op, key, &hit.layer);
            built.image.layers.push(hit.layer);
            history(&mut built.image, history_line, Some(hit.created));
            return Ok(true);
        }
        if self.opts.explain_cache {
            if old.is_some() {
                // Compared with the earlier inputs by name.
                inputs.index()?;
            }
            let why = if !use_cache {
                "the cache is disabled for this step".to_owned()
            } else {
                cache::explain(old.as_ref(), &inputs)
                    .unwrap_or_else(|| "not built before".to_owned())
            };
            run.send(Msg::Explain(id, why));
        }
        let copied = copied_early.is_some();
        let (dir, upper, work) = match copied_early {
            Some(made) => made,
            None => self.upper()?,
        };
        match op {
            Op::Copy(_) if copied => {}
            Op::Workdir(path) => {
                let mount = self.mount_rw(&built.image, &upper, &work)?;
                mkdir_all(mount.path(), path, &user)?;
            }
            Op::Copy(c) => {
                let tree = tree
                    .as_ref()
                    .ok_or_else(|| BuildError::Invalid("no copy source".into()))?;
                let c = fetched.as_ref().map_or(c, |(_, local)| local);
                // Compared, the recorded text is not needed while the copy runs.
                let previous =
                    self.previous_copy(c, prev_key.as_deref(), old.take().as_ref(), &inputs)?;
                let digest = match previous {
                    // The new layer's tar hash resumes from the one it starts from.
                    Some((layer, previous, unchanged)) => {
                        // Unchanged means recorded alike both times; a name missing from
                        // either is never unchanged.
                        let same = |name: &str| unchanged.contains(name);
                        let reuse = copy::Reuse {
                            previous: &previous,
                            unchanged: &same,
                        };
                        self.copy_followed(scope, &upper, Some(layer), |seals| {
                            let besides = copy::Besides {
                                reuse: Some(&reuse),
                                seals: Some(seals),
                                ..copy::Besides::default()
                            };
                            self.full_copy(c, tree, &built.image, &upper, &work, besides)
                        })?
                    }
                    None => self.copy_followed(scope, &upper, None, |seals| {
                        let besides = copy::Besides {
                            seals: Some(seals),
                            ..copy::Besides::default()
                        };
                        self.full_copy(c, tree, &built.image, &upper, &work, besides)
                    })?,
                };
                layer_digest = Some(digest);
            }
            Op::Exec(e) => {
                let top = pending.as_ref().map(|p| p.upper.as_path());
                let ran = self.exec(id, e, &built.image, top, dir.path(), &upper, &work, run);
                // The pending layer goes first, failed or not: its digest thread is done with it.
                self.resolve(pending.take(), built)?;
                ran?;
            }
            Op::Meta(_) => {}
        }
        drop(from_mount);
        if matches!(op, Op::Copy(_)) {
            // Hashed while the next step runs on it; see `Pending`.
            let digest = layer_digest
                .ok_or_else(|| BuildError::Invalid("a copied layer without its digest".into()))?;
            let created = now_rfc3339();
            history(&mut built.image, history_line, Some(created.clone()));
            *pending = Some(Pending {
                _dir: dir,
                upper,
                digest,
                recording,
                key: key.clone(),
                partial,
                created,
            });
            built.key = key;
            return Ok(false);
        }
        let layer = self.store().commit_snapshot(&upper)?;
        let created = now_rfc3339();
        self.store().cache_put(&key, None, &layer, &created)?;
        built.key = chain_key(op, key, &layer);
        built.image.layers.push(layer);
        history(&mut built.image, history_line, Some(created));
        Ok(false)
    }

    /// Runs `copy` into the fresh layer directory `upper` with the layer's digest following it
    /// (see [`copy::Seals`]), resuming from `earlier`'s, and returns that digest; or one
    /// started once the copy is done, when the copy went through the merged view.
    fn copy_followed<'s, 'e: 's>(
        &'e self,
        scope: &'s std::thread::Scope<'s, 'e>,
        upper: &Path,
        earlier: Option<LayerInfo>,
        copy: impl FnOnce(&copy::Seals) -> Result<(), BuildError>,
    ) -> Result<std::thread::ScopedJoinHandle<'s, Result<DigestedSnapshot, StoreError>>, BuildError>
    {
        let seals = std::sync::Arc::new(copy::Seals::default());
        let gate = Some(seals.gate());
        let following = spawn_digest(scope, self.store(), upper.to_owned(), earlier.clone(), gate);
        // However the copy ends, the digest following it does too.
        let ending = copy::GiveUp(&seals);
        let copied = copy(&seals);
        drop(ending);
        copied?;
        if !seals.whole() {
            let _ = following.join();
            return Ok(spawn_digest(
                scope,
                self.store(),
                upper.to_owned(),
                earlier,
                None,
            ));
        }
        if cfg!(debug_assertions) {
            // Every test build checks the digest that followed the copy against one of the
            // finished layer.
            let followed = following
                .join()
                .map_err(|_| BuildError::Invalid("the layer digest thread panicked".into()))??;
            let finished = self.store().digest_snapshot(upper, None, None)?;
            if followed.summary() != finished.summary() {
                return Err(BuildError::Invalid(format!(
                    "the digest that followed the copy into {} is {:?}, the finished layer's {:?}",
                    upper.display(),
                    followed.summary(),
                    finished.summary()
                )));
            }
            return Ok(scope.spawn(move || Ok(followed)));
        }
        Ok(following)
    }

    /// A COPY into the fresh layer directory `upper`: straight in when it can be (doing
    /// `besides` as it goes), else through the merged view.
    fn full_copy(
        &self,
        c: &Copy,
        tree: &context::SourceTree<'_>,
        image: &StageImage,
        upper: &Path,
        work: &Path,
        besides: copy::Besides<'_>,
    ) -> Result<(), BuildError> {
        let view = mounts::OverlayMount::new(
            &self.store().tmp_dir(),
            &self.lowerdirs(image),
            None,
            self.empty,
        )?;
        if !copy::copy_into_layer(c, tree, view.path(), upper, besides)? {
            drop(view);
            let mount = self.mount_rw(image, upper, work)?;
            copy::copy(c, tree, mount.path())?;
        }
        Ok(())
    }

    /// Downloads every URL of an ADD (verifying `--checksum`) into a directory, as files named
    /// after the URL's last path segment with mode 0600 and `Last-Modified` as mtime, as docker
    /// does; returns that directory, the plain COPY of those files the ADD becomes, and the key
    /// (over the URLs and the downloaded contents).
    fn fetch_urls(
        &self,
        parent: &str,
        c: &Copy,
    ) -> Result<(tempfile::TempDir, Copy, cache::Key), BuildError> {
        if !c.sources.iter().all(|s| is_url(s)) {
            return Err(BuildError::Unsupported(
                "ADD mixing URLs and local files".into(),
            ));
        }
        if c.checksum.is_some() && c.sources.len() != 1 {
            return Err(BuildError::Invalid(
                "checksum can't be specified for multiple sources".into(),
            ));
        }
        let tmp = self.store().tmp_dir();
        let dir = tempfile::Builder::new()
            .prefix("add-")
            .tempdir_in(&tmp)
            .map_err(|e| BuildError::io("creating a directory in", &tmp, e))?;
        let mut key = cache::Key::new(parent, "add-url");
        key.field("dest", &c.dest);
        key.field("chown", c.chown.as_deref().unwrap_or(""));
        key.field("chmod", &format!("{:?}", c.chmod));
        let mut names = Vec::new();
        for (i, url) in c.sources.iter().enumerate() {
            let name = url_file_name(url);
            let sub = dir.path().join(i.to_string());
            std::fs::create_dir(&sub).map_err(|e| BuildError::io("creating", &sub, e))?;
            let path = sub.join(&name);
            let mut file =
                std::fs::File::create(&path).map_err(|e| BuildError::io("creating", &path, e))?;
            let mut hashing = hoist_layer::HashingWriter::new(&mut file);
            let info = self
                .engine
                .source
                .fetch(url, &mut hashing)
                .map_err(BuildError::Invalid)?;
            let (_, digest, _) = hashing.finish();
            if let Some(want) = &c.checksum
                && want != digest.as_str()
            {
                return Err(BuildError::Invalid(format!(
                    "digest mismatch for {url}: expected {want}, got {digest}"
                )));
            }
            drop(file);
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| BuildError::io("chmod", &path, e))?;
            if let Some(t) = info.last_modified {
                crate::fsutil::set_mtime(&path, t, 0)?;
            }
            key.field(&format!("url {url}"), digest.as_str());
            names.push(format!("{i}/{name}"));
        }
        let local = Copy {
            add: false,
            from: SourceRef::Context,
            sources: names,
            ..c.clone()
        };
        Ok((dir, local, key))
    }

    /// The layer an earlier build of this COPY made, when only its selected files differ now
    /// (same parent, destination, flags and patterns): the new layer can reuse its unchanged
    /// files instead of copying all of them again.
    fn previous_copy(
        &self,
        c: &Copy,
        prev_key: Option<&str>,
        old_inputs: Option<&cache::Recorded>,
        inputs: &Inputs,
    ) -> Result<Option<(LayerInfo, PathBuf, cache::Unchanged)>, BuildError> {
        if c.add || c.from != SourceRef::Context {
            return Ok(None);
        }
        let (Some(prev_key), Some(old)) = (prev_key, old_inputs) else {
            return Ok(None);
        };
        let Some(unchanged) = cache::compare_recorded(old, inputs) else {
            return Ok(None);
        };
        let old = old.fields();
        // Everything but the files themselves (and their digest) must be as before.
        let about_files = |k: &str| k.starts_with("file ") || k == "files";
        let fields = inputs.fields();
        let same_shape = old
            .iter()
            .filter(|(k, _)| !about_files(k))
            .all(|(k, v)| fields.get(k) == Some(v))
            && fields
                .keys()
                .filter(|k| !about_files(k))
                .all(|k| old.contains_key(k));
        if !same_shape {
            return Ok(None);
        }
        let Some(hit) = self.store().cache_get(prev_key)? else {
            return Ok(None);
        };
        let dir = self.store().snapshot_dir(&hit.layer);
        Ok(Some((hit.layer, dir, unchanged)))
    }

    /// The tree a COPY reads and, for a stage or an image, the key that stands for its content.
    fn copy_source(
        &self,
        c: &Copy,
        run: &StageRun<'_>,
        from_mount: &mut Option<mounts::OverlayMount>,
    ) -> Result<(context::SourceTree<'_>, Option<String>), BuildError> {
        let exclude = if c.excludes.is_empty() {
            None
        } else {
            Some(
                Matcher::new(c.excludes.clone())
                    .map_err(|e| BuildError::Invalid(format!("invalid --exclude: {e}")))?,
            )
        };
        let (root, ignore, from_key) = match &c.from {
            SourceRef::Context => (self.opts.context.clone(), self.ignore, None),
            SourceRef::Stage(i) => {
                let other = run
                    .deps
                    .get(i)
                    .ok_or_else(|| BuildError::Invalid(format!("stage {i} was not built")))?;
                let m = mounts::OverlayMount::new(
                    &self.store().tmp_dir(),
                    &self.lowerdirs(&other.image),
                    None,
                    self.empty,
                )?;
                let root = m.path().to_owned();
                *from_mount = Some(m);
                (root, None, Some(other.key.clone()))
            }
            SourceRef::Image(reference) => {
                let id = self.image_id(reference, &Platform::host())?;
                let other = self.image_of(&id)?;
                let m = mounts::OverlayMount::new(
                    &self.store().tmp_dir(),
                    &self.lowerdirs(&other),
                    None,
                    self.empty,
                )?;
                let root = m.path().to_owned();
                *from_mount = Some(m);
                (root, None, Some(format!("image {id}")))
            }
        };
        Ok((
            context::SourceTree {
                root,
                ignore,
                exclude,
            },
            from_key,
        ))
    }

    /// The layer stack, topmost first. A layer that appears twice (two steps that changed
    /// nothing alike) is kept only at its topmost place: overlayfs refuses a repeated lower dir,
    /// and the upper copy already shows everything the lower one would.
    fn lowerdirs(&self, image: &StageImage) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        image
            .layers
            .iter()
            .rev()
            .filter(|l| seen.insert(l.diff_id.clone()))
            .map(|l| self.store().snapshot_dir(l))
            .collect()
    }

    fn mount_rw(
        &self,
        image: &StageImage,
        upper: &Path,
        work: &Path,
    ) -> Result<mounts::OverlayMount, BuildError> {
        mounts::OverlayMount::new(
            &self.store().tmp_dir(),
            &self.lowerdirs(image),
            Some((upper, work)),
            self.empty,
        )
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

    #[expect(clippy::too_many_arguments, reason = "the parts of one sandbox run")]
    fn exec(
        &self,
        id: usize,
        e: &Exec,
        image: &StageImage,
        top: Option<&Path>,
        scratch: &Path,
        upper: &Path,
        work: &Path,
        run: &StageRun<'_>,
    ) -> Result<(), BuildError> {
        // Heredoc scripts with a shebang run from read-only files under /dev/pipes/.
        let mut mounts = Vec::new();
        for f in &e.inline_files {
            let path = scratch.join(format!("pipe-{}", mounts.len()));
            std::fs::write(&path, &f.content)
                .map_err(|err| BuildError::io("writing", &path, err))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(f.mode))
                .map_err(|err| BuildError::io("chmod", &path, err))?;
            mounts.push(hoist_executor::Mount::Bind {
                source: path,
                target: format!("/dev/pipes/{}", f.name),
                readonly: true,
            });
        }
        let mut guards = Guards::default();
        let mut secret_env = Vec::new();
        for m in &e.mounts {
            self.prepare_mount(m, run, scratch, &mut mounts, &mut secret_env, &mut guards)?;
        }
        let network = match (e.network, self.opts.network) {
            (hoist_plan::Network::None, _) | (hoist_plan::Network::Default, NetworkMode::None) => {
                hoist_executor::Network::None
            }
            _ => hoist_executor::Network::Host,
        };
        let mut env: Vec<String> = e.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.extend(e.proxy_env.iter().map(|(k, v)| format!("{k}={v}")));
        env.extend(secret_env);
        let mut lowerdirs = self.lowerdirs(image);
        if let Some(top) = top {
            lowerdirs.insert(0, top.to_owned());
        }
        if lowerdirs.is_empty() {
            lowerdirs.push(self.empty.to_owned());
        }
        let spec = hoist_executor::RunSpec {
            rootfs: hoist_executor::Rootfs::Overlay {
                lowerdirs,
                upperdir: upper.to_owned(),
                workdir: work.to_owned(),
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
        let status = hoist_executor::run(&spec, &mut |out| {
            let bytes = match out {
                hoist_executor::Output::Stdout(b) | hoist_executor::Output::Stderr(b) => b,
            };
            run.send(Msg::Output(id, bytes.to_vec()));
        })?;
        if !status.success() {
            return Err(BuildError::Invalid(format!(
                "process {:?} did not complete successfully: {status}",
                e.argv.join(" ")
            )));
        }
        Ok(())
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name docker gives a downloaded URL: its path's last segment.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    match after_host.rsplit('/').next() {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

/// What must live while a RUN with mounts runs: read-only views, discarded upper layers,
/// secret files, cache-mount locks.
#[derive(Default)]
struct Guards {
    overlays: Vec<mounts::OverlayMount>,
    dirs: Vec<tempfile::TempDir>,
    locks: Vec<std::fs::File>,
}

impl Solver<'_, '_> {
    /// The root a mount's `from` names: the context, or a read-only view of a stage or image.
    fn mount_source_root(
        &self,
        from: &SourceRef,
        run: &StageRun<'_>,
        guards: &mut Guards,
    ) -> Result<PathBuf, BuildError> {
        let image = match from {
            SourceRef::Context => return Ok(self.opts.context.clone()),
            SourceRef::Stage(i) => run
                .deps
                .get(i)
                .ok_or_else(|| BuildError::Invalid(format!("stage {i} was not built")))?
                .image
                .clone(),
            SourceRef::Image(r) => {
                let id = self.image_id(r, &Platform::host())?;
                self.image_of(&id)?
            }
        };
        let m = mounts::OverlayMount::new(
            &self.store().tmp_dir(),
            &self.lowerdirs(&image),
            None,
            self.empty,
        )?;
        let root = m.path().to_owned();
        guards.overlays.push(m);
        Ok(root)
    }

    /// What a RUN's mounts add to its cache key: the content of bind sources (never a cache
    /// mount's contents, never a secret).
    fn mount_inputs(
        &self,
        e: &Exec,
        run: &StageRun<'_>,
        key: &mut cache::Key,
    ) -> Result<(), BuildError> {
        for (n, m) in e.mounts.iter().enumerate() {
            if let hoist_plan::MountKind::Bind { from, source } = &m.kind {
                match from {
                    SourceRef::Context => {
                        let tree = context::SourceTree {
                            root: self.opts.context.clone(),
                            ignore: self.ignore,
                            exclude: None,
                        };
                        let copy = Copy::from_context(vec![source.clone()], "/".into());
                        let (digest, _) =
                            cache::copy_key("", &copy, &tree, None, self.store(), false)?.finish();
                        key.field(&format!("mount {n} context"), &digest);
                    }
                    SourceRef::Stage(i) => {
                        let k = run.deps.get(i).map_or("", |b| b.key.as_str()).to_owned();
                        let what = self.mount_content(from, source, &k, run)?;
                        key.field(&format!("mount {n} stage"), &what);
                    }
                    SourceRef::Image(r) => {
                        let id = self.image_id(r, &Platform::host())?;
                        let what = self.mount_content(from, source, id.as_str(), run)?;
                        key.field(&format!("mount {n} image"), &what);
                    }
                }
            }
        }
        Ok(())
    }

    /// The digest of what a bind mount shows of a stage or an image (`named` is its key or
    /// id): its key, as a COPY of `source` from there would have it. A stage rebuilt to the
    /// same files leaves the RUN cached, as in BuildKit. The stage's key stands for its files,
    /// so the digest found for it once is taken again without reading them.
    fn mount_content(
        &self,
        from: &SourceRef,
        source: &str,
        named: &str,
        run: &StageRun<'_>,
    ) -> Result<String, BuildError> {
        let name = cache::mount_name(named, source);
        if let Some(known) = self.store().cache_alias(&name)? {
            return Ok(known);
        }
        let mut guards = Guards::default();
        let tree = context::SourceTree {
            root: self.mount_source_root(from, run, &mut guards)?,
            ignore: None,
            exclude: None,
        };
        let copy = Copy::from_context(vec![source.to_owned()], "/".into());
        let (digest, _) = cache::copy_content_key("", &copy, &tree, self.store(), None)?.finish();
        self.store().cache_alias_put(&name, &digest)?;
        Ok(digest)
    }

    fn prepare_mount(
        &self,
        m: &hoist_plan::Mount,
        run: &StageRun<'_>,
        scratch: &Path,
        out: &mut Vec<hoist_executor::Mount>,
        env: &mut Vec<String>,
        guards: &mut Guards,
    ) -> Result<(), BuildError> {
        use hoist_plan::{MountKind, Sharing};
        let target = m.target.clone();
        match &m.kind {
            MountKind::Bind { from, source } => {
                let root = self.mount_source_root(from, run, guards)?;
                let path = crate::fsutil::resolve(&root, source, true);
                if !path.exists() {
                    return Err(BuildError::Invalid(format!(
                        "failed to compute cache key: {:?}: not found",
                        format!("/{}", source.trim_start_matches('/'))
                    )));
                }
                let source = if m.read_only {
                    path
                } else {
                    // A writable bind sees its writes, but they are thrown away afterwards.
                    let dir = tempfile::Builder::new()
                        .prefix("bind-")
                        .tempdir_in(self.store().tmp_dir())
                        .map_err(|e| {
                            BuildError::io("creating a directory in", &self.store().tmp_dir(), e)
                        })?;
                    let (upper, work) = (dir.path().join("u"), dir.path().join("w"));
                    for d in [&upper, &work] {
                        std::fs::create_dir(d).map_err(|e| BuildError::io("creating", d, e))?;
                    }
                    let o = mounts::OverlayMount::new(
                        &self.store().tmp_dir(),
                        &[path],
                        Some((&upper, &work)),
                        self.empty,
                    )?;
                    let p = o.path().to_owned();
                    guards.overlays.push(o);
                    guards.dirs.push(dir);
                    p
                };
                out.push(hoist_executor::Mount::Bind {
                    source,
                    target,
                    readonly: m.read_only,
                });
            }
            MountKind::Cache {
                id,
                sharing,
                from,
                source,
                mode,
                uid,
                gid,
            } => {
                let id = if id.is_empty() {
                    target.clone()
                } else {
                    id.clone()
                };
                let mut dir = self.store().cache_mount_dir(&id, *uid, *gid, *mode)?;
                let lock_path = dir.with_extension("lock");
                let lock = std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(|e| BuildError::io("opening", &lock_path, e))?;
                match sharing {
                    Sharing::Shared => {}
                    Sharing::Locked => {
                        lock.lock()
                            .map_err(|e| BuildError::io("locking", &lock_path, e))?;
                        guards.locks.push(lock);
                    }
                    Sharing::Private => {
                        // Busy elsewhere: this step gets a fresh directory of its own.
                        if lock.try_lock().is_ok() {
                            guards.locks.push(lock);
                        } else {
                            let d = tempfile::Builder::new()
                                .prefix("cache-private-")
                                .tempdir_in(self.store().tmp_dir())
                                .map_err(|e| {
                                    BuildError::io(
                                        "creating a directory in",
                                        &self.store().tmp_dir(),
                                        e,
                                    )
                                })?;
                            dir = d.path().to_owned();
                            guards.dirs.push(d);
                        }
                    }
                }
                if let Some(from) = from {
                    // Seeded from a stage or image the first time it is empty.
                    let empty = std::fs::read_dir(&dir)
                        .map(|mut d| d.next().is_none())
                        .unwrap_or(false);
                    if empty {
                        let root = self.mount_source_root(from, run, guards)?;
                        let src = crate::fsutil::resolve(&root, source, true);
                        copy_tree(&src, &dir)?;
                    }
                }
                out.push(hoist_executor::Mount::Bind {
                    source: dir,
                    target,
                    readonly: m.read_only,
                });
            }
            MountKind::Tmpfs { size } => out.push(hoist_executor::Mount::Tmpfs {
                target,
                size: *size,
            }),
            MountKind::Secret {
                id,
                env: as_env,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(value) = self.secret(id)? else {
                    if *required {
                        return Err(BuildError::Invalid(format!("secret {id} not found")));
                    }
                    return Ok(());
                };
                if let Some(var) = as_env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                }
                if !target.is_empty() {
                    // Secrets live in a private tmpfs-backed file while the step runs, never in
                    // the store, a layer or the history.
                    let base = if Path::new("/dev/shm").is_dir() {
                        PathBuf::from("/dev/shm")
                    } else {
                        scratch.to_owned()
                    };
                    let dir = tempfile::Builder::new()
                        .prefix("hoist-secret-")
                        .tempdir_in(&base)
                        .map_err(|e| BuildError::io("creating a directory in", &base, e))?;
                    let file = dir.path().join("secret");
                    std::fs::write(&file, &value)
                        .map_err(|e| BuildError::io("writing", &file, e))?;
                    std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                        .map_err(|e| BuildError::io("chown", &file, e))?;
                    std::fs::set_permissions(
                        &file,
                        std::os::unix::fs::PermissionsExt::from_mode(*mode),
                    )
                    .map_err(|e| BuildError::io("chmod", &file, e))?;
                    out.push(hoist_executor::Mount::Bind {
                        source: file,
                        target,
                        readonly: true,
                    });
                    guards.dirs.push(dir);
                }
            }
            MountKind::Ssh { id, required, .. } => {
                let id = if id.is_empty() {
                    "default"
                } else {
                    id.as_str()
                };
                let socket = self.opts.ssh.get(id).cloned().or_else(|| {
                    (id == "default")
                        .then(|| std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from))
                        .flatten()
                });
                match socket {
                    Some(sock) => {
                        env.push(format!("SSH_AUTH_SOCK={target}"));
                        out.push(hoist_executor::Mount::Bind {
                            source: sock,
                            target,
                            readonly: false,
                        });
                    }
                    None if *required => {
                        return Err(BuildError::Invalid(format!(
                            "no SSH key {id:?} forwarded from the client"
                        )));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, BuildError> {
        match self.opts.secrets.get(id) {
            Some(crate::SecretSource::File(p)) => std::fs::read(p)
                .map(Some)
                .map_err(|e| BuildError::io("reading secret", p, e)),
            Some(crate::SecretSource::Env(var)) => {
                Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes()))
            }
            None => Ok(None),
        }
    }
}

/// Copies a directory's contents (seeding a cache mount), keeping modes and owners.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), BuildError> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .map_err(|e| BuildError::io("running cp for", dst, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Invalid(format!(
            "seeding the cache mount from {} failed",
            src.display()
        )))
    }
}

/// Appends a history entry; `created` is `None` for metadata (filled at export, as BuildKit).
fn history(image: &mut StageImage, created_by: String, created: Option<String>) {
    let layer = created.is_some();
    image.config.history.push(History {
        created,
        created_by: Some(created_by),
        comment: Some(HISTORY_COMMENT.into()),
        empty_layer: !layer,
        ..History::default()
    });
}
