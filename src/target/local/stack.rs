//! A local stack on disk: everything under `<cwd>/.dqetl/<stack>/`, and `state.json`, the record
//! of which ports the services listen on and which processes dqetl started.
//!
//! ```text
//! .dqetl/<stack>/
//!   state.json     ports, data folder, pids (no secrets: the cluster trusts loopback)
//!   pg/            the PostgreSQL cluster
//!   broker/        tansu's work folder (SQLite storage `tansu.db`, pid file)
//!   lake/          Delta tables
//!   logs/          postgres.log, tansu.log, capture.log, process.log, generator.log
//!   pids/          capture.pid, process.pid, generator.pid
//!   capture/       capture's own state (snapshot marker)
//!   summaries/     the generator's summary of every run, as JSON
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The folder under the working directory that holds every local stack.
pub const STATE_ROOT: &str = ".dqetl";
/// The source database every local stack creates.
pub const DATABASE: &str = "dqetl";
/// tansu's storage file, relative to the broker's work folder.
pub const BROKER_STORAGE: &str = "tansu.db";
/// Longest stack name: it becomes a folder, a replication slot and a consumer group name.
const MAX_STACK_NAME: usize = 40;

/// Errors of the stack folder and its state file.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(
        "stack name `{name}` is not usable: use 1 to {MAX_STACK_NAME} letters, digits, `-` or `_`, starting with a letter"
    )]
    InvalidName { name: String },
    #[error("cannot read the working directory")]
    WorkingDir(#[source] io::Error),
    #[error("cannot create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a dqetl state file (delete the stack with `dqetl teardown --force`)")]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks that `name` can name a stack: a folder, a replication slot and a consumer group.
pub fn check_stack_name(name: &str) -> Result<(), StackError> {
    let usable = !name.is_empty()
        && name.len() <= MAX_STACK_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if usable {
        Ok(())
    } else {
        Err(StackError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// The logical replication slot of a stack's capture: `dqetl_<stack>`, lower case, with `-`
/// turned into `_` (slot names allow only lower-case letters, digits and `_`).
pub fn slot_name(stack: &str) -> String {
    let clean: String = stack
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("dqetl_{clean}")
}

/// The processor's default consumer group: `dqetl-<stack>`.
pub fn default_consumer_group(stack: &str) -> String {
    format!("dqetl-{stack}")
}

/// The processor's consumer group: the config's `kafka.consumer_group`, else the default.
pub fn consumer_group(configured: Option<&str>, stack: &str) -> String {
    configured
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| default_consumer_group(stack))
}

/// The background processes dqetl starts for a stack, by the name of their pid and log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    Capture,
    Process,
    Generator,
}

impl Worker {
    pub const ALL: [Worker; 3] = [Worker::Capture, Worker::Process, Worker::Generator];

    pub fn name(self) -> &'static str {
        match self {
            Worker::Capture => "capture",
            Worker::Process => "process",
            Worker::Generator => "generator",
        }
    }
}

/// The folder of one local stack and the paths inside it. All paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackDir {
    stack: String,
    root: PathBuf,
}

impl StackDir {
    /// `<cwd>/.dqetl/<stack>/`. The name is not checked here; commands call
    /// [`check_stack_name`] first. Falls back to a relative path if the working directory
    /// cannot be read (the first file operation then reports the problem).
    pub fn for_stack(stack: &str) -> StackDir {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        StackDir::under(&base, stack)
    }

    /// `<base>/.dqetl/<stack>/`.
    pub fn under(base: &Path, stack: &str) -> StackDir {
        StackDir {
            stack: stack.to_string(),
            root: base.join(STATE_ROOT).join(stack),
        }
    }

    pub fn stack(&self) -> &str {
        &self.stack
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `.dqetl/`, the parent of every stack folder.
    pub fn state_root(&self) -> Option<&Path> {
        self.root.parent()
    }

    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }

    pub fn broker_dir(&self) -> PathBuf {
        self.root.join("broker")
    }

    pub fn lake_dir(&self) -> PathBuf {
        self.root.join("lake")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn pids_dir(&self) -> PathBuf {
        self.root.join("pids")
    }

    pub fn capture_dir(&self) -> PathBuf {
        self.root.join("capture")
    }

    pub fn summaries_dir(&self) -> PathBuf {
        self.root.join("summaries")
    }

    pub fn postgres_log(&self) -> PathBuf {
        self.logs_dir().join("postgres.log")
    }

    pub fn broker_log(&self) -> PathBuf {
        self.logs_dir().join("tansu.log")
    }

    pub fn worker_log(&self, worker: Worker) -> PathBuf {
        self.logs_dir().join(format!("{}.log", worker.name()))
    }

    pub fn worker_pid_file(&self, worker: Worker) -> PathBuf {
        self.pids_dir().join(format!("{}.pid", worker.name()))
    }

    /// Creates the stack folder and every folder in it (existing ones are kept).
    pub fn create_dirs(&self) -> Result<(), StackError> {
        for dir in [
            self.root.clone(),
            self.broker_dir(),
            self.lake_dir(),
            self.logs_dir(),
            self.pids_dir(),
            self.capture_dir(),
            self.summaries_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(|source| StackError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The PostgreSQL cluster of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresState {
    pub port: u16,
    pub data_dir: PathBuf,
    pub database: String,
}

/// The broker of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerState {
    pub port: u16,
}

/// Pids of the background processes dqetl started (None: not started, or stopped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPids {
    #[serde(default)]
    pub capture: Option<u32>,
    #[serde(default)]
    pub process: Option<u32>,
    #[serde(default)]
    pub generator: Option<u32>,
}

impl ProcessPids {
    pub fn get(&self, worker: Worker) -> Option<u32> {
        match worker {
            Worker::Capture => self.capture,
            Worker::Process => self.process,
            Worker::Generator => self.generator,
        }
    }

    pub fn set(&mut self, worker: Worker, pid: Option<u32>) {
        match worker {
            Worker::Capture => self.capture = pid,
            Worker::Process => self.process = pid,
            Worker::Generator => self.generator = pid,
        }
    }
}

/// `state.json`: what `deploy` set up and what it and `post-deploy` started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    pub stack: String,
    pub created_at: DateTime<Utc>,
    pub postgres: PostgresState,
    pub broker: BrokerState,
    #[serde(default)]
    pub processes: ProcessPids,
}

impl LocalState {
    /// The state of a stack; `Ok(None)` when it was never deployed (or was torn down).
    pub fn load(dir: &StackDir) -> Result<Option<LocalState>, StackError> {
        let path = dir.state_file();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StackError::ReadState { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StackError::ParseState { path, source })
    }

    /// Writes the state atomically: a reader sees the old or the new file, never a torn one.
    pub fn save(&self, dir: &StackDir) -> Result<(), StackError> {
        let path = dir.state_file();
        let err = |source| StackError::WriteState {
            path: path.clone(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        text.push('\n');
        let tmp = path.with_file_name(format!("state.json.tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(err)
    }

    /// Re-reads the state file and records `pid` for `worker` in it, so concurrent updates of
    /// other fields are not lost. A missing state file is left missing.
    pub fn record_worker(
        dir: &StackDir,
        worker: Worker,
        pid: Option<u32>,
    ) -> Result<(), StackError> {
        if let Some(mut state) = LocalState::load(dir)? {
            state.processes.set(worker, pid);
            state.save(dir)?;
        }
        Ok(())
    }
}

/// The URL of the stack's source database (no password: the cluster trusts loopback).
pub fn pg_url(state: &LocalState) -> String {
    format!(
        "postgres://{}@127.0.0.1:{}/{}",
        super::postgres::SUPERUSER,
        state.postgres.port,
        state.postgres.database
    )
}

/// The Kafka bootstrap address of the stack's broker.
pub fn bootstrap(state: &LocalState) -> String {
    format!("127.0.0.1:{}", state.broker.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &StackDir) -> LocalState {
        LocalState {
            stack: dir.stack().to_string(),
            created_at: DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .expect("timestamp")
                .with_timezone(&Utc),
            postgres: PostgresState {
                port: 54321,
                data_dir: dir.pg_dir(),
                database: DATABASE.to_string(),
            },
            broker: BrokerState { port: 19092 },
            processes: ProcessPids {
                capture: Some(101),
                process: None,
                generator: None,
            },
        }
    }

    #[test]
    fn state_round_trips_through_the_file_and_updates_keep_other_fields() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "demo");
        assert_eq!(LocalState::load(&dir).expect("missing is fine"), None);
        dir.create_dirs().expect("dirs");
        let state = sample(&dir);
        state.save(&dir).expect("save");
        assert_eq!(LocalState::load(&dir).expect("load"), Some(state.clone()));

        LocalState::record_worker(&dir, Worker::Process, Some(202)).expect("record");
        let updated = LocalState::load(&dir).expect("load").expect("present");
        assert_eq!(updated.processes.process, Some(202));
        assert_eq!(updated.processes.capture, Some(101));
        assert_eq!(updated.postgres, state.postgres);
        let leftovers: Vec<_> = fs::read_dir(dir.root())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn the_state_file_names_urls_and_paths_without_secrets() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "demo");
        let state = sample(&dir);
        assert_eq!(pg_url(&state), "postgres://postgres@127.0.0.1:54321/dqetl");
        assert_eq!(bootstrap(&state), "127.0.0.1:19092");
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(json["postgres"]["database"], "dqetl");
        assert_eq!(json["processes"]["capture"], 101);
        assert!(json["processes"]["generator"].is_null());
        assert_eq!(dir.root(), base.path().join(".dqetl").join("demo"));
        assert_eq!(
            dir.worker_pid_file(Worker::Capture),
            dir.root().join("pids/capture.pid")
        );
    }

    #[test]
    fn a_corrupt_state_file_is_named() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::under(base.path(), "demo");
        dir.create_dirs().expect("dirs");
        fs::write(dir.state_file(), "{not json").expect("write");
        let err = LocalState::load(&dir).expect_err("corrupt");
        assert!(err.to_string().contains("state.json"), "{err}");
    }

    #[test]
    fn stack_names_must_be_usable_as_folder_slot_and_group() {
        for good in ["dqetl", "demo-1", "ci_run_7", "A"] {
            assert!(check_stack_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "1abc",
            "with space",
            "-x",
            &"x".repeat(41),
        ] {
            let err = check_stack_name(bad).expect_err(bad);
            assert!(err.to_string().contains("not usable"), "{err}");
        }
        assert_eq!(slot_name("Demo-1"), "dqetl_demo_1");
        assert_eq!(default_consumer_group("demo-1"), "dqetl-demo-1");
    }
}
