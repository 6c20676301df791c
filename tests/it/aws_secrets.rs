//! No plaintext secret reaches a file, an argument list, a log or the output: the dqetl binary runs
//! deploy, post-deploy, status, query and teardown against moto under strace (every exec'd argv and
//! every file opened for writing is recorded), with debug logging on; then a known secret seeded in
//! Secrets Manager and the ECR registry password are searched for everywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::aws_support::{ECR_PASSWORD, Moto, Registry, create_dms, fixture, seed_base_image};

const STRACE: &str = "/usr/bin/strace";

struct Run {
    args: Vec<String>,
    stdout: String,
    stderr: String,
    trace: String,
}

/// Runs the dqetl binary under strace with an isolated HOME, TMPDIR and working directory.
fn run_dqetl(work: &Path, env: &[(String, String)], args: &[&str]) -> Run {
    let trace_file = work.join(format!("trace-{}.txt", args[0]));
    let mut cmd = Command::new(STRACE);
    cmd.args([
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-s",
        "65535",
        "-e",
        "trace=execve,execveat,open,openat,creat,rename,renameat,renameat2",
    ])
    .arg("-o")
    .arg(&trace_file)
    .arg(env!("CARGO_BIN_EXE_dqetl"))
    .args(args)
    .current_dir(work.join("cwd"))
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HOME", work.join("home"))
    .env("TMPDIR", work.join("tmp"))
    .env("RUST_LOG", "debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {STRACE} (install strace: scripts/setup.sh): {e}"));
    let run = Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        trace: std::fs::read_to_string(&trace_file).unwrap_or_default(),
    };
    let tail: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.contains("DEBUG"))
        .collect();
    assert!(
        out.status.success(),
        "dqetl {:?} failed ({}):\nstdout:\n{}\nstderr (without debug lines):\n{}",
        run.args,
        out.status,
        run.stdout,
        tail.join("\n")
    );
    run
}

/// Paths the traced processes opened for writing (or created, or renamed into place).
fn written_paths(trace: &str) -> BTreeSet<PathBuf> {
    let mut paths = BTreeSet::new();
    for line in trace.lines() {
        let writes = line.contains("O_WRONLY")
            || line.contains("O_RDWR")
            || line.contains("O_CREAT")
            || line.contains(" creat(")
            || line.contains("rename");
        if !writes || line.contains("= -1") {
            continue;
        }
        // Every quoted string of the call that names a path (the target of a rename included).
        for quoted in line.split('"').skip(1).step_by(2) {
            if quoted.starts_with('/') {
                paths.insert(PathBuf::from(quoted));
            }
        }
    }
    paths
}

fn files_under(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.insert(p);
            }
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_a_file_an_argument_list_a_log_or_the_output() {
    assert!(
        Path::new(STRACE).is_file(),
        "{STRACE} is missing: apt-get install strace (scripts/setup.sh)"
    );
    let moto = Moto::start();
    let registry = Registry::start(Some(("AWS", ECR_PASSWORD)));
    let base = seed_base_image(&registry, Some(("AWS", ECR_PASSWORD))).await;
    let clients = moto.clients().await;
    let stack = "fleet-secret";

    // The secret the stack's database would use, generated the way Secrets Manager does.
    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk().await);
    let generated = sm
        .get_random_password()
        .password_length(32)
        .exclude_punctuation(true)
        .send()
        .await
        .unwrap();
    let password = generated
        .random_password()
        .expect("a generated password")
        .to_string();
    assert!(password.len() >= 32);
    let secret = serde_json::json!({"username": "postgres", "password": password}).to_string();
    sm.create_secret()
        .name(format!("{stack}/rds/credentials"))
        .secret_string(&secret)
        .send()
        .await
        .unwrap();
    // What the real template creates and moto's CloudFormation cannot.
    create_dms(&clients, stack).await;
    clients
        .athena
        .create_work_group()
        .name(format!("{stack}-wg"))
        .send()
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    for d in ["home", "tmp", "cwd"] {
        std::fs::create_dir_all(work.path().join(d)).unwrap();
    }
    std::fs::copy(fixture("tables.yaml"), work.path().join("cwd/tables.yaml")).unwrap();
    let mut env = moto.env();
    env.extend([
        ("DQETL_TARGET".to_string(), "aws".to_string()),
        ("DQETL_STACK_NAME".to_string(), stack.to_string()),
        ("DQETL_CONFIG".to_string(), "tables.yaml".to_string()),
        (
            "DQETL_TEMPLATE".to_string(),
            fixture("minimal-stack.yaml").display().to_string(),
        ),
        ("DQETL_BASE_IMAGE".to_string(), base),
        ("DQETL_REGISTRY_ENDPOINT".to_string(), registry.host()),
    ]);

    let runs = [
        run_dqetl(work.path(), &env, &["deploy"]),
        run_dqetl(work.path(), &env, &["post-deploy", "--skip-processor"]),
        run_dqetl(work.path(), &env, &["status"]),
        run_dqetl(
            work.path(),
            &env,
            &["query", "SELECT count(*) FROM vehicles"],
        ),
        run_dqetl(work.path(), &env, &["teardown", "--force"]),
    ];
    assert!(
        runs[0].stdout.contains("stack fleet-secret created"),
        "{}",
        runs[0].stdout
    );
    assert!(
        runs[4].stdout.contains("stack fleet-secret deleted"),
        "{}",
        runs[4].stdout
    );

    let ecr_token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{ECR_PASSWORD}"));
    let needles = [password.as_str(), ECR_PASSWORD, ecr_token.as_str()];
    let leaks = |what: &str, text: &str| -> Vec<String> {
        needles
            .iter()
            .filter(|n| text.contains(*n))
            .map(|n| format!("{what} holds {n:?}"))
            .collect()
    };

    let mut found = Vec::new();
    let mut files = BTreeSet::new();
    let mut execs = Vec::new();
    for run in &runs {
        found.extend(leaks(&format!("stdout of {:?}", run.args), &run.stdout));
        found.extend(leaks(
            &format!("stderr (debug log) of {:?}", run.args),
            &run.stderr,
        ));
        for line in run.trace.lines().filter(|l| l.contains("execve(")) {
            execs.push(line.to_string());
            found.extend(leaks(&format!("argv in {line}"), line));
        }
        files.extend(written_paths(&run.trace).into_iter().filter(|p| {
            !p.starts_with("/dev") && !p.starts_with("/proc") && !p.starts_with("/sys")
        }));
    }
    // The trace sees file calls: deploy read the config through openat.
    assert!(
        runs[0]
            .trace
            .lines()
            .any(|l| l.contains("openat(") && l.contains("tables.yaml")),
        "strace recorded no file access"
    );
    for dir in ["home", "tmp", "cwd"] {
        files_under(&work.path().join(dir), &mut files);
    }
    let mut scanned = 0;
    for f in &files {
        if let Ok(bytes) = std::fs::read(f) {
            scanned += 1;
            found.extend(leaks(
                &format!("file {}", f.display()),
                &String::from_utf8_lossy(&bytes),
            ));
        }
    }
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
    // Each run exec'd dqetl itself and nothing else; argv above was checked either way.
    assert_eq!(
        execs.len(),
        runs.len(),
        "dqetl spawned other processes: {execs:#?}"
    );
    eprintln!(
        "scanned {scanned} written file(s), {} exec(s), 5 outputs",
        execs.len()
    );
}
