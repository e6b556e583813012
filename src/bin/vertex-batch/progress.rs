//! Progress on stderr: a live bar on a terminal (state, rows done of total,
//! failed, elapsed, ETA), plain lines with no escape codes otherwise (at
//! most one every `PLAIN_EVERY`, plus every change of state and the end).

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The longest gap between two plain progress lines while rows move.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One look at a job or a batch.
pub struct Snapshot<'a> {
    pub state: &'a str,
    pub done: u64,
    /// Rows in all, when known.
    pub total: Option<u64>,
    pub failed: u64,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<(Instant, String)>,
    /// When rows were first seen moving, and how many were done then: the
    /// ETA is the rate since, not indicatif's (which decays between polls
    /// minutes apart).
    first: Option<(Instant, u64)>,
}

impl Progress {
    /// A bar when stderr is a terminal (and `TERM` is not `dumb`), plain
    /// lines otherwise.
    pub fn new() -> Self {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(false));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_line: None,
            first: None,
        }
    }

    /// Shows `s`.
    pub fn update(&mut self, s: &Snapshot<'_>) {
        let state = short_state(s.state);
        let now = Instant::now();
        let eta = self.eta(now, s);
        if let Some(bar) = &self.bar {
            if let Some(total) = s.total.filter(|&t| t > 0 && bar.length() != Some(t)) {
                bar.set_style(style(true));
                bar.set_length(total);
            }
            bar.set_position(s.done);
            bar.set_message(format!("{state:<10} {} failed", s.failed));
            bar.set_prefix(eta.map(|d| format!("ETA {}", hms(d))).unwrap_or_default());
            return;
        }
        let mut line = match s.total {
            Some(t) => format!("{state} {}/{t} rows done, {} failed", s.done, s.failed),
            None => format!("{state} {} rows done, {} failed", s.done, s.failed),
        };
        if let Some(d) = eta {
            line.push_str(&format!(", ETA {}", hms(d)));
        }
        let due = match &self.last_line {
            None => true,
            Some((at, last)) => {
                let state_changed = !last.starts_with(&format!("{state} "));
                state_changed || (last != &line && now.duration_since(*at) >= PLAIN_EVERY)
            }
        };
        if due {
            eprintln!("[{}] {line}", hms(self.started.elapsed()));
            self.last_line = Some((now, line));
        }
    }

    /// The time left at the rate rows have moved since they first did.
    fn eta(&mut self, now: Instant, s: &Snapshot<'_>) -> Option<Duration> {
        let total = s.total?;
        if s.done == 0 || s.done >= total {
            return None;
        }
        let (t0, d0) = *self.first.get_or_insert((now, s.done));
        let secs = now.duration_since(t0).as_secs_f64();
        let moved = s.done.saturating_sub(d0);
        if moved == 0 || secs <= 0.0 {
            return None;
        }
        let left = (total - s.done) as f64 * secs / moved as f64;
        Duration::try_from_secs_f64(left).ok()
    }

    /// Prints `line` above the bar (which goes on).
    pub fn note(&mut self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar (a terminal) and prints `line`.
    pub fn finish(&mut self, line: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
    }

    /// How long since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn style(with_total: bool) -> ProgressStyle {
    let template = if with_total {
        "{spinner} {msg} [{bar:30}] {pos}/{len} rows  {elapsed_precise}  {prefix}"
    } else {
        "{spinner} {msg}  {pos} rows done  {elapsed_precise}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// `JOB_STATE_RUNNING` -> `RUNNING`.
pub fn short_state(s: &str) -> &str {
    s.strip_prefix("JOB_STATE_").unwrap_or(s)
}

/// `1h02m03s` style.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
