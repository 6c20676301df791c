//! dqetl's own commands run as child processes of the running executable: `capture` and
//! `process` in the background (they outlive the command that started them), and
//! `generate-data` and `query --json` in the foreground.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigHandler, Signal};
use serde_json::{Map, Value};

use super::error::LocalError;
use super::owned;
use super::process::{self, SpawnOptions};
use super::stack::{self, LocalState, StackDir, Worker};

/// How long a freshly started background worker must stay up to count as started.
const STARTUP_GRACE: Duration = Duration::from_secs(2);
/// How long a worker gets to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// One JSON row of `dqetl query --json`.
pub type Row = Map<String, Value>;

/// The dqetl executable and the global options every child gets.
#[derive(Debug, Clone)]
pub struct Dqetl {
    exe: PathBuf,
    config: PathBuf,
    stack: String,
}

impl Dqetl {
    /// Children of the running executable, with the config (made absolute) and stack name.
    pub fn current(config: &Path, stack: &str) -> Result<Dqetl, LocalError> {
        let exe = std::env::current_exe().map_err(|source| LocalError::CurrentExe {
            command: "capture",
            source,
        })?;
        Ok(Dqetl::with_executable(exe, config, stack))
    }

    /// Children of a given executable (tests run the built binary).
    pub fn with_executable(exe: impl Into<PathBuf>, config: &Path, stack: &str) -> Dqetl {
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
        Dqetl {
            exe: exe.into(),
            config,
            stack: stack.to_string(),
        }
    }

    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// `dqetl --config C --target local --stack-name S <args>`.
    pub fn command<I, A>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        let mut command = Command::new(&self.exe);
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--target", "local", "--stack-name", &self.stack])
            .args(args)
            // The stack's cluster speaks plain TCP on loopback; TLS settings meant for another
            // source database in the caller's environment must not reach its children.
            .env_remove(crate::pg::ENV_SSLMODE)
            .env_remove(crate::pg::ENV_SSLROOTCERT);
        command
    }

    /// `capture --pg-url URL --bootstrap B --slot dqetl_<stack> --state-dir <stack>/capture`.
    pub fn capture_args(&self, state: &LocalState, dir: &StackDir) -> Vec<OsString> {
        vec![
            "capture".into(),
            "--pg-url".into(),
            stack::pg_url(state).into(),
            "--bootstrap".into(),
            stack::bootstrap(state).into(),
            "--slot".into(),
            stack::slot_name(&self.stack).into(),
            "--state-dir".into(),
            dir.capture_dir().into(),
        ]
    }

    /// `process --bootstrap B --lake <stack>/lake --group G --all-partitions`: a stack runs one
    /// processor, which needs no group membership (a restart after a crash then reads at once).
    pub fn process_args(&self, state: &LocalState, dir: &StackDir, group: &str) -> Vec<OsString> {
        vec![
            "process".into(),
            "--bootstrap".into(),
            stack::bootstrap(state).into(),
            "--lake".into(),
            dir.lake_dir().into(),
            "--group".into(),
            group.into(),
            "--all-partitions".into(),
        ]
    }

    /// `generate-data --pg-url URL --rate N --duration D --bad-ratio R --seed X --summary-json P`.
    pub fn generate_args(
        &self,
        state: &LocalState,
        traffic: &Traffic,
        summary: &Path,
    ) -> Vec<OsString> {
        vec![
            "generate-data".into(),
            "--pg-url".into(),
            stack::pg_url(state).into(),
            "--rate".into(),
            traffic.rate.to_string().into(),
            "--duration".into(),
            format!("{}s", traffic.duration.as_secs()).into(),
            "--bad-ratio".into(),
            traffic.bad_ratio.to_string().into(),
            "--seed".into(),
            traffic.seed.to_string().into(),
            "--summary-json".into(),
            summary.into(),
        ]
    }

    /// Runs `dqetl query --json SQL` and returns its rows.
    pub fn query_json(&self, sql: &str) -> Result<Vec<Row>, LocalError> {
        let output = self
            .command(["query", "--json", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LocalError::CurrentExe {
                command: "query",
                source,
            })?;
        if !output.status.success() {
            return Err(LocalError::Query {
                sql: sql.to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|source| LocalError::QueryOutput {
            sql: sql.to_string(),
            source,
        })
    }
}

impl Dqetl {
    /// Runs `dqetl query SQL`, its table going straight to this process's stdout.
    pub fn query_print(&self, sql: &str) -> Result<(), LocalError> {
        let output = self
            .command(["query", sql])
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| LocalError::CurrentExe {
                command: "query",
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(LocalError::Query {
                sql: sql.to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

/// What the generator writes: rows per second, for how long, how many bad rows, which seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    pub rate: u32,
    /// Zero seeds the tables (when empty) and writes nothing else.
    pub duration: Duration,
    pub bad_ratio: f64,
    pub seed: u64,
}

/// What [`start_worker`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStart {
    Started { pid: u32 },
    AlreadyRunning { pid: u32 },
}

/// The pid of a worker of this stack that is running now (from `state.json` or its pid file,
/// trusted only when the process still points into the stack folder).
pub fn running_worker(dir: &StackDir, state: Option<&LocalState>, worker: Worker) -> Option<u32> {
    recorded_pids(dir, state, worker)
        .into_iter()
        .find(|&pid| owned::belongs_to(pid, dir.root()))
}

/// Every pid recorded for a worker (state and pid file), without checking them.
pub fn recorded_pids(dir: &StackDir, state: Option<&LocalState>, worker: Worker) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Some(pid) = state.and_then(|s| s.processes.get(worker)) {
        pids.push(pid);
    }
    if let Ok(Some(pid)) = process::read_pid_file(&dir.worker_pid_file(worker))
        && !pids.contains(&pid)
    {
        pids.push(pid);
    }
    pids
}

/// Starts a background worker (`command` from [`Dqetl`]) unless one is running: in its own
/// session (no terminal signals reach it, it outlives this command), output appended to
/// `logs/<worker>.log`, pid in `pids/<worker>.pid` and `state.json`. Fails with the log's tail
/// if the worker exits within its first seconds.
pub fn start_worker(
    dir: &StackDir,
    worker: Worker,
    command: Command,
) -> Result<WorkerStart, LocalError> {
    let state = LocalState::load(dir)?;
    if let Some(pid) = running_worker(dir, state.as_ref(), worker) {
        return Ok(WorkerStart::AlreadyRunning { pid });
    }
    let log = dir.worker_log(worker);
    let options = SpawnOptions {
        new_session: true,
        ..SpawnOptions::default()
    };
    let mut child = process::spawn_logged(command, &log, &options)?;
    let pid = child.id();
    process::write_pid_file(&dir.worker_pid_file(worker), pid)?;
    LocalState::record_worker(dir, worker, Some(pid))?;

    let deadline = Instant::now() + STARTUP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            forget_worker(dir, worker);
            return Err(LocalError::WorkerExited {
                command: worker_command(worker),
                status: status.to_string(),
                log_tail: process::log_tail(&log, 20),
                log,
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(WorkerStart::Started { pid })
}

/// What [`stop_worker`] did to one recorded pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerStop {
    NotRunning,
    Stopped { pid: u32 },
    Killed { pid: u32 },
}

/// Stops a worker of this stack by its recorded pid (SIGTERM, SIGKILL after [`STOP_GRACE`]) and
/// forgets its pid. A recorded pid that now belongs to another process is left alone.
pub fn stop_worker(
    dir: &StackDir,
    state: Option<&LocalState>,
    worker: Worker,
) -> Result<WorkerStop, LocalError> {
    let mut outcome = WorkerStop::NotRunning;
    for pid in recorded_pids(dir, state, worker) {
        if !owned::belongs_to(pid, dir.root()) {
            continue;
        }
        outcome = match process::stop_pid(pid, Signal::SIGTERM, STOP_GRACE)? {
            process::StopOutcome::Killed => WorkerStop::Killed { pid },
            process::StopOutcome::Exited => WorkerStop::Stopped { pid },
            process::StopOutcome::NotRunning => outcome,
        };
    }
    forget_worker(dir, worker);
    Ok(outcome)
}

fn forget_worker(dir: &StackDir, worker: Worker) {
    let _ = fs::remove_file(dir.worker_pid_file(worker));
    let _ = LocalState::record_worker(dir, worker, None);
}

fn worker_command(worker: Worker) -> &'static str {
    match worker {
        Worker::Capture => "capture",
        Worker::Process => "process",
        Worker::Generator => "generate-data",
    }
}

/// Where a foreground generator's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeneratorOutput {
    /// Appended to `logs/generator.log` (seeding).
    Log,
    /// To this terminal: its progress display and summary are the command's output.
    Terminal,
    /// Its stdout to our stderr, so our stdout stays pure JSON.
    Stderr,
}

/// Runs `generate-data` in the foreground and returns the path of its JSON summary, written to
/// `summaries/`. Its pid is recorded while it runs (so `teardown` can stop it). A Ctrl-C in the
/// terminal reaches the generator, which stops and writes its summary; this process waits for
/// it instead of dying first.
pub fn run_generator(
    dqetl: &Dqetl,
    dir: &StackDir,
    state: &LocalState,
    traffic: &Traffic,
    output: GeneratorOutput,
) -> Result<PathBuf, LocalError> {
    let kind = if traffic.duration.is_zero() {
        "seed"
    } else {
        "traffic"
    };
    let summary = dir.summaries_dir().join(format!(
        "{}-{kind}.json",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ));
    let log = dir.worker_log(Worker::Generator);
    let mut command = dqetl.command(dqetl.generate_args(state, traffic, &summary));
    command.stdin(Stdio::null());
    match output {
        GeneratorOutput::Log => {
            let out = process::open_log(&log)?;
            let err = out
                .try_clone()
                .map_err(|source| process::ProcessError::LogFile {
                    path: log.clone(),
                    source,
                })?;
            command.stdout(out).stderr(err);
        }
        GeneratorOutput::Terminal => {}
        GeneratorOutput::Stderr => {
            use std::os::fd::AsFd;
            if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
                command.stdout(Stdio::from(fd));
            }
        }
    }
    let mut child = command
        .spawn()
        .map_err(|source| process::ProcessError::Spawn {
            program: "dqetl generate-data".into(),
            source,
        })?;
    let pid = child.id();
    process::write_pid_file(&dir.worker_pid_file(Worker::Generator), pid)?;
    LocalState::record_worker(dir, Worker::Generator, Some(pid))?;
    let status = wait_ignoring_interrupts(&mut child);
    forget_worker(dir, Worker::Generator);
    let status = status.map_err(|source| process::ProcessError::Spawn {
        program: "dqetl generate-data".into(),
        source,
    })?;
    if !status.success() {
        let where_to_look = match output {
            GeneratorOutput::Log => format!(
                "its log {} ends with:\n{}",
                log.display(),
                process::log_tail(&log, 20)
            ),
            _ => "see its output above".to_string(),
        };
        return Err(LocalError::ChildFailed {
            command: "generate-data",
            status: status.to_string(),
            where_to_look,
        });
    }
    Ok(summary)
}

/// Waits for a foreground child while SIGINT and SIGQUIT are ignored here (the way `system(3)`
/// does): the terminal sends them to the child too, which handles them itself.
fn wait_ignoring_interrupts(child: &mut std::process::Child) -> std::io::Result<ExitStatus> {
    // SAFETY: installs the standard "ignore" disposition and later restores the previous one;
    // no Rust handler code runs in signal context.
    let previous = unsafe {
        [Signal::SIGINT, Signal::SIGQUIT].map(|signal| {
            (
                signal,
                nix::sys::signal::signal(signal, SigHandler::SigIgn).ok(),
            )
        })
    };
    let status = child.wait();
    for (signal, handler) in previous {
        if let Some(handler) = handler {
            // SAFETY: restores the disposition that was in place before.
            unsafe {
                let _ = nix::sys::signal::signal(signal, handler);
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_command_lines_carry_the_stack_and_its_paths() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "demo-1");
        let state = LocalState {
            stack: "demo-1".into(),
            created_at: chrono::Utc::now(),
            postgres: stack::PostgresState {
                port: 5555,
                data_dir: dir.pg_dir(),
                database: stack::DATABASE.into(),
            },
            broker: stack::BrokerState { port: 9999 },
            processes: stack::ProcessPids::default(),
        };
        let dqetl = Dqetl::with_executable("/bin/dqetl", Path::new("/etc/tables.yaml"), "demo-1");
        let text = |args: Vec<OsString>| {
            args.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            text(dqetl.capture_args(&state, &dir)),
            format!(
                "capture --pg-url postgres://postgres@127.0.0.1:5555/dqetl --bootstrap 127.0.0.1:9999 \
                 --slot dqetl_demo_1 --state-dir {}/capture",
                dir.root().display()
            )
        );
        assert_eq!(
            text(dqetl.process_args(&state, &dir, "dqetl-demo-1")),
            format!(
                "process --bootstrap 127.0.0.1:9999 --lake {}/lake --group dqetl-demo-1 --all-partitions",
                dir.root().display()
            )
        );
        let traffic = Traffic {
            rate: 40,
            duration: Duration::ZERO,
            bad_ratio: 0.1,
            seed: 7,
        };
        assert_eq!(
            text(dqetl.generate_args(&state, &traffic, Path::new("/s.json"))),
            "generate-data --pg-url postgres://postgres@127.0.0.1:5555/dqetl --rate 40 --duration 0s \
             --bad-ratio 0.1 --seed 7 --summary-json /s.json"
        );
        let command = dqetl.command(["status"]);
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--config",
                "/etc/tables.yaml",
                "--target",
                "local",
                "--stack-name",
                "demo-1",
                "status"
            ]
        );
    }

    #[test]
    fn a_worker_that_dies_at_once_is_reported_with_its_log_and_forgotten() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "w");
        dir.create_dirs().expect("dirs");
        let mut command = Command::new("sh");
        command.args(["-c", "echo cannot reach the broker >&2; exit 3"]);
        let err = start_worker(&dir, Worker::Capture, command).expect_err("dies");
        let text = err.to_string();
        assert!(text.contains("cannot reach the broker"), "{text}");
        assert!(text.contains("capture.log"), "{text}");
        assert!(!dir.worker_pid_file(Worker::Capture).exists());
    }

    #[test]
    fn a_running_worker_is_not_started_twice_and_stops_by_its_pid() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "w");
        dir.create_dirs().expect("dirs");
        // A stand-in worker whose command line names the stack folder, as real workers' do.
        let marker = dir.capture_dir().join("marker");
        fs::write(&marker, "").expect("marker");
        let worker = || {
            let mut command = Command::new("tail");
            command.arg("-f").arg(&marker);
            command
        };
        let WorkerStart::Started { pid } =
            start_worker(&dir, Worker::Capture, worker()).expect("start")
        else {
            panic!("expected a fresh start");
        };
        assert_eq!(
            start_worker(&dir, Worker::Capture, worker()).expect("again"),
            WorkerStart::AlreadyRunning { pid }
        );
        assert_eq!(running_worker(&dir, None, Worker::Capture), Some(pid));
        // Its own session: a Ctrl-C in our terminal does not reach it, and it outlives us.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // After the command: state, ppid, pgrp, session.
        assert_eq!(fields.get(3), Some(&pid.to_string().as_str()), "{stat}");
        assert_ne!(
            nix::unistd::getsid(None).expect("our session").as_raw() as u32,
            pid
        );
        assert_eq!(
            stop_worker(&dir, None, Worker::Capture).expect("stop"),
            WorkerStop::Stopped { pid }
        );
        assert!(!process::is_alive(pid));
        assert_eq!(running_worker(&dir, None, Worker::Capture), None);
        assert_eq!(
            stop_worker(&dir, None, Worker::Capture).expect("stop again"),
            WorkerStop::NotRunning
        );
    }
}
