//! How the lifecycle commands show their steps: a spinner per step and a progress bar for waits
//! on a terminal, plain lines otherwise, or nothing but a collected list for `--json`.
//!
//! Lifecycle code reports through [`Reporter`], so it runs the same under every display and in
//! tests ([`Silent`]).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// It changed something (started, created, stopped, removed).
    Done,
    /// Nothing needed doing (already running, already exists).
    Unchanged,
    /// Skipped on request.
    Skipped,
    /// It failed; the command reports the error.
    Failed,
}

/// One finished step: its name, what it did, and a human description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub step: String,
    pub status: StepStatus,
    pub detail: String,
}

impl StepResult {
    pub fn done(step: &str, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, StepStatus::Done, detail)
    }

    pub fn unchanged(step: &str, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, StepStatus::Unchanged, detail)
    }

    pub fn skipped(step: &str, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, StepStatus::Skipped, detail)
    }

    pub fn failed(step: &str, detail: impl Into<String>) -> StepResult {
        StepResult::new(step, StepStatus::Failed, detail)
    }

    fn new(step: &str, status: StepStatus, detail: impl Into<String>) -> StepResult {
        StepResult {
            step: step.to_string(),
            status,
            detail: detail.into(),
        }
    }
}

/// Receives the progress of lifecycle operations.
pub trait Reporter {
    /// A step starts; `doing` says what it is waiting for.
    fn begin(&mut self, step: &str, doing: &str);
    /// A step finished (successfully or not).
    fn end(&mut self, result: &StepResult);
    /// A bounded wait advances: `done` of `total` units (None: unknown total), with a short
    /// description of where it stands.
    fn progress(&mut self, label: &str, done: u64, total: Option<u64>, detail: &str);
    /// A line of information between steps.
    fn note(&mut self, text: &str);
}

/// Reports nothing (tests, and callers that only want the results).
#[derive(Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn begin(&mut self, _step: &str, _doing: &str) {}
    fn end(&mut self, _result: &StepResult) {}
    fn progress(&mut self, _label: &str, _done: u64, _total: Option<u64>, _detail: &str) {}
    fn note(&mut self, _text: &str) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Spinners and bars on stderr, result lines on stdout.
    Terminal,
    /// One line per finished step, and a progress line every few seconds.
    Plain,
    /// Nothing printed; the command prints the collected steps as JSON.
    Json,
}

/// The [`Reporter`] of the commands.
pub struct Console {
    mode: Mode,
    spinner: Option<ProgressBar>,
    bar: Option<(String, ProgressBar)>,
    last_plain_progress: Option<Instant>,
    steps: Vec<StepResult>,
}

impl Console {
    /// A console for `--json` (collects) or for people (terminal or plain lines, depending on
    /// whether stderr is a terminal).
    pub fn new(json: bool) -> Console {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Console {
            mode,
            spinner: None,
            bar: None,
            last_plain_progress: None,
            steps: Vec::new(),
        }
    }

    /// Every step reported so far.
    pub fn steps(&self) -> &[StepResult] {
        &self.steps
    }

    /// True when output is for people (not `--json`).
    pub fn is_human(&self) -> bool {
        self.mode != Mode::Json
    }

    /// Prints a line of command output (not in `--json` mode).
    pub fn line(&mut self, text: &str) {
        self.clear();
        if self.is_human() {
            println!("{text}");
        }
    }

    fn clear(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A spinner (no total) or a bar, configured before it is first drawn, ticking on its own.
fn new_bar(total: Option<u64>, prefix: &str, message: &str) -> ProgressBar {
    let (bar, style) = match total {
        Some(total) => (
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()),
            ProgressStyle::with_template("{prefix:<12} [{bar:30}] {pos}/{len} ({elapsed}, {msg})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
            ProgressStyle::with_template("{spinner} {prefix:<12} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar.set_message(message.to_string());
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

impl Reporter for Console {
    fn begin(&mut self, step: &str, doing: &str) {
        self.clear();
        if self.mode == Mode::Terminal {
            let spinner = new_bar(None, step, doing);
            self.spinner = Some(spinner);
        }
    }

    fn end(&mut self, result: &StepResult) {
        self.clear();
        if self.is_human() {
            let mark = match result.status {
                StepStatus::Done => "+",
                StepStatus::Unchanged => "=",
                StepStatus::Skipped => "-",
                StepStatus::Failed => "!",
            };
            // A failure's full text is the command's error message, printed once, at the end.
            let detail = match result.status {
                StepStatus::Failed => "failed",
                _ => result.detail.as_str(),
            };
            println!("{mark} {:<12} {detail}", result.step);
        }
        self.steps.push(result.clone());
    }

    fn progress(&mut self, label: &str, done: u64, total: Option<u64>, detail: &str) {
        match self.mode {
            Mode::Json => {}
            Mode::Terminal => {
                if let Some(spinner) = self.spinner.take() {
                    spinner.finish_and_clear();
                }
                let reuse = self
                    .bar
                    .as_ref()
                    .is_some_and(|(l, b)| l == label && b.length().is_some() == total.is_some());
                if !reuse {
                    if let Some((_, bar)) = self.bar.take() {
                        bar.finish_and_clear();
                    }
                    self.bar = Some((label.to_string(), new_bar(total, label, detail)));
                }
                if let Some((_, bar)) = &self.bar {
                    if let Some(total) = total {
                        bar.set_length(total);
                        bar.set_position(done);
                    }
                    bar.set_message(detail.to_string());
                }
            }
            Mode::Plain => {
                let due = self
                    .last_plain_progress
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(5));
                if due {
                    self.last_plain_progress = Some(Instant::now());
                    match total {
                        Some(total) => println!("  {label}: {done}/{total} ({detail})"),
                        None => println!("  {label}: {detail}"),
                    }
                }
            }
        }
    }

    fn note(&mut self, text: &str) {
        self.line(text);
    }
}
