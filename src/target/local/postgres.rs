//! A private PostgreSQL cluster on 127.0.0.1, run from the system's server binaries.
//!
//! The cluster accepts password-less (`trust`) connections, which is safe only because it
//! listens on the loopback address and on a socket inside its own data folder. PostgreSQL
//! refuses to run as root, so when dqetl runs as root every server program runs as the
//! `postgres` system user, and the data folder belongs to that user.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::{self, ProcessError, SpawnOptions, StopOutcome, UserIds};

/// The system user that runs PostgreSQL when dqetl runs as root.
pub const SERVICE_USER: &str = "postgres";
/// The superuser role created by `initdb`.
pub const SUPERUSER: &str = "postgres";
/// Longest unix socket path Linux accepts (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Marker of a data folder that `initdb` has completed.
const VERSION_FILE: &str = "PG_VERSION";
/// dqetl's settings, included from `postgresql.conf`.
const SETTINGS_FILE: &str = "dqetl.conf";

/// Errors of the local PostgreSQL cluster.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL server program `{binary}` not found (looked in {}); run scripts/setup.sh",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinary {
        binary: &'static str,
        searched: Vec<PathBuf>,
    },
    #[error("PostgreSQL data folder {path}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the `{user}` user cannot enter {dir}, a parent of the PostgreSQL data folder; \
         allow it (e.g. `chmod o+x {dir}`) or choose a data folder elsewhere"
    )]
    NotTraversable { dir: PathBuf, user: &'static str },
    #[error(
        "the socket path {path} is {len} bytes, longer than the {MAX_SOCKET_PATH} Linux allows; use a shorter data folder path"
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "PostgreSQL in {data_dir} did not accept connections within {waited:?}; its log {log_file} ends with:\n{log_tail}"
    )]
    NotReady {
        data_dir: PathBuf,
        log_file: PathBuf,
        waited: Duration,
        log_tail: String,
    },
    #[error(
        "PostgreSQL in {data_dir} exited while starting; its log {log_file} ends with:\n{log_tail}"
    )]
    ExitedEarly {
        data_dir: PathBuf,
        log_file: PathBuf,
        log_tail: String,
    },
    #[error(
        "`{name}` is not a plain database name (letters, digits and `_`, at most 63 bytes, not starting with a digit)"
    )]
    InvalidDatabaseName { name: String },
    #[error("cannot connect to PostgreSQL at {url}")]
    Connect {
        url: String,
        #[source]
        source: crate::pg::PgError,
    },
    #[error("cannot create database `{name}`")]
    CreateDatabase {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// Whether the cluster may trade crash safety for speed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Normal PostgreSQL durability.
    #[default]
    Durable,
    /// `fsync`, `synchronous_commit` and `full_page_writes` off: a machine crash can corrupt
    /// the cluster. For throwaway test clusters only.
    UnsafeForTestsOnly,
}

/// What [`PostgresCluster::init`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

/// What [`PostgresCluster::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    AlreadyRunning,
}

/// What [`PostgresCluster::create_database`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    AlreadyExists,
}

/// A PostgreSQL cluster in a data folder, served on 127.0.0.1:`port`.
#[derive(Debug, Clone)]
pub struct PostgresCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    log_file: PathBuf,
    run_as: Option<UserIds>,
    durability: Durability,
}

impl PostgresCluster {
    /// Describes the cluster in `data_dir` (which need not exist yet) on `port`. Finds the
    /// server programs; the log goes to `<data_dir>.log` unless [`Self::with_log_file`] says
    /// otherwise.
    pub fn new(data_dir: impl AsRef<Path>, port: u16) -> Result<Self, PostgresError> {
        let data_dir =
            std::path::absolute(data_dir.as_ref()).map_err(|source| PostgresError::DataDir {
                path: data_dir.as_ref().to_path_buf(),
                source,
            })?;
        let bin_dir = find_bin_dir()?;
        let run_as = if process::running_as_root() {
            Some(process::lookup_user(SERVICE_USER)?)
        } else {
            None
        };
        let mut log_name = data_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "postgres".into());
        log_name.push(".log");
        let log_file = data_dir.with_file_name(log_name);
        Ok(PostgresCluster {
            bin_dir,
            data_dir,
            port,
            log_file,
            run_as,
            durability: Durability::Durable,
        })
    }

    /// Sends the server log to `path` instead.
    pub fn with_log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = path.into();
        self
    }

    /// Sets the durability written into the configuration by [`Self::init`].
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Connection URL of database `db` (a plain name, see [`Self::create_database`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates the cluster with `initdb` and writes dqetl's settings. A no-op when the data
    /// folder already holds a cluster.
    pub fn init(&self) -> Result<InitOutcome, PostgresError> {
        if self.data_dir.join(VERSION_FILE).exists() {
            return Ok(InitOutcome::AlreadyInitialized);
        }
        let socket = self.data_dir.join(format!(".s.PGSQL.{}", self.port));
        let socket_len = socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(PostgresError::SocketPathTooLong {
                path: socket,
                len: socket_len,
            });
        }
        self.prepare_data_dir()?;

        let mut initdb = self.command("initdb");
        // initdb removes what it wrote when signalled; without this it would run on (and leave
        // a half-made cluster) after an interrupted dqetl. The calling thread waits for it, so
        // it does not outlive the signal's trigger.
        process::prepare(
            &mut initdb,
            &SpawnOptions {
                die_with_parent: Some(Signal::SIGTERM),
                ..SpawnOptions::default()
            },
        );
        initdb
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args([
                "--username",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=trust",
            ])
            .args(["--encoding=UTF8", "--locale=C"]);
        if self.durability == Durability::UnsafeForTestsOnly {
            initdb.arg("--no-sync");
        }
        run(initdb, "initdb")?;

        self.write_owned(&self.data_dir.join(SETTINGS_FILE), &self.settings())?;
        let main_conf = self.data_dir.join("postgresql.conf");
        let mut conf = fs::read_to_string(&main_conf).map_err(|e| self.data_dir_error(e))?;
        conf.push_str(&format!("\n# dqetl's settings (listen address, port, logical replication)\ninclude '{SETTINGS_FILE}'\n"));
        self.write_owned(&main_conf, &conf)?;
        Ok(InitOutcome::Created)
    }

    /// Starts the server in the background (`pg_ctl start`), waiting until it accepts
    /// connections. The server keeps running after dqetl exits.
    pub fn start(&self) -> Result<StartOutcome, PostgresError> {
        if self.is_running()? {
            return Ok(StartOutcome::AlreadyRunning);
        }
        self.prepare_log_file()?;
        let mut pg_ctl = self.command("pg_ctl");
        // Its own session: a Ctrl-C in the terminal that ran dqetl must not reach the server.
        process::prepare(
            &mut pg_ctl,
            &SpawnOptions {
                new_session: true,
                ..SpawnOptions::default()
            },
        );
        pg_ctl
            .arg("start")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_file)
            .args(["--wait", "--timeout=60", "--silent"]);
        run(pg_ctl, "pg_ctl start").map_err(|e| match e {
            PostgresError::CommandFailed {
                command,
                status,
                stderr,
            } => PostgresError::CommandFailed {
                command,
                status,
                stderr: format!(
                    "{stderr}\nserver log {}:\n{}",
                    self.log_file.display(),
                    process::log_tail(&self.log_file, 20)
                ),
            },
            other => other,
        })?;
        Ok(StartOutcome::Started)
    }

    /// Runs the server as a child of the calling thread (not through `pg_ctl`), with `options`
    /// (e.g. a death signal so it ends with its parent), and waits until it accepts connections.
    /// Returns the postmaster's pid; stop it with [`Self::stop`] or by signalling that pid
    /// (SIGINT is PostgreSQL's fast shutdown).
    pub fn spawn_postmaster(
        &self,
        options: &SpawnOptions,
        timeout: Duration,
    ) -> Result<u32, PostgresError> {
        self.prepare_log_file()?;
        let mut postgres = Command::new(self.bin_dir.join("postgres"));
        postgres.arg("-D").arg(&self.data_dir);
        let options = SpawnOptions {
            run_as: self.run_as,
            ..options.clone()
        };
        let child = process::spawn_logged(postgres, &self.log_file, &options)?;
        let pid = child.id();
        let deadline = Instant::now() + timeout;
        while !self.is_ready() {
            if !process::is_alive(pid) {
                return Err(PostgresError::ExitedEarly {
                    data_dir: self.data_dir.clone(),
                    log_file: self.log_file.clone(),
                    log_tail: process::log_tail(&self.log_file, 20),
                });
            }
            if Instant::now() >= deadline {
                // A postmaster that never became ready is of no use; do not leave it behind.
                process::stop_pid(pid, Signal::SIGQUIT, Duration::from_secs(5))?;
                return Err(PostgresError::NotReady {
                    data_dir: self.data_dir.clone(),
                    log_file: self.log_file.clone(),
                    waited: timeout,
                    log_tail: process::log_tail(&self.log_file, 20),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(pid)
    }

    /// Stops the server with a fast shutdown (open sessions are ended, nothing is lost).
    pub fn stop(&self) -> Result<StopOutcome, PostgresError> {
        if !self.is_running()? {
            return Ok(StopOutcome::NotRunning);
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl
            .arg("stop")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .args(["--mode=fast", "--wait", "--timeout=60", "--silent"]);
        run(pg_ctl, "pg_ctl stop")?;
        Ok(StopOutcome::Exited)
    }

    /// True when a server is running on this data folder (`pg_ctl status`).
    pub fn is_running(&self) -> Result<bool, PostgresError> {
        if !self.data_dir.join(VERSION_FILE).exists() {
            return Ok(false);
        }
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("status").arg("--pgdata").arg(&self.data_dir);
        let output = pg_ctl.output().map_err(|source| ProcessError::Spawn {
            program: "pg_ctl".into(),
            source,
        })?;
        // Exit codes: 0 running, 3 not running, 4 no accessible data folder.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(3) => Ok(false),
            _ => Err(command_failed("pg_ctl status", &output)),
        }
    }

    /// True when the server accepts connections on its port (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        Command::new(self.bin_dir.join("pg_isready"))
            .args(["--host=127.0.0.1", "--quiet", "--timeout=2"])
            .arg(format!("--port={}", self.port))
            .args(["--username", SUPERUSER, "--dbname=postgres"])
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Creates database `name` (a plain identifier); an existing one is left as it is.
    pub async fn create_database(&self, name: &str) -> Result<CreateOutcome, PostgresError> {
        if !is_plain_identifier(name) {
            return Err(PostgresError::InvalidDatabaseName {
                name: name.to_string(),
            });
        }
        let url = self.url("postgres");
        let (client, connection) =
            crate::pg::connect_url(&url)
                .await
                .map_err(|source| PostgresError::Connect {
                    url: url.clone(),
                    source,
                })?;
        let connection = tokio::spawn(connection);
        // The name was checked to be a plain identifier, so quoting it is enough.
        let result = client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await;
        drop(client);
        let _ = connection.await;
        match result {
            Ok(()) => Ok(CreateOutcome::Created),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(CreateOutcome::AlreadyExists)
            }
            Err(source) => Err(PostgresError::CreateDatabase {
                name: name.to_string(),
                source,
            }),
        }
    }

    fn settings(&self) -> String {
        let mut settings = format!(
            "# Written by dqetl. Loopback only: the cluster trusts every local connection.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             wal_level = logical\n\
             max_replication_slots = 10\n\
             max_wal_senders = 10\n",
            port = self.port,
            socket_dir = self.data_dir.display().to_string().replace('\'', "''"),
        );
        if self.durability == Durability::UnsafeForTestsOnly {
            settings.push_str(
                "# Throwaway test cluster: speed over crash safety.\n\
                 fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n",
            );
        }
        settings
    }

    /// A command for server program `name`, run as the service user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(name));
        if let Some(ids) = self.run_as {
            process::prepare(
                &mut command,
                &SpawnOptions {
                    run_as: Some(ids),
                    ..SpawnOptions::default()
                },
            );
        }
        // Server programs must not pick up a caller's connection settings.
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
            command.env_remove(var);
        }
        command
    }

    fn prepare_data_dir(&self) -> Result<(), PostgresError> {
        fs::create_dir_all(&self.data_dir).map_err(|e| self.data_dir_error(e))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| self.data_dir_error(e))?;
        if let Some(ids) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(ids.uid), Some(ids.gid))
                .map_err(|e| self.data_dir_error(e))?;
            if let Some(parent) = self.data_dir.parent() {
                check_traversable(parent, ids)?;
            }
        }
        Ok(())
    }

    /// The server writes its log itself, as the service user: create the file for it.
    fn prepare_log_file(&self) -> Result<(), PostgresError> {
        let log = process::open_log(&self.log_file)?;
        if let Some(ids) = self.run_as {
            std::os::unix::fs::fchown(&log, Some(ids.uid), Some(ids.gid)).map_err(|source| {
                ProcessError::LogFile {
                    path: self.log_file.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn write_owned(&self, path: &Path, content: &str) -> Result<(), PostgresError> {
        fs::write(path, content).map_err(|e| self.data_dir_error(e))?;
        if let Some(ids) = self.run_as {
            std::os::unix::fs::chown(path, Some(ids.uid), Some(ids.gid))
                .map_err(|e| self.data_dir_error(e))?;
        }
        Ok(())
    }

    fn data_dir_error(&self, source: io::Error) -> PostgresError {
        PostgresError::DataDir {
            path: self.data_dir.clone(),
            source,
        }
    }
}

/// Finds the folder with `initdb`, `pg_ctl` and `postgres`: `$DQETL_PG_BIN`, then
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf, PostgresError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("DQETL_PG_BIN") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        candidates.push(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry.file_name().to_str()?.parse::<u32>().ok()?,
                entry.path().join("bin"),
            ))
        })
        .collect();
    versions.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versions.into_iter().map(|(_, dir)| dir));

    const NEEDED: [&str; 4] = ["initdb", "pg_ctl", "postgres", "pg_isready"];
    if let Some(dir) = candidates
        .iter()
        .find(|dir| NEEDED.iter().all(|b| dir.join(b).is_file()))
    {
        return Ok(dir.clone());
    }
    let missing = NEEDED
        .iter()
        .find(|b| !candidates.iter().any(|dir| dir.join(b).is_file()))
        .copied()
        .unwrap_or("initdb");
    Err(PostgresError::MissingBinary {
        binary: missing,
        searched: candidates,
    })
}

/// Fails with a clear message when `user` cannot enter `dir` or one of its parents.
fn check_traversable(dir: &Path, user: UserIds) -> Result<(), PostgresError> {
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor).map_err(|source| PostgresError::DataDir {
            path: ancestor.to_path_buf(),
            source,
        })?;
        let mode = meta.mode();
        let may_enter = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !may_enter {
            return Err(PostgresError::NotTraversable {
                dir: ancestor.to_path_buf(),
                user: SERVICE_USER,
            });
        }
    }
    Ok(())
}

fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn run(mut command: Command, label: &str) -> Result<Output, PostgresError> {
    let output = command.output().map_err(|source| ProcessError::Spawn {
        program: label.to_string(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(command_failed(label, &output))
    }
}

fn command_failed(label: &str, output: &Output) -> PostgresError {
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    PostgresError::CommandFailed {
        command: label.to_string(),
        status: output.status.to_string(),
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_must_be_plain_identifiers() {
        assert!(is_plain_identifier("orders_2024"));
        assert!(is_plain_identifier("_x"));
        assert!(!is_plain_identifier(""));
        assert!(!is_plain_identifier("9lives"));
        assert!(!is_plain_identifier("a\"; DROP DATABASE x; --"));
        assert!(!is_plain_identifier(&"a".repeat(64)));
    }

    #[test]
    fn the_url_points_at_the_loopback_port_as_the_superuser() {
        let cluster = PostgresCluster {
            bin_dir: PathBuf::from("/bin"),
            data_dir: PathBuf::from("/x/pg"),
            port: 5499,
            log_file: PathBuf::from("/x/pg.log"),
            run_as: None,
            durability: Durability::Durable,
        };
        assert_eq!(
            cluster.url("orders"),
            "postgres://postgres@127.0.0.1:5499/orders"
        );
        let settings = cluster.settings();
        assert!(
            settings.contains("listen_addresses = '127.0.0.1'"),
            "{settings}"
        );
        assert!(settings.contains("wal_level = logical"), "{settings}");
        assert!(
            !settings.contains("fsync"),
            "durable clusters keep fsync: {settings}"
        );
        let fast = PostgresCluster {
            durability: Durability::UnsafeForTestsOnly,
            ..cluster
        };
        assert!(fast.settings().contains("fsync = off"));
    }
}
