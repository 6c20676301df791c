//! TLS to PostgreSQL against a cluster that, like RDS with `rds.force_ssl=1`, refuses plain TCP:
//! each sslmode does what libpq's does, and the aws jobs (`dqetl sql`, `dqetl generate-data`)
//! connect with nothing but the `DQETL_PG_*` variables ECS gives them.

use std::process::{Command, Output};

use dqetl::pg::{PgConfig, PgError, TlsSettings};

use crate::support::{self, APP_USER, TestTlsPostgres};

fn parse(conn: &str) -> PgConfig {
    PgConfig::parse(conn, "the test connection string", &TlsSettings::default())
        .unwrap_or_else(|e| panic!("{}", support::error_chain(&e)))
}

/// Whether the session `conn` opens is encrypted, as the server sees it.
async fn session_uses_tls(conn: &str) -> Result<bool, PgError> {
    let (client, connection) = parse(conn).connect().await?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("pg_stat_ssl: {e}"));
    Ok(row.get(0))
}

fn root(path: &std::path::Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn require_and_prefer_connect_over_tls() {
    let pg = support::tls_postgres();
    for mode in ["require", "prefer"] {
        let url = pg.url("postgres", &format!("sslmode={mode}"));
        let tls = session_uses_tls(&url)
            .await
            .unwrap_or_else(|e| panic!("sslmode={mode}: {}", support::error_chain(&e)));
        assert!(tls, "sslmode={mode} connected without TLS");
    }
}

#[tokio::test]
async fn disable_is_refused_by_a_server_that_insists_on_tls() {
    let pg = support::tls_postgres();
    let err = session_uses_tls(&pg.url("postgres", "sslmode=disable"))
        .await
        .expect_err("a plain connection was accepted");
    let chain = support::error_chain(&err);
    assert!(
        matches!(err, PgError::Connect { .. }),
        "not a refused connection: {chain}"
    );
    assert!(chain.contains("sslmode=disable"), "{chain}");
    assert!(chain.contains("no encryption"), "{chain}");
}

#[tokio::test]
async fn verify_full_connects_with_the_signing_ca_and_a_matching_host() {
    let pg = support::tls_postgres();
    let ca = root(pg.ca_file());
    let by_address = pg.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let by_name = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert='{ca}'",
        pg.port()
    );
    for conn in [by_address, by_name] {
        let tls = session_uses_tls(&conn)
            .await
            .unwrap_or_else(|e| panic!("{conn}: {}", support::error_chain(&e)));
        assert!(tls);
    }
}

#[tokio::test]
async fn verify_full_without_the_right_root_says_the_certificate_could_not_be_verified() {
    let pg = support::tls_postgres();
    let other = root(pg.other_ca_file());
    let wrong_root = pg.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={other}"),
    );
    // No sslrootcert: the webpki and system roots, which do not know the test CA.
    let default_roots = pg.url("postgres", "sslmode=verify-full");
    for conn in [wrong_root, default_roots] {
        let err = session_uses_tls(&conn)
            .await
            .expect_err("an unknown CA was trusted");
        let chain = support::error_chain(&err);
        assert!(
            matches!(err, PgError::CertificateNotVerified { .. }),
            "{conn}: {chain}"
        );
        assert!(chain.contains("could not be verified"), "{chain}");
        assert!(chain.contains("sslmode=verify-full"), "{chain}");
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let pg = support::tls_postgres();
    let ca = root(pg.ca_file());
    // The name the certificate does not list, at the address where the server is.
    let conn = |mode: &str, root: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres sslmode={mode} sslrootcert='{root}'",
            pg.port()
        )
    };
    let err = session_uses_tls(&conn("verify-full", &ca))
        .await
        .expect_err("a certificate for another name was accepted");
    assert!(
        matches!(err, PgError::CertificateNotVerified { .. }),
        "{}",
        support::error_chain(&err)
    );
    assert!(
        session_uses_tls(&conn("verify-ca", &ca))
            .await
            .is_ok_and(|tls| tls)
    );
    // verify-ca still verifies the chain.
    let other = root(pg.other_ca_file());
    let err = session_uses_tls(&conn("verify-ca", &other))
        .await
        .expect_err("verify-ca trusted an unknown CA");
    assert!(matches!(err, PgError::CertificateNotVerified { .. }));
}

#[tokio::test]
async fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
    let pg = support::tls_postgres();
    let with = |ca: &std::path::Path| {
        pg.url(
            "postgres",
            &format!("sslmode=require&sslrootcert={}", root(ca)),
        )
    };
    assert!(
        session_uses_tls(&with(pg.ca_file()))
            .await
            .is_ok_and(|tls| tls)
    );
    let err = session_uses_tls(&with(pg.other_ca_file()))
        .await
        .expect_err("require with a root certificate trusted an unknown CA");
    assert!(matches!(err, PgError::CertificateNotVerified { .. }));
}

/// `dqetl <args>` with the environment the jobs task definition gives on aws: the database as
/// parts, the user and password as ECS injects them from Secrets Manager, and
/// DQETL_PG_SSLMODE=require.
fn job(pg: &TestTlsPostgres, sslmode: &str, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dqetl"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--config", "config/tables.yaml"])
        .args(args)
        .env_remove("DQETL_PG_URL")
        .env_remove("DQETL_PG_SSLROOTCERT")
        .env_remove("PGPASSWORD")
        .env("DQETL_PG_HOST", "127.0.0.1")
        .env("DQETL_PG_PORT", pg.port().to_string())
        .env("DQETL_PG_DATABASE", TestTlsPostgres::APP_DATABASE)
        .env("DQETL_PG_USER", APP_USER)
        .env("DQETL_PG_PASSWORD", pg.app_password())
        .env("DQETL_PG_SSLMODE", sslmode)
        // Everything the libraries would log, to search it for the password.
        .env("RUST_LOG", "debug");
    command.output().expect("dqetl runs")
}

fn assert_no_password(pg: &TestTlsPostgres, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(pg.app_password()),
            "the password appears in {stream}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_jobs_write_to_a_tls_only_database_from_the_dqetl_pg_variables() {
    let pg = support::tls_postgres();

    // Plain TCP is refused, and the error says so without the password.
    let refused = job(pg, "disable", &["sql", "--ddl"]);
    assert_no_password(pg, &refused);
    assert!(!refused.status.success(), "a plain connection was accepted");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("sslmode=disable"), "{stderr}");

    // The password is checked (SCRAM) and TCP is TLS only, so success proves both.
    let tables = job(pg, "require", &["sql", "--ddl"]);
    assert_no_password(pg, &tables);
    assert!(
        tables.status.success(),
        "dqetl sql: {}",
        String::from_utf8_lossy(&tables.stderr)
    );
    let data = job(
        pg,
        "require",
        &["generate-data", "--duration", "0s", "--seed", "7"],
    );
    assert_no_password(pg, &data);
    assert!(
        data.status.success(),
        "dqetl generate-data: {}",
        String::from_utf8_lossy(&data.stderr)
    );

    let url = pg.url(TestTlsPostgres::APP_DATABASE, "sslmode=require");
    let (client, connection) = parse(&url).connect().await.expect("connect");
    tokio::spawn(connection);
    // `--duration 0s` writes the sample rows only: the reference tables.
    for table in ["vehicles", "drivers"] {
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"))
            .get(0);
        assert!(rows > 0, "generate-data wrote no row into {table}");
    }
}
