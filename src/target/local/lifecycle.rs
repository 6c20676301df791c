//! `deploy` and `teardown` of a local stack.
//!
//! Deploy is idempotent: it starts what is down and reports what already runs, so it is also
//! how a stack comes back after a reboot (the ports recorded in `state.json` are reused, and the
//! broker's SQLite storage keeps topics and group offsets). Teardown stops only what dqetl
//! started, by recorded pid, and removes the stack folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::broker::{self, Broker, BrokerOptions, Storage};
use super::children::{self, WorkerStop};
use super::console::{Reporter, StepResult};
use super::error::LocalError;
use super::owned;
use super::ports;
use super::postgres::{self, CreateOutcome, InitOutcome, PostgresCluster, StartOutcome};
use super::process::{self, SpawnOptions, StopOutcome};
use super::stack::{
    BROKER_STORAGE, BrokerState, DATABASE, LocalState, PostgresState, ProcessPids, StackDir, Worker,
};

/// How long deploy waits for each service to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The programs the local target runs, found where setup puts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub postgres_bin_dir: PathBuf,
    pub tansu: PathBuf,
}

/// Finds PostgreSQL's server programs and tansu; the error names what is missing and says to
/// run scripts/setup.sh.
pub fn check_binaries() -> Result<Binaries, LocalError> {
    Ok(Binaries {
        postgres_bin_dir: postgres::find_bin_dir()?,
        tansu: broker::find_binary()?,
    })
}

/// The PostgreSQL cluster of a stack, on `port`.
pub fn cluster(dir: &StackDir, port: u16) -> Result<PostgresCluster, LocalError> {
    Ok(PostgresCluster::new(dir.pg_dir(), port)?.with_log_file(dir.postgres_log()))
}

/// Starts the stack's services (PostgreSQL with database `dqetl`, tansu) and records them in
/// `state.json`. Services that already run are reported and left alone.
pub async fn deploy(dir: &StackDir, reporter: &mut dyn Reporter) -> Result<LocalState, LocalError> {
    reporter.begin("programs", "looking for postgres and tansu");
    let binaries = check_binaries().inspect_err(|e| fail(reporter, "programs", e))?;
    reporter.end(&StepResult::done(
        "programs",
        format!(
            "PostgreSQL in {}, tansu at {}",
            binaries.postgres_bin_dir.display(),
            binaries.tansu.display()
        ),
    ));

    let existed = dir.exists();
    dir.create_dirs()
        .map_err(LocalError::from)
        .inspect_err(|e| fail(reporter, "folder", e))?;
    reporter.end(&if existed {
        StepResult::unchanged("folder", format!("{} exists", dir.root().display()))
    } else {
        StepResult::done("folder", format!("created {}", dir.root().display()))
    });

    let state = plan_state(dir)?;
    state.save(dir)?;

    reporter.begin("postgres", "starting PostgreSQL");
    let result = start_postgres(dir, &state).inspect_err(|e| fail(reporter, "postgres", e))?;
    reporter.end(&result);

    reporter.begin("database", "creating database");
    let cluster = cluster(dir, state.postgres.port)?;
    let created = cluster
        .create_database(&state.postgres.database)
        .await
        .map_err(LocalError::from)
        .inspect_err(|e| fail(reporter, "database", e))?;
    reporter.end(&match created {
        CreateOutcome::Created => {
            StepResult::done("database", format!("created `{}`", state.postgres.database))
        }
        CreateOutcome::AlreadyExists => {
            StepResult::unchanged("database", format!("`{}` exists", state.postgres.database))
        }
    });

    reporter.begin("broker", "starting tansu");
    let result = start_broker(dir, &state).inspect_err(|e| fail(reporter, "broker", e))?;
    reporter.end(&result);
    Ok(state)
}

fn fail(reporter: &mut dyn Reporter, step: &str, error: &LocalError) {
    reporter.end(&StepResult::failed(step, error.to_string()));
}

/// The state to deploy: the recorded one, or a new one on free ports. A cluster left without a
/// state file keeps the port written in its configuration.
fn plan_state(dir: &StackDir) -> Result<LocalState, LocalError> {
    if let Some(state) = LocalState::load(dir)? {
        return Ok(state);
    }
    let pg_port = match configured_pg_port(&dir.pg_dir()) {
        Some(port) => port,
        None => ports::free_port().map_err(free_port_error)?,
    };
    let mut broker_port = ports::free_port().map_err(free_port_error)?;
    while broker_port == pg_port {
        broker_port = ports::free_port().map_err(free_port_error)?;
    }
    Ok(LocalState {
        stack: dir.stack().to_string(),
        created_at: chrono::Utc::now(),
        postgres: PostgresState {
            port: pg_port,
            data_dir: dir.pg_dir(),
            database: DATABASE.to_string(),
        },
        broker: BrokerState { port: broker_port },
        processes: ProcessPids::default(),
    })
}

fn free_port_error(source: std::io::Error) -> LocalError {
    LocalError::Process(process::ProcessError::Spawn {
        program: "a listener on 127.0.0.1 (looking for a free port)".into(),
        source,
    })
}

/// The `port = N` line dqetl wrote into an existing cluster's settings.
fn configured_pg_port(data_dir: &Path) -> Option<u16> {
    let text = fs::read_to_string(data_dir.join("dqetl.conf")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "port")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn start_postgres(dir: &StackDir, state: &LocalState) -> Result<StepResult, LocalError> {
    let cluster = cluster(dir, state.postgres.port)?;
    let initialised = cluster.init()? == InitOutcome::Created;
    let started = cluster.start()?;
    let address = format!("127.0.0.1:{}", state.postgres.port);
    Ok(match (started, initialised) {
        (StartOutcome::AlreadyRunning, _) => {
            StepResult::unchanged("postgres", format!("already running on {address}"))
        }
        (StartOutcome::Started, true) => StepResult::done(
            "postgres",
            format!(
                "started on {address} (new cluster in {})",
                dir.pg_dir().display()
            ),
        ),
        (StartOutcome::Started, false) => {
            StepResult::done("postgres", format!("started on {address}"))
        }
    })
}

fn start_broker(dir: &StackDir, state: &LocalState) -> Result<StepResult, LocalError> {
    let port = state.broker.port;
    let work_dir = dir.broker_dir();
    let pid_file = work_dir.join(broker::PID_FILE);
    if let Some(pid) = process::read_pid_file(&pid_file)? {
        if owned::belongs_to(pid, dir.root()) {
            if !ports::wait_until_accepting(port, READY_TIMEOUT) {
                return Err(LocalError::from(broker::BrokerError::NotReady {
                    port,
                    waited: READY_TIMEOUT,
                    log_file: dir.broker_log(),
                    log_tail: process::log_tail(&dir.broker_log(), 20),
                }));
            }
            return Ok(StepResult::unchanged(
                "broker",
                format!("already running on 127.0.0.1:{port} (pid {pid})"),
            ));
        }
        // The pid belongs to some other process now (e.g. after a reboot): not ours to keep.
        let _ = fs::remove_file(&pid_file);
    }
    let options = BrokerOptions {
        spawn: SpawnOptions {
            new_session: true,
            ..SpawnOptions::default()
        },
        log_file: Some(dir.broker_log()),
        ready_timeout: READY_TIMEOUT,
    };
    let broker = Broker::start_with(
        &work_dir,
        port,
        Storage::Sqlite(PathBuf::from(BROKER_STORAGE)),
        &options,
    )?;
    Ok(StepResult::done(
        "broker",
        format!(
            "started on {} (pid {}, storage {}/{BROKER_STORAGE})",
            broker.bootstrap(),
            broker.pid(),
            work_dir.display()
        ),
    ))
}

/// Whether the stack's two services answer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicesUp {
    pub postgres: bool,
    pub broker: bool,
}

/// Checks both services (cheaply: a readiness probe and a TCP connect).
pub fn services_up(dir: &StackDir, state: &LocalState) -> ServicesUp {
    let postgres = cluster(dir, state.postgres.port)
        .map(|c| c.is_ready() && c.is_running().unwrap_or(false))
        .unwrap_or(false);
    let broker = broker_pid(dir).is_some() && ports::accepts_connections(state.broker.port);
    ServicesUp { postgres, broker }
}

/// The pid of the stack's running broker.
pub fn broker_pid(dir: &StackDir) -> Option<u32> {
    process::read_pid_file(&dir.broker_dir().join(broker::PID_FILE))
        .ok()
        .flatten()
        .filter(|&pid| owned::belongs_to(pid, dir.root()))
}

/// The pid of the stack's running postmaster.
pub fn postmaster_pid(dir: &StackDir) -> Option<u32> {
    let text = fs::read_to_string(dir.pg_dir().join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    owned::belongs_to(pid, dir.root()).then_some(pid)
}

/// Stops everything the stack runs and removes its folder. Safe when nothing runs or the
/// folder is gone. Refuses to remove the folder while a process still points into it.
pub fn teardown(dir: &StackDir, reporter: &mut dyn Reporter) -> Result<(), LocalError> {
    if !dir.exists() {
        reporter.end(&StepResult::unchanged(
            "folder",
            format!(
                "nothing to tear down: {} does not exist",
                dir.root().display()
            ),
        ));
        return Ok(());
    }
    // A damaged state file must not keep a stack from being removed; pid files still count.
    let state = LocalState::load(dir).ok().flatten();

    for worker in [Worker::Generator, Worker::Capture, Worker::Process] {
        let step = worker.name();
        reporter.begin(step, "stopping");
        let stopped = children::stop_worker(dir, state.as_ref(), worker)
            .inspect_err(|e| fail(reporter, step, e))?;
        reporter.end(&match stopped {
            WorkerStop::NotRunning => StepResult::unchanged(step, "not running"),
            WorkerStop::Stopped { pid } => StepResult::done(step, format!("stopped pid {pid}")),
            WorkerStop::Killed { pid } => StepResult::done(
                step,
                format!(
                    "killed pid {pid} (it ignored SIGTERM for {:?})",
                    children::STOP_GRACE
                ),
            ),
        });
    }

    reporter.begin("postgres", "stopping PostgreSQL");
    let result =
        stop_postgres(dir, state.as_ref()).inspect_err(|e| fail(reporter, "postgres", e))?;
    reporter.end(&result);

    reporter.begin("broker", "stopping tansu");
    let result = match broker_pid(dir) {
        None => StepResult::unchanged("broker", "not running"),
        Some(pid) => {
            let outcome = process::stop_pid(pid, Signal::SIGTERM, Duration::from_secs(10))
                .map_err(LocalError::from)
                .inspect_err(|e| fail(reporter, "broker", e))?;
            stop_result("broker", pid, outcome)
        }
    };
    reporter.end(&result);

    reporter.begin(
        "leftovers",
        "looking for processes still in the stack folder",
    );
    let leftovers = wait_for_leftovers(dir.root(), Duration::from_secs(10));
    if !leftovers.is_empty() {
        let error = LocalError::StillRunning {
            dir: dir.root().to_path_buf(),
            processes: leftovers,
        };
        fail(reporter, "leftovers", &error);
        return Err(error);
    }
    reporter.end(&StepResult::unchanged("leftovers", "none"));

    reporter.begin("folder", "removing");
    let size = folder_size(dir.root());
    fs::remove_dir_all(dir.root())
        .map_err(|source| LocalError::Remove {
            path: dir.root().to_path_buf(),
            source,
        })
        .inspect_err(|e| fail(reporter, "folder", e))?;
    // `.dqetl/` goes too once its last stack is gone (fails harmlessly while others remain).
    if let Some(parent) = dir.state_root() {
        let _ = fs::remove_dir(parent);
    }
    reporter.end(&StepResult::done(
        "folder",
        format!("removed {} ({})", dir.root().display(), human_bytes(size)),
    ));
    Ok(())
}

fn stop_postgres(dir: &StackDir, state: Option<&LocalState>) -> Result<StepResult, LocalError> {
    if !dir.pg_dir().join("PG_VERSION").exists() {
        return Ok(StepResult::unchanged("postgres", "no cluster"));
    }
    let Some(pid) = postmaster_pid(dir) else {
        return Ok(StepResult::unchanged("postgres", "not running"));
    };
    // pg_ctl stops the server cleanly; without the server programs, the postmaster's fast
    // shutdown signal does the same.
    let port = state.map(|s| s.postgres.port).unwrap_or_default();
    match cluster(dir, port) {
        Ok(cluster) => {
            cluster.stop()?;
            Ok(StepResult::done("postgres", format!("stopped (pid {pid})")))
        }
        Err(_) => {
            let outcome = process::stop_pid(pid, Signal::SIGINT, Duration::from_secs(60))?;
            Ok(stop_result("postgres", pid, outcome))
        }
    }
}

fn stop_result(step: &str, pid: u32, outcome: StopOutcome) -> StepResult {
    match outcome {
        StopOutcome::NotRunning => StepResult::unchanged(step, "not running"),
        StopOutcome::Exited => StepResult::done(step, format!("stopped pid {pid}")),
        StopOutcome::Killed => StepResult::done(
            step,
            format!("killed pid {pid} (it ignored the stop signal)"),
        ),
    }
}

/// Processes still pointing into the folder once they had `grace` to exit (PostgreSQL's
/// server processes end a moment after the postmaster).
fn wait_for_leftovers(dir: &Path, grace: Duration) -> Vec<owned::ProcessInfo> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        let left: Vec<owned::ProcessInfo> = owned::processes_in(dir)
            .into_iter()
            .filter(|p| is_stack_program(&p.command))
            .collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Programs a stack runs. Other processes inside the folder (a shell whose working directory is
/// `logs/`, a `tail -f` of a log) are the user's and neither block nor get stopped.
fn is_stack_program(command: &str) -> bool {
    let program = command.split(' ').next().unwrap_or_default();
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    let own = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()));
    name == "postgres"
        || name == "tansu"
        || name == "dqetl"
        || command.starts_with("postgres:")
        || own.as_deref() == Some(name)
}

fn folder_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => folder_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_of_an_existing_cluster_is_read_from_its_settings() {
        let base = tempfile::tempdir().expect("tempdir");
        fs::write(
            base.path().join("dqetl.conf"),
            "# Written by dqetl.\nlisten_addresses = '127.0.0.1'\nport = 54329\nwal_level = logical\n",
        )
        .expect("write");
        assert_eq!(configured_pg_port(base.path()), Some(54329));
        assert_eq!(configured_pg_port(&base.path().join("missing")), None);
    }

    #[test]
    fn a_fresh_state_gets_two_different_free_ports() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "s");
        let state = plan_state(&dir).expect("plan");
        assert_ne!(state.postgres.port, state.broker.port);
        assert_eq!(state.postgres.database, DATABASE);
        assert_eq!(state.postgres.data_dir, dir.pg_dir());
        assert_eq!(state.processes, ProcessPids::default());
    }

    #[test]
    fn only_the_stacks_own_programs_count_as_leftovers() {
        assert!(is_stack_program(
            "/usr/lib/postgresql/15/bin/postgres -D /x/pg"
        ));
        assert!(is_stack_program("postgres: checkpointer"));
        assert!(is_stack_program(
            "/root/.cargo/bin/tansu broker --listener-url tcp://127.0.0.1:1"
        ));
        assert!(is_stack_program("/target/debug/dqetl --config c capture"));
        assert!(!is_stack_program("-bash"));
        assert!(!is_stack_program("tail -f /x/logs/process.log"));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
