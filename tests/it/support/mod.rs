//! Real services for the integration tests: one PostgreSQL cluster and one tansu broker per
//! test binary, started on first use on free loopback ports in `$TMPDIR/dqetl-it-<pid>/`.
//!
//! How they are stopped:
//! - Normal exit (tests passed or failed): an `atexit` hook stops each service by pid
//!   (PostgreSQL: fast shutdown; tansu: SIGTERM; SIGKILL after a grace period) and removes
//!   the folder (kept when `DQETL_KEEP_TEST_DIRS` is set, to read the service logs).
//! - The test binary is killed or crashes: the services are spawned by one dedicated thread
//!   that lives as long as the process, with a parent-death signal (PostgreSQL: SIGQUIT, its
//!   immediate shutdown; tansu: SIGKILL), so they die with the process. The next run stops
//!   whatever such a run left in its folder (services a test started itself through
//!   `pg_ctl`, which detaches them) and removes the folder.
//!
//! Tests that start their own services do so in [`scratch_dir`] folders.
#![allow(dead_code)] // Each test module uses a part of the harness.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use dqetl::target::local::ports::free_port;
use dqetl::target::local::process::{self, SpawnOptions};
use dqetl::target::local::{
    Broker, BrokerOptions, Durability, PostgresCluster, Storage, create_topics,
};
use nix::sys::signal::Signal;

mod tls;
pub use tls::{APP_USER, TestTlsPostgres, tls_postgres};

const ROOT_PREFIX: &str = "dqetl-it-";

/// The test PostgreSQL cluster (trust auth on 127.0.0.1, logical replication enabled).
pub struct TestPostgres {
    cluster: PostgresCluster,
}

impl TestPostgres {
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// Connection URL of database `db` as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        self.cluster.url(db)
    }

    /// Creates a new empty database named after `prefix` and returns its URL.
    pub async fn fresh_database(&self, prefix: &str) -> String {
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if !clean.starts_with(|c: char| c.is_ascii_alphabetic()) {
            clean.insert_str(0, "db_");
        }
        let name = unique(&clean);
        if let Err(e) = self.cluster.create_database(&name).await {
            panic!("cannot create test database {name}: {}", error_chain(&e));
        }
        self.url(&name)
    }

    pub fn log_file(&self) -> &Path {
        self.cluster.log_file()
    }
}

/// The test tansu broker (memory storage, 127.0.0.1).
pub struct TestBroker {
    broker: Broker,
}

impl TestBroker {
    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// Creates a topic (an existing one is kept as it is).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        if let Err(e) = create_topics(&self.bootstrap(), &[(name, partitions)]).await {
            panic!("cannot create topic {name}: {}", error_chain(&e));
        }
    }

    pub fn log_file(&self) -> &Path {
        self.broker.log_file()
    }
}

/// The shared PostgreSQL cluster, started on first use.
pub fn postgres() -> &'static TestPostgres {
    static POSTGRES: OnceLock<TestPostgres> = OnceLock::new();
    POSTGRES.get_or_init(|| {
        on_service_thread(start_postgres).unwrap_or_else(|e| panic!("test PostgreSQL: {e}"))
    })
}

/// The shared broker, started on first use.
pub fn broker() -> &'static TestBroker {
    static BROKER: OnceLock<TestBroker> = OnceLock::new();
    BROKER.get_or_init(|| {
        on_service_thread(start_broker).unwrap_or_else(|e| panic!("test broker: {e}"))
    })
}

/// A name no other test of this run uses: `<prefix>_<n>_<random>` (lowercase hex).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{n}_{:08x}", rand::random::<u32>())
}

/// "error: cause: cause" for panic messages.
pub use dqetl::error_chain::error_chain;

fn start_postgres() -> Result<TestPostgres, String> {
    let root = run_root()?;
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let cluster = PostgresCluster::new(root.join("pg").join("data"), port)
        .map_err(|e| error_chain(&e))?
        .with_durability(Durability::UnsafeForTestsOnly)
        .with_log_file(root.join("logs").join("postgres.log"));
    cluster.init().map_err(|e| error_chain(&e))?;
    let options = SpawnOptions {
        die_with_parent: Some(Signal::SIGQUIT),
        ..SpawnOptions::default()
    };
    let pid = cluster
        .spawn_postmaster(&options, Duration::from_secs(60))
        .map_err(|e| error_chain(&e))?;
    // SIGINT is PostgreSQL's fast shutdown: sessions are ended, the server exits cleanly.
    register_for_exit(pid, Signal::SIGINT);
    Ok(TestPostgres { cluster })
}

fn start_broker() -> Result<TestBroker, String> {
    let root = run_root()?;
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let options = BrokerOptions {
        spawn: SpawnOptions {
            die_with_parent: Some(Signal::SIGKILL),
            ..SpawnOptions::default()
        },
        log_file: Some(root.join("logs").join("tansu.log")),
        ready_timeout: Duration::from_secs(60),
    };
    let broker = Broker::start_with(&root.join("broker"), port, Storage::Memory, &options)
        .map_err(|e| error_chain(&e))?;
    register_for_exit(broker.pid(), Signal::SIGTERM);
    Ok(TestBroker { broker })
}

/// Runs `job` on the service thread. Children spawned there get their parent-death signal
/// only when the process ends, because that thread never exits before it.
fn on_service_thread<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    type Job = Box<dyn FnOnce() + Send>;
    static JOBS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("it-services".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread) lasts until exit.
                for job in receiver {
                    // A panicking job must not end the thread: that would kill every service.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the service thread: {e}"));
        Mutex::new(sender)
    });
    let (reply, answer) = mpsc::sync_channel(1);
    let sent = jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job))
                .unwrap_or_else(|_| Err("service start panicked".to_string()));
            let _ = reply.send(outcome);
        }));
    sent.map_err(|_| "the service thread is gone".to_string())?;
    answer
        .recv()
        .map_err(|_| "the service thread dropped the job".to_string())?
}

/// A service to stop at exit: its pid and the signal that shuts it down cleanly.
struct ExitStop {
    pid: u32,
    signal: Signal,
}

static EXIT_STOPS: Mutex<Vec<ExitStop>> = Mutex::new(Vec::new());
static RUN_ROOT: Mutex<Option<PathBuf>> = Mutex::new(None);

fn register_for_exit(pid: u32, signal: Signal) {
    EXIT_STOPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ExitStop { pid, signal });
}

/// A new empty folder for one test inside this run's folder, enterable by the `postgres` user.
/// Services a test starts there itself are stopped at exit or by the next run if it has to.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = run_root()
        .unwrap_or_else(|e| panic!("test folder: {e}"))
        .join(unique(prefix));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// `$TMPDIR/dqetl-it-<pid>`: everything of this run lives here. Creating it cleans up after
/// earlier runs that died, and registers the exit hook.
fn run_root() -> Result<PathBuf, String> {
    let mut slot = RUN_ROOT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(root) = slot.as_ref() {
        return Ok(root.clone());
    }
    let tmp = std::env::temp_dir();
    remove_dead_runs(&tmp);
    let root = tmp.join(format!("{ROOT_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    // PostgreSQL runs as the `postgres` user and must be able to enter this folder (folders
    // created inside it get 0755 from the umask).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot open up {}: {e}", root.display()))?;
    // SAFETY: registers a plain `extern "C"` function with no arguments, as atexit expects.
    let registered = unsafe { nix::libc::atexit(stop_services_at_exit) };
    if registered != 0 {
        return Err("cannot register the exit hook that stops the test services".to_string());
    }
    *slot = Some(root.clone());
    Ok(root)
}

/// Removes the folders of earlier runs whose process is gone, stopping what still runs there.
fn remove_dead_runs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(ROOT_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process::is_alive(pid) {
            stop_services_under(&entry.path());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Stops services whose pid file (`postmaster.pid`, `tansu.pid`) lies under `dir`, if they
/// still run there: PostgreSQL works in its data folder and tansu in its work folder, so a
/// reused pid of an unrelated process is never hit. These are the ones a test started itself
/// (e.g. through `pg_ctl`, which detaches the server) and could not stop because it crashed.
fn stop_services_under(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    for pid_file in pid_files(&dir, 4) {
        let Ok(Some(pid)) = process::read_pid_file(&pid_file) else {
            continue;
        };
        let works_here =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        if works_here {
            // SIGQUIT is PostgreSQL's immediate shutdown; tansu has nothing left worth keeping.
            let is_postgres = pid_file.file_name().is_some_and(|n| n == "postmaster.pid");
            let signal = if is_postgres {
                Signal::SIGQUIT
            } else {
                Signal::SIGKILL
            };
            let _ = process::stop_pid(pid, signal, Duration::from_secs(10));
        }
    }
}

fn pid_files(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            found.extend(pid_files(&path, depth - 1));
        } else if kind.is_file()
            && path
                .file_name()
                .is_some_and(|n| n == "postmaster.pid" || n == "tansu.pid")
        {
            found.push(path);
        }
    }
    found
}

extern "C" fn stop_services_at_exit() {
    // Never unwind out of an exit hook.
    let _ = catch_unwind(|| {
        let stops = std::mem::take(&mut *EXIT_STOPS.lock().unwrap_or_else(|e| e.into_inner()));
        for stop in stops.iter().rev() {
            if let Err(e) = process::stop_pid(stop.pid, stop.signal, Duration::from_secs(15)) {
                eprintln!(
                    "test harness: cannot stop service {}: {}",
                    stop.pid,
                    error_chain(&e)
                );
            }
        }
        let root = RUN_ROOT.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(root) = root {
            // Anything a test started itself and left running.
            stop_services_under(&root);
            if std::env::var_os("DQETL_KEEP_TEST_DIRS").is_some() {
                eprintln!(
                    "test harness: kept {} (DQETL_KEEP_TEST_DIRS is set)",
                    root.display()
                );
            } else {
                let _ = std::fs::remove_dir_all(root);
            }
        }
    });
}
