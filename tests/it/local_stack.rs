//! The local target's lifecycle through the built binary: deploy is idempotent and comes back
//! after a service died, status sees the services, teardown refuses without confirmation on a
//! non-terminal and, with --force, leaves no process and no folder behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use dqetl::target::local::kafka::existing_topics;
use dqetl::target::local::process::{is_alive, stop_pid};
use dqetl::target::local::stack::{LocalState, StackDir};
use dqetl::target::local::{StopOutcome, create_topics};
use nix::sys::signal::Signal;

use crate::support::unique;

/// A stack in its own temporary working directory, driven through the dqetl binary. Dropping
/// it tears the stack down, so a failing test leaves no services running.
pub struct LocalStack {
    workdir: tempfile::TempDir,
    pub name: String,
}

impl LocalStack {
    pub fn new(prefix: &str) -> LocalStack {
        let workdir = tempfile::tempdir().expect("tempdir");
        // PostgreSQL runs as the `postgres` user (we are root in CI), which must enter it.
        std::fs::set_permissions(workdir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        LocalStack {
            workdir,
            name: unique(prefix),
        }
    }

    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    pub fn dir(&self) -> StackDir {
        StackDir::under(self.workdir.path(), &self.name)
    }

    pub fn config() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tables.yaml")
    }

    /// `dqetl --config config/tables.yaml --stack-name <name> <args>` in the working directory,
    /// with stdin closed (not a terminal).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dqetl"));
        command
            .current_dir(self.workdir.path())
            .arg("--config")
            .arg(Self::config())
            .args(["--stack-name", &self.name])
            .args(args)
            .env_remove("DQETL_TARGET")
            .env_remove("DQETL_CONFIG")
            .env_remove("DQETL_STACK_NAME");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run dqetl {args:?}: {e}"))
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "dqetl {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn state(&self) -> LocalState {
        LocalState::load(&self.dir())
            .expect("state.json readable")
            .expect("state.json present")
    }

    /// `ps` lines whose command names a path inside the stack folder.
    pub fn processes_in_ps(&self) -> Vec<String> {
        let output = Command::new("ps")
            .args(["-eo", "pid=,args="])
            .output()
            .expect("ps");
        let root = self.dir().root().display().to_string();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(&root))
            .map(str::to_string)
            .collect()
    }

    /// Tears down with --force and checks that nothing of the stack is left.
    pub fn teardown_leaves_nothing(&self, pids: &[u32]) {
        let out = self.ok(&["teardown", "--force"]);
        assert!(out.contains("removed"), "{out}");
        for &pid in pids {
            assert!(
                dqetl::target::local::process::wait_for_exit(pid, Duration::from_secs(5)),
                "pid {pid} still runs after teardown"
            );
        }
        assert_eq!(self.processes_in_ps(), Vec::<String>::new());
        assert!(
            !self.dir().root().exists(),
            "{} still exists",
            self.dir().root().display()
        );
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if !self.dir().root().exists() {
            return;
        }
        if std::thread::panicking() {
            // Teardown removes the logs that explain the failure: show their ends first.
            let logs = self.dir().logs_dir();
            for name in [
                "capture.log",
                "process.log",
                "generator.log",
                "postgres.log",
                "tansu.log",
            ] {
                let tail = dqetl::target::local::process::log_tail(&logs.join(name), 40);
                if !tail.is_empty() {
                    eprintln!("--- end of {name} ---\n{tail}");
                }
            }
        }
        let _ = self.run(&["teardown", "--force"]);
    }
}

fn status_json(stack: &LocalStack) -> (serde_json::Value, Option<i32>) {
    let output = stack.run(&["status", "--json"]);
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (json, output.status.code())
}

fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status:#}"))
}

#[test]
fn deploy_twice_reports_already_running_and_teardown_leaves_nothing() {
    let stack = LocalStack::new("ls");
    let first = stack.ok(&["deploy"]);
    assert!(first.contains("postgres     started on"), "{first}");
    assert!(first.contains("broker       started on"), "{first}");
    let state = stack.state();
    assert_eq!(state.stack, stack.name);
    assert_eq!(state.postgres.database, "dqetl");

    let second = stack.ok(&["deploy"]);
    assert!(
        second.contains("postgres     already running on"),
        "{second}"
    );
    assert!(
        second.contains("broker       already running on"),
        "{second}"
    );
    assert!(!second.contains("started"), "{second}");
    let again = stack.state();
    assert_eq!(
        again.postgres.port, state.postgres.port,
        "same PostgreSQL port"
    );
    assert_eq!(again.broker.port, state.broker.port, "same broker port");
    assert_eq!(again.created_at, state.created_at);

    let (status, code) = status_json(&stack);
    let postgres = service(&status, "postgres");
    let broker = service(&status, "broker");
    assert_eq!(postgres["up"], true, "{status:#}");
    assert_eq!(postgres["port"], state.postgres.port);
    assert_eq!(broker["up"], true, "{status:#}");
    assert_eq!(broker["port"], state.broker.port);
    assert_eq!(service(&status, "capture")["up"], false);
    assert_eq!(
        code,
        Some(1),
        "status fails while capture and process are not running"
    );
    let pids: Vec<u32> = [postgres, broker]
        .iter()
        .map(|s| s["pid"].as_u64().expect("pid") as u32)
        .collect();
    assert!(pids.iter().all(|&pid| is_alive(pid)));

    // Without a terminal there is nobody to confirm: refuse, and change nothing.
    let refused = stack.run(&["teardown"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("stdin is not a terminal") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(stack.dir().root().exists());
    assert!(pids.iter().all(|&pid| is_alive(pid)));

    stack.teardown_leaves_nothing(&pids);
    let idle = stack.ok(&["teardown", "--force"]);
    assert!(idle.contains("nothing to tear down"), "{idle}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_restarts_a_stopped_broker_on_its_port_with_its_topics() {
    let stack = LocalStack::new("ls_restart");
    stack.ok(&["deploy"]);
    let state = stack.state();
    let bootstrap = format!("127.0.0.1:{}", state.broker.port);
    create_topics(&bootstrap, &[("cdc-kept", 2)])
        .await
        .expect("create topic");

    // The broker goes away (as after a reboot); PostgreSQL keeps running.
    let (status, _) = status_json(&stack);
    let broker_pid = service(&status, "broker")["pid"].as_u64().expect("pid") as u32;
    let postgres_pid = service(&status, "postgres")["pid"].as_u64().expect("pid") as u32;
    assert_eq!(
        stop_pid(broker_pid, Signal::SIGTERM, Duration::from_secs(10)).expect("stop"),
        StopOutcome::Exited
    );
    let (status, _) = status_json(&stack);
    assert_eq!(service(&status, "broker")["up"], false, "{status:#}");

    let out = stack.ok(&["deploy"]);
    assert!(out.contains("postgres     already running"), "{out}");
    assert!(out.contains("broker       started on"), "{out}");
    assert_eq!(stack.state().broker.port, state.broker.port);
    let topics = existing_topics(&bootstrap).expect("topics");
    assert_eq!(
        topics.get("cdc-kept"),
        Some(&2),
        "SQLite storage keeps topics across a restart: {topics:?}"
    );

    let (status, _) = status_json(&stack);
    let new_broker = service(&status, "broker")["pid"].as_u64().expect("pid") as u32;
    assert_ne!(new_broker, broker_pid);
    stack.teardown_leaves_nothing(&[new_broker, postgres_pid]);
}

#[test]
fn a_command_on_a_stack_that_was_never_deployed_says_so() {
    let stack = LocalStack::new("ls_none");
    let post = stack.run(&["post-deploy"]);
    assert!(!post.status.success());
    let stderr = String::from_utf8_lossy(&post.stderr);
    assert!(
        stderr.contains("is not deployed here") && stderr.contains("dqetl deploy"),
        "{stderr}"
    );
    let status = stack.run(&["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("is not deployed here"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let out = stack.ok(&["teardown"]);
    assert!(out.contains("nothing to tear down"), "{out}");
    assert!(!stack.workdir().join(".dqetl").exists());
}
