//! The local Kafka-protocol broker: tansu, listening on 127.0.0.1 only.
//!
//! With [`Storage::Sqlite`] topics, messages and committed group offsets survive a restart;
//! [`Storage::Memory`] is for throwaway brokers (tests).

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::ports;
use super::process::{self, ProcessError, SpawnOptions, StopOutcome};
use crate::stream::{KafkaConnection, TopicOutcome};

/// The broker program.
pub const BINARY: &str = "tansu";
/// Pid file of a broker, inside its work folder.
pub const PID_FILE: &str = "tansu.pid";
/// Default log file of a broker, inside its work folder.
pub const LOG_FILE: &str = "tansu.log";

/// Errors of the local broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "broker program `{BINARY}` not found (looked in {}); run scripts/setup.sh",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinary { searched: Vec<PathBuf> },
    #[error(
        "broker storage path {path} must be relative to the broker's work folder and stay inside it"
    )]
    StoragePath { path: PathBuf },
    #[error("broker work folder {path}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("a broker (pid {pid}) is already running in {work_dir}")]
    AlreadyRunning { pid: u32, work_dir: PathBuf },
    #[error("the broker exited while starting; its log {log_file} ends with:\n{log_tail}")]
    ExitedEarly { log_file: PathBuf, log_tail: String },
    #[error(
        "the broker on 127.0.0.1:{port} did not answer a metadata request within {waited:?}; its log {log_file} ends with:\n{log_tail}"
    )]
    NotReady {
        port: u16,
        waited: Duration,
        log_file: PathBuf,
        log_tail: String,
    },
    #[error("Kafka client for {bootstrap}")]
    Client {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("cannot create topic `{topic}`: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// Where the broker keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory: everything is gone when the broker stops.
    Memory,
    /// A SQLite file at this path relative to the broker's work folder (tansu resolves the
    /// storage URL against its working directory, so an absolute path would be doubled).
    Sqlite(PathBuf),
}

impl Storage {
    /// The `--storage-engine` URL tansu expects.
    fn engine_url(&self) -> Result<String, BrokerError> {
        match self {
            Storage::Memory => Ok("memory://tansu/".to_string()),
            Storage::Sqlite(path) => {
                let refused = || BrokerError::StoragePath { path: path.clone() };
                let mut parts = Vec::new();
                for component in path.components() {
                    match component {
                        Component::CurDir => {}
                        Component::Normal(part) => {
                            let part = part
                                .to_str()
                                .filter(|p| !p.contains(['?', '#', '%']))
                                .ok_or_else(refused)?;
                            parts.push(part);
                        }
                        _ => return Err(refused()),
                    }
                }
                if parts.is_empty() {
                    return Err(refused());
                }
                // tansu joins `<host>` and `<path>` of the URL to its working directory; "." as
                // the host keeps single-file names working.
                Ok(format!("sqlite://./{}", parts.join("/")))
            }
        }
    }
}

/// How a broker is attached to the process that starts it and where it logs.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    pub spawn: SpawnOptions,
    /// Defaults to `<work_dir>/tansu.log`.
    pub log_file: Option<PathBuf>,
    /// How long to wait for the broker to answer a metadata request.
    pub ready_timeout: Duration,
}

impl Default for BrokerOptions {
    /// A broker that keeps running after dqetl exits, in its own session.
    fn default() -> Self {
        BrokerOptions {
            spawn: SpawnOptions {
                new_session: true,
                ..SpawnOptions::default()
            },
            log_file: None,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// A running tansu broker, known by its pid.
#[derive(Debug, Clone)]
pub struct Broker {
    pid: u32,
    port: u16,
    work_dir: PathBuf,
    log_file: PathBuf,
}

impl Broker {
    /// Starts a broker in `work_dir` on 127.0.0.1:`port` that keeps running after dqetl exits.
    /// Blocks until the broker answers a Kafka metadata request.
    pub fn start(work_dir: &Path, port: u16, storage: Storage) -> Result<Broker, BrokerError> {
        Self::start_with(work_dir, port, storage, &BrokerOptions::default())
    }

    /// [`Self::start`] with explicit options (e.g. a death signal for test brokers).
    pub fn start_with(
        work_dir: &Path,
        port: u16,
        storage: Storage,
        options: &BrokerOptions,
    ) -> Result<Broker, BrokerError> {
        let binary = find_binary()?;
        let engine = storage.engine_url()?;
        let work_dir = std::path::absolute(work_dir).map_err(|source| BrokerError::WorkDir {
            path: work_dir.to_path_buf(),
            source,
        })?;
        let work_dir_error = |source| BrokerError::WorkDir {
            path: work_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&work_dir).map_err(work_dir_error)?;
        if let Storage::Sqlite(path) = &storage
            && let Some(parent) = work_dir.join(path).parent()
        {
            std::fs::create_dir_all(parent).map_err(work_dir_error)?;
        }
        let pid_file = work_dir.join(PID_FILE);
        if let Some(pid) = process::read_pid_file(&pid_file)?
            && process::is_alive(pid)
        {
            return Err(BrokerError::AlreadyRunning { pid, work_dir });
        }
        let log_file = options
            .log_file
            .clone()
            .unwrap_or_else(|| work_dir.join(LOG_FILE));

        let listener = format!("tcp://127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command
            .current_dir(&work_dir)
            .arg("broker")
            .args([
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", &engine])
            .env(
                "RUST_LOG",
                std::env::var("DQETL_BROKER_LOG").unwrap_or_else(|_| "warn".to_string()),
            );
        // tansu also reads its settings from these variables; only the arguments above count.
        for var in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        let child = process::spawn_logged(command, &log_file, &options.spawn)?;
        let broker = Broker {
            pid: child.id(),
            port,
            work_dir,
            log_file,
        };
        let ready = process::write_pid_file(&pid_file, broker.pid)
            .map_err(BrokerError::from)
            .and_then(|()| broker.wait_ready(options.ready_timeout));
        if let Err(e) = ready {
            // A broker nobody can find or use must not keep running.
            let _ = broker.stop();
            return Err(e);
        }
        Ok(broker)
    }

    /// The broker recorded in `work_dir`'s pid file, if it is still running.
    pub fn from_pid_file(work_dir: &Path, port: u16) -> Result<Option<Broker>, BrokerError> {
        let pid_file = work_dir.join(PID_FILE);
        Ok(process::read_pid_file(&pid_file)?
            .filter(|pid| process::is_alive(*pid))
            .map(|pid| Broker {
                pid,
                port,
                work_dir: work_dir.to_path_buf(),
                log_file: work_dir.join(LOG_FILE),
            }))
    }

    /// Stops the broker: SIGTERM (tansu shuts down cleanly), SIGKILL after 10 s.
    pub fn stop(&self) -> Result<StopOutcome, BrokerError> {
        let outcome = process::stop_pid(self.pid, Signal::SIGTERM, Duration::from_secs(10))?;
        let pid_file = self.work_dir.join(PID_FILE);
        if process::read_pid_file(&pid_file).ok().flatten() == Some(self.pid) {
            let _ = std::fs::remove_file(&pid_file);
        }
        Ok(outcome)
    }

    /// The Kafka bootstrap address, `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Waits until the port accepts connections and a metadata request lists a broker.
    fn wait_ready(&self, timeout: Duration) -> Result<(), BrokerError> {
        let deadline = Instant::now() + timeout;
        let exited = || BrokerError::ExitedEarly {
            log_file: self.log_file.clone(),
            log_tail: process::log_tail(&self.log_file, 20),
        };
        let not_ready = || BrokerError::NotReady {
            port: self.port,
            waited: timeout,
            log_file: self.log_file.clone(),
            log_tail: process::log_tail(&self.log_file, 20),
        };
        while !ports::accepts_connections(self.port) {
            if !process::is_alive(self.pid) {
                return Err(exited());
            }
            if Instant::now() >= deadline {
                return Err(not_ready());
            }
            thread::sleep(Duration::from_millis(25));
        }
        let consumer: BaseConsumer =
            client_config(&self.bootstrap())
                .create()
                .map_err(|source| BrokerError::Client {
                    bootstrap: self.bootstrap(),
                    source,
                })?;
        loop {
            let answered = consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| !m.brokers().is_empty());
            if answered {
                return Ok(());
            }
            if !process::is_alive(self.pid) {
                return Err(exited());
            }
            if Instant::now() >= deadline {
                return Err(not_ready());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Creates topics with the given partition counts (replication 1). Topics that already exist
/// are left as they are.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> Result<(), BrokerError> {
    let outcomes = crate::stream::create_topics(&client_config(bootstrap), topics, 1)
        .await
        .map_err(|source| BrokerError::Client {
            bootstrap: bootstrap.to_string(),
            source,
        })?;
    match outcomes
        .into_iter()
        .find_map(|(topic, outcome)| match outcome {
            TopicOutcome::Failed(code) => Some((topic, code)),
            TopicOutcome::Created | TopicOutcome::AlreadyThere => None,
        }) {
        Some((topic, code)) => Err(BrokerError::CreateTopic { topic, code }),
        None => Ok(()),
    }
}

/// The shared client settings, with a shorter socket timeout: the local broker answers at once
/// or not at all.
fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = crate::stream::client_config(&KafkaConnection {
        bootstrap_servers: bootstrap.to_string(),
        ..KafkaConnection::default()
    });
    config.set("socket.timeout.ms", "10000");
    config
}

/// Finds tansu: `$DQETL_TANSU`, then `PATH`, then cargo's bin folder (where setup installs it).
pub fn find_binary() -> Result<PathBuf, BrokerError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("DQETL_TANSU") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(BINARY)));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin").join(BINARY));
    }
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or(BrokerError::MissingBinary {
            searched: dedup_dirs(candidates),
        })
}

/// The folders searched, for the error message (the file name is the same everywhere).
fn dedup_dirs(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        let dir = if path.file_name() == Some(&OsString::from(BINARY)) {
            path.parent().map(Path::to_path_buf).unwrap_or(path)
        } else {
            path
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_storage_is_a_url_relative_to_the_work_folder() {
        assert_eq!(
            Storage::Memory.engine_url().expect("memory"),
            "memory://tansu/"
        );
        let nested = Storage::Sqlite(PathBuf::from("data/broker.db"));
        assert_eq!(
            nested.engine_url().expect("relative"),
            "sqlite://./data/broker.db"
        );
        let single = Storage::Sqlite(PathBuf::from("broker.db"));
        assert_eq!(
            single.engine_url().expect("relative"),
            "sqlite://./broker.db"
        );
        let dotted = Storage::Sqlite(PathBuf::from("./broker.db"));
        assert_eq!(
            dotted.engine_url().expect("relative"),
            "sqlite://./broker.db"
        );
    }

    #[test]
    fn sqlite_storage_outside_the_work_folder_is_refused() {
        for bad in [
            "/var/lib/broker.db",
            "../broker.db",
            "a/../../b.db",
            "",
            ".",
            "x?.db",
        ] {
            let err = Storage::Sqlite(PathBuf::from(bad))
                .engine_url()
                .expect_err(bad);
            assert!(
                matches!(err, BrokerError::StoragePath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_broker_program_names_itself_and_the_setup_script() {
        let err = BrokerError::MissingBinary {
            searched: vec![PathBuf::from("/usr/bin")],
        };
        let text = err.to_string();
        assert!(
            text.contains("`tansu`")
                && text.contains("scripts/setup.sh")
                && text.contains("/usr/bin"),
            "{text}"
        );
    }
}
