//! The fault drill: the whole local pipeline while the generator writes, with every service
//! failing once under live traffic and brought back the way a user would. The broker and
//! `capture` and `process` are killed with SIGKILL, PostgreSQL gets an immediate shutdown
//! (crash recovery at the next start); `dqetl deploy` restarts dead services and
//! `dqetl post-deploy --skip-tables --skip-topics --skip-seed` dead workers. Afterwards the lake
//! must hold exactly what the generator's summaries say, as in the fault-free run.

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dqetl::target::local::process::{StopOutcome, stop_pid};
use dqetl::target::local::stack::pg_url;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::e2e_local::{assert_lake_accounts_for_every_generated_row, service_pids};
use crate::local_stack::LocalStack;

/// Traffic length and rate: long enough for four faults with recovery in between.
const TRAFFIC: &str = "40s";
const RATE: &str = "40";
const EVENTS: u64 = 1600;
/// Bounds the generator's run, outages included.
const GENERATOR_TIMEOUT: Duration = Duration::from_secs(180);

/// The generator as a child of the test; killed if the test fails before it ends.
struct Generator(Child);

impl Drop for Generator {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_generated_row_is_accounted_for_after_every_service_failed_once() {
    let stack = LocalStack::new("drill");
    stack.ok(&["deploy"]);
    let post = stack.ok(&["post-deploy", "--rate", RATE, "--seed", "20261126"]);
    for step in ["tables", "topics", "capture", "process", "seed"] {
        assert!(
            post.lines()
                .any(|l| l.starts_with("+ ") && l[2..].starts_with(step)),
            "post-deploy did not do `{step}`:\n{post}"
        );
    }
    let before = service_pids(&stack);
    for service in ["postgres", "broker", "capture", "process"] {
        assert!(before.contains_key(service), "{service} runs: {before:?}");
    }

    let summary = stack.dir().summaries_dir().join("drill-traffic.json");
    let log_path = stack.workdir().join("generator.log");
    let log = File::create(&log_path).expect("generator log");
    let mut command = stack.command(&[
        "generate-data",
        "--pg-url",
        &pg_url(&stack.state()),
        "--rate",
        RATE,
        "--duration",
        TRAFFIC,
        "--seed",
        "20261127",
        "--summary-json",
    ]);
    command
        .arg(&summary)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let started = Instant::now();
    let mut generator = Generator(command.spawn().expect("start generate-data"));
    let at = |seconds: u64, fault: &str| {
        let due = started + Duration::from_secs(seconds);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        eprintln!("{:>5.1} s: {fault}", started.elapsed().as_secs_f64());
    };
    let generator_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // The broker dies while capture produces and the processor consumes.
    at(5, "kill -9 the broker");
    kill(before["broker"], Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(2));
    let out = stack.ok(&["deploy"]);
    assert!(out.contains("broker       started on"), "{out}");
    assert!(out.contains("postgres     already running"), "{out}");

    // PostgreSQL crashes under the generator and capture's replication connection.
    at(13, "immediate shutdown of PostgreSQL");
    kill(before["postgres"], Signal::SIGQUIT);
    std::thread::sleep(Duration::from_secs(2));
    let out = stack.ok(&["deploy"]);
    assert!(out.contains("postgres     started on"), "{out}");

    // Capture and the processor retried through both outages: they still run.
    let now = service_pids(&stack);
    for worker in ["capture", "process"] {
        assert_eq!(
            now.get(worker),
            before.get(worker),
            "{worker} kept running through the outages"
        );
    }

    at(21, "kill -9 capture");
    kill(before["capture"], Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(1));
    let out = restart_workers(&stack);
    assert!(out.contains("+ capture"), "capture was restarted:\n{out}");
    assert!(
        out.contains("= process"),
        "process was left running:\n{out}"
    );

    at(29, "kill -9 process");
    kill(before["process"], Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(1));
    let out = restart_workers(&stack);
    assert!(out.contains("+ process"), "process was restarted:\n{out}");
    assert!(
        out.contains("= capture"),
        "capture was left running:\n{out}"
    );
    assert!(
        generator.0.try_wait().expect("generator status").is_none(),
        "the generator was still writing when the last fault hit"
    );

    let deadline = started + GENERATOR_TIMEOUT;
    let status = loop {
        if let Some(status) = generator.0.try_wait().expect("generator status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the generator still runs after {GENERATOR_TIMEOUT:?}:\n{}",
            generator_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "{:>5.1} s: the generator finished",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "the generator failed ({status}):\n{}",
        generator_log()
    );
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("traffic summary"))
            .expect("summary JSON");
    assert_eq!(run["stopped"], "budget", "{run:#}");
    assert_eq!(run["events"], EVENTS, "every requested event was written");
    assert!(
        run["connection_losses"].as_u64().unwrap_or(0) >= 1,
        "the generator saw the database go away and came back:\n{}",
        generator_log()
    );

    assert_lake_accounts_for_every_generated_row(&stack).await;
    eprintln!(
        "{:>5.1} s: the lake accounts for every row",
        started.elapsed().as_secs_f64()
    );

    let after = service_pids(&stack);
    for service in ["postgres", "broker", "capture", "process"] {
        let (old, new) = (before.get(service), after.get(service));
        assert!(
            new.is_some() && new != old,
            "{service} was restarted: pid {old:?} before, {new:?} after"
        );
    }
    let pids: Vec<u32> = after.into_values().collect();
    stack.teardown_leaves_nothing(&pids);
}

/// Sends `signal` and waits until the process is gone.
fn kill(pid: u32, signal: Signal) {
    assert_eq!(
        stop_pid(pid, signal, Duration::from_secs(30)).expect("signal"),
        StopOutcome::Exited,
        "pid {pid} ended on {signal}"
    );
}

/// What a user runs after a worker died: post-deploy without the steps that only set up.
fn restart_workers(stack: &LocalStack) -> String {
    stack.ok(&[
        "post-deploy",
        "--skip-tables",
        "--skip-topics",
        "--skip-seed",
    ])
}
