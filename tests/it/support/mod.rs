//! replaced on integration: the shared test harness (a private PostgreSQL cluster for the test
//! binary). This stand-in offers the same API: `postgres()` → `.port()`, `.url(db)`,
//! `.fresh_database(prefix)`.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct TestPostgres {
    port: u16,
}

static POSTGRES: OnceLock<TestPostgres> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test binary, started on first use; it stops when the binary exits.
pub fn postgres() -> &'static TestPostgres {
    POSTGRES
        .get_or_init(|| start().unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}")))
}

impl TestPostgres {
    #[allow(dead_code)] // part of the harness API
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; returns its connection URL.
    pub async fn fresh_database(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to the test cluster: {e}"));
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        drop(client);
        let _ = task.await;
        self.url(&name)
    }
}

fn bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .ok_or_else(|| "no PostgreSQL server binaries under /usr/lib/postgresql".into())
}

fn ids(user: &str) -> Result<(u32, u32), String> {
    let out = |flag: &str| -> Result<u32, String> {
        let o = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("no user {user}"))
    };
    Ok((out("-u")?, out("-g")?))
}

fn start() -> Result<TestPostgres, String> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!("dqetl-it-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // /proc/self belongs to the process's effective user.
    let me = std::fs::metadata("/proc/self").map_err(|e| e.to_string())?;
    let as_root = me.uid() == 0;
    let (uid, gid) = if as_root {
        ids("postgres")?
    } else {
        (me.uid(), me.gid())
    };
    if as_root {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
    }
    let data = dir.join("data");
    let init = Command::new(bin.join("initdb"))
        .args([
            "-D",
            &data.to_string_lossy(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ])
        .uid(uid)
        .gid(gid)
        .output()
        .map_err(|e| e.to_string())?;
    if !init.status.success() {
        return Err(format!("initdb: {}", String::from_utf8_lossy(&init.stderr)));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .args([
            "-D",
            &data.to_string_lossy(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.to_string_lossy(),
        ])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ])
        .args(["-c", "wal_level=logical", "-c", "max_connections=200"])
        .uid(uid)
        .gid(gid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only an async-signal-safe prctl call between fork and exec.
    unsafe {
        postgres.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    // The parent-death signal follows the spawning thread, so spawn from one that lives as long
    // as the test binary.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(postgres.spawn().map(|c| c.id()).map_err(|e| e.to_string()));
        loop {
            std::thread::park();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("PostgreSQL did not accept connections within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Accepting TCP is not yet accepting sessions; wait until the startup has finished.
    let ready = Command::new(bin.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "30"])
        .stdout(std::process::Stdio::null())
        .status();
    if !ready.is_ok_and(|s| s.success()) {
        return Err("pg_isready failed".into());
    }
    Ok(TestPostgres { port })
}
