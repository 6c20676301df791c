//! A second test cluster that, like RDS with `rds.force_ssl=1`, takes TCP connections over TLS
//! only. Its certificate (for `localhost` and `127.0.0.1`) is signed by a test CA made with
//! `openssl`; a second, unrelated CA stands for "the wrong root".

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use dqetl::target::local::ports::free_port;
use dqetl::target::local::postgres::find_bin_dir;
use dqetl::target::local::{Durability, PostgresCluster, SpawnOptions};
use nix::sys::signal::Signal;

use super::{error_chain, on_service_thread, register_for_exit, run_root};

/// The role that logs in with a password (SCRAM), as the jobs do on RDS; it owns database
/// [`TestTlsPostgres::APP_DATABASE`].
pub const APP_USER: &str = "dqetl_app";

pub struct TestTlsPostgres {
    cluster: PostgresCluster,
    ca_file: PathBuf,
    other_ca_file: PathBuf,
    app_password: String,
}

impl TestTlsPostgres {
    pub const APP_DATABASE: &str = "dqetl_app";

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The CA that signed the server certificate (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A CA that did not sign it (PEM).
    pub fn other_ca_file(&self) -> &Path {
        &self.other_ca_file
    }

    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>?<params>` (the superuser needs no password
    /// over TLS, and cannot log in without it).
    pub fn url(&self, db: &str, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?{params}",
            self.port()
        )
    }

    pub fn log_file(&self) -> &Path {
        self.cluster.log_file()
    }
}

/// The TLS-only cluster, started on first use.
pub fn tls_postgres() -> &'static TestTlsPostgres {
    static POSTGRES: OnceLock<TestTlsPostgres> = OnceLock::new();
    POSTGRES.get_or_init(|| {
        on_service_thread(start).unwrap_or_else(|e| panic!("test PostgreSQL with TLS: {e}"))
    })
}

fn start() -> Result<TestTlsPostgres, String> {
    let root = run_root()?.join("pg-tls");
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let cluster = PostgresCluster::new(root.join("data"), port)
        .map_err(|e| error_chain(&e))?
        .with_durability(Durability::UnsafeForTestsOnly)
        .with_log_file(root.join("postgres.log"));
    cluster.init().map_err(|e| error_chain(&e))?;

    make_certificates(&certs)?;
    let data = cluster.data_dir();
    let owner = std::fs::metadata(data).map_err(|e| format!("{}: {e}", data.display()))?;
    for name in ["server.crt", "server.key"] {
        let target = data.join(name);
        std::fs::copy(certs.join(name), &target).map_err(|e| format!("copy {name}: {e}"))?;
        // PostgreSQL refuses a key file that others can read.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {name}: {e}"))?;
        std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| format!("chown {name}: {e}"))?;
    }
    append(
        &data.join("postgresql.conf"),
        "\n# TLS, as on RDS\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    )?;
    // TCP over TLS only (rds.force_ssl=1); the unix socket stays open for setting up the role.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all postgres 127.0.0.1/32 trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .map_err(|e| format!("pg_hba.conf: {e}"))?;

    let options = SpawnOptions {
        die_with_parent: Some(Signal::SIGQUIT),
        ..SpawnOptions::default()
    };
    let pid = cluster
        .spawn_postmaster(&options, Duration::from_secs(60))
        .map_err(|e| error_chain(&e))?;
    register_for_exit(pid, Signal::SIGINT);

    let app_password = format!("pw-{:016x}", rand::random::<u64>());
    // The password goes through stdin: never an argument.
    psql(
        &cluster,
        &format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{app_password}';\n\
             CREATE DATABASE {db} OWNER {APP_USER};\n",
            db = TestTlsPostgres::APP_DATABASE
        ),
    )?;
    Ok(TestTlsPostgres {
        cluster,
        ca_file: certs.join("ca.pem"),
        other_ca_file: certs.join("other-ca.pem"),
        app_password,
    })
}

/// `ca.pem` (a CA), `server.crt`/`server.key` (signed by it, for localhost and 127.0.0.1) and
/// `other-ca.pem` (an unrelated CA).
fn make_certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [
        ("ca", "/CN=dqetl test CA"),
        ("other-ca", "/CN=dqetl other CA"),
    ] {
        openssl(
            dir,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    subject,
                ],
            ]
            .concat(),
        )?;
    }
    openssl(
        dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = DNS:localhost, IP:127.0.0.1\n",
    )
    .map_err(|e| format!("server.ext: {e}"))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    )
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run openssl (apt-get install openssl): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `sql` as the superuser over the unix socket.
fn psql(cluster: &PostgresCluster, sql: &str) -> Result<(), String> {
    use std::io::Write;
    let bin = find_bin_dir().map_err(|e| error_chain(&e))?;
    let mut child = Command::new(bin.join("psql"))
        .arg("--host")
        .arg(cluster.data_dir())
        .arg(format!("--port={}", cluster.port()))
        .args(["--username=postgres", "--dbname=postgres", "--quiet"])
        .args(["--set=ON_ERROR_STOP=1", "--file=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("psql has no stdin")?
        .write_all(sql.as_bytes())
        .map_err(|e| format!("psql stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("psql: {e}"))?;
    if !out.status.success() {
        return Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}
