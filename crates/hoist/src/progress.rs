//! BuildKit-like build progress on stderr: `plain` prints numbered vertices with their output,
//! `tty` redraws a live view of the running steps and their last lines, `quiet` prints nothing.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use hoist_engine::Event;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Plain,
    Tty,
    Quiet,
}

impl Mode {
    pub(crate) fn parse(s: &str, quiet: bool) -> anyhow::Result<Self> {
        if quiet {
            return Ok(Self::Quiet);
        }
        Ok(match s {
            "auto" if io::stderr().is_terminal() => Self::Tty,
            "auto" | "plain" => Self::Plain,
            "tty" => Self::Tty,
            "quiet" => Self::Quiet,
            other => {
                anyhow::bail!("invalid progress mode {other:?}: use auto, plain, tty or quiet")
            }
        })
    }
}

struct Vertex {
    name: String,
    started: Instant,
    elapsed: Option<Duration>,
    /// Complete output lines with their offset from the start, and a partial last line.
    lines: Vec<(Duration, String)>,
    partial: String,
    cached: bool,
}

/// Renders events and remembers each step's output for error reports.
pub(crate) struct Progress {
    mode: Mode,
    start: Instant,
    vertices: BTreeMap<usize, Vertex>,
    drawn: usize,
    last_draw: Option<Instant>,
}

const TAIL: usize = 6;

impl Progress {
    pub(crate) fn new(mode: Mode) -> Self {
        Self {
            mode,
            start: Instant::now(),
            vertices: BTreeMap::new(),
            drawn: 0,
            last_draw: None,
        }
    }

    /// The next vertex number (for the export step).
    pub(crate) fn next_id(&self) -> usize {
        self.vertices.keys().next_back().copied().unwrap_or(0) + 1
    }

    pub(crate) fn event(&mut self, event: &Event<'_>) {
        let mut err = io::stderr().lock();
        match *event {
            Event::Started { id, name } => {
                self.vertices.insert(
                    id,
                    Vertex {
                        name: name.to_owned(),
                        started: Instant::now(),
                        elapsed: None,
                        lines: Vec::new(),
                        partial: String::new(),
                        cached: false,
                    },
                );
                if self.mode == Mode::Plain {
                    let _ = writeln!(err, "#{id} {name}");
                }
            }
            Event::Output { id, bytes } => {
                let mode = self.mode;
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.partial.push_str(&String::from_utf8_lossy(bytes));
                    while let Some(nl) = v.partial.find('\n') {
                        let line: String = v.partial.drain(..=nl).collect();
                        let line = line.trim_end_matches(['\n', '\r']).to_owned();
                        let at = v.started.elapsed();
                        if mode == Mode::Plain {
                            let _ = writeln!(err, "#{id} {:.3} {line}", at.as_secs_f64());
                        }
                        v.lines.push((at, line));
                    }
                }
            }
            Event::Done { id, elapsed } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    if !v.partial.is_empty() {
                        let line = std::mem::take(&mut v.partial);
                        if self.mode == Mode::Plain {
                            let _ = writeln!(
                                err,
                                "#{id} {:.3} {line}",
                                v.started.elapsed().as_secs_f64()
                            );
                        }
                        v.lines.push((v.started.elapsed(), line));
                    }
                    v.elapsed = Some(elapsed);
                }
                if self.mode == Mode::Plain {
                    let _ = writeln!(err, "#{id} DONE {:.1}s\n", elapsed.as_secs_f64());
                }
            }
            Event::Cached { id } => {
                if let Some(v) = self.vertices.get_mut(&id) {
                    v.elapsed = Some(Duration::ZERO);
                    v.cached = true;
                }
                if self.mode == Mode::Plain {
                    let _ = writeln!(err, "#{id} CACHED\n");
                }
            }
            Event::Explain { id, message } => {
                if self.mode != Mode::Quiet {
                    let _ = writeln!(err, "#{id} cache miss: {message}");
                }
            }
            Event::Warning { message } => {
                if self.mode != Mode::Quiet {
                    let _ = writeln!(err, "WARNING: {message}");
                }
            }
        }
        drop(err);
        if self.mode == Mode::Tty {
            let due = self
                .last_draw
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(80));
            if due || matches!(event, Event::Done { .. } | Event::Started { .. }) {
                self.draw();
            }
        }
    }

    /// A line of the export step (`writing image sha256:… done`).
    pub(crate) fn export_line(&mut self, id: usize, line: &str) {
        if self.mode == Mode::Plain {
            let _ = writeln!(io::stderr(), "#{id} {line}");
        }
    }

    /// Redraws the live view: every finished step on one line, running ones with their tail.
    fn draw(&mut self) {
        let mut out = String::new();
        let done = self
            .vertices
            .values()
            .filter(|v| v.elapsed.is_some())
            .count();
        out.push_str(&format!(
            "[+] Building {:.1}s ({done}/{})\n",
            self.start.elapsed().as_secs_f64(),
            self.vertices.len()
        ));
        for v in self.vertices.values() {
            let t = v.elapsed.unwrap_or_else(|| v.started.elapsed());
            out.push_str(&format!(
                " => {:<60} {:>5.1}s\n",
                truncate(&v.name, 60),
                t.as_secs_f64()
            ));
            if v.elapsed.is_none() {
                let tail = v.lines.len().saturating_sub(TAIL);
                for (_, line) in &v.lines[tail..] {
                    out.push_str(&format!(" => => # {}\n", truncate(line, 72)));
                }
            }
        }
        let mut err = io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}F\x1b[J", self.drawn);
        }
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
        self.drawn = out.lines().count();
        self.last_draw = Some(Instant::now());
    }

    /// Finishes the live view (the last frame stays on screen).
    pub(crate) fn finish(&mut self) {
        if self.mode == Mode::Tty {
            self.draw();
        }
    }

    /// BuildKit's failure block: the failing vertex and its last output lines.
    pub(crate) fn failure_block(&self, vertex: &str) -> String {
        let Some((id, v)) = self.vertices.iter().rev().find(|(_, v)| v.name == vertex) else {
            return String::new();
        };
        let mut s = format!("------\n > {vertex}:\n");
        let tail = v.lines.len().saturating_sub(10);
        for (at, line) in &v.lines[tail..] {
            s.push_str(&format!("#{id} {:.3} {line}\n", at.as_secs_f64()));
        }
        s.push_str("------\n");
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['…']).collect()
    }
}
