//! Background processes of the local target: spawning with output to a log file, pid files,
//! liveness checks and stopping by pid.
//!
//! Services started by `dqetl deploy` outlive the dqetl process that spawned them (they run in
//! their own session). Services started by tests are tied to their parent instead
//! ([`SpawnOptions::die_with_parent`]), so a crashed test binary leaves nothing running.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Errors of process management.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot open log file {path}")]
    LogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write pid file {path}")]
    WritePidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read pid file {path}")]
    ReadPidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pid file {path} does not hold a process id (found {content:?})")]
    BadPidFile { path: PathBuf, content: String },
    #[error("cannot signal process {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("process {pid} is still alive {waited:?} after SIGKILL")]
    Unkillable { pid: i32, waited: Duration },
    #[error("user `{user}` does not exist on this machine")]
    UnknownUser { user: String },
    #[error("cannot look up user `{user}`")]
    UserLookup {
        user: String,
        #[source]
        source: io::Error,
    },
}

/// How a background process is attached to the process that spawns it.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Signal the child receives when the spawning *thread* ends (Linux `PR_SET_PDEATHSIG`).
    /// Spawn from a thread that lives as long as the child should, e.g. the main thread or a
    /// dedicated service thread; never from a pooled thread that may be retired.
    pub die_with_parent: Option<Signal>,
    /// Start the child in its own session, so a terminal's Ctrl-C does not reach it.
    pub new_session: bool,
    /// Run the child as this user (only possible when running as root).
    pub run_as: Option<UserIds>,
}

/// Numeric identity of a system user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a system user by name (through NSS, like `id -u NAME`).
pub fn lookup_user(name: &str) -> Result<UserIds, ProcessError> {
    let c_name = CString::new(name).map_err(|_| ProcessError::UnknownUser {
        user: name.to_string(),
    })?;
    let mut buf = vec![0 as nix::libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid `passwd` (integers and null pointers).
    let mut pwd: nix::libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut nix::libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both valid for the lengths passed;
    // the reentrant variant is used because other threads may look up users concurrently.
    let rc = unsafe {
        nix::libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(ProcessError::UserLookup {
            user: name.to_string(),
            source: io::Error::from_raw_os_error(rc),
        });
    }
    if result.is_null() {
        return Err(ProcessError::UnknownUser {
            user: name.to_string(),
        });
    }
    Ok(UserIds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// True when this process runs as root (and must drop to a service user for PostgreSQL).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}

/// Opens `path` for appending (creating it and its folder), for a child's stdout and stderr.
pub fn open_log(path: &Path) -> Result<File, ProcessError> {
    let err = |source| ProcessError::LogFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)
}

/// Applies `options` to `command`: credentials, session and the parent-death signal.
pub fn prepare(command: &mut Command, options: &SpawnOptions) {
    if let Some(ids) = options.run_as {
        command.uid(ids.uid).gid(ids.gid);
    }
    let new_session = options.new_session;
    let death_signal = options.die_with_parent;
    if !new_session && death_signal.is_none() {
        return;
    }
    let parent = Pid::this();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (setsid, prctl, getppid). std applies uid/gid before running it, so the death
    // signal is set after the credential change (which would otherwise clear it).
    unsafe {
        command.pre_exec(move || {
            if new_session {
                nix::unistd::setsid().map_err(io::Error::from)?;
            }
            if let Some(signal) = death_signal {
                nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
                // The parent may have died between fork and prctl: then nobody would signal us.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::other("parent exited before the child started"));
                }
            }
            Ok(())
        });
    }
}

/// Spawns `command` with stdin closed and stdout+stderr appended to `log`.
pub fn spawn_logged(
    mut command: Command,
    log: &Path,
    options: &SpawnOptions,
) -> Result<Child, ProcessError> {
    let out = open_log(log)?;
    let err_out = out.try_clone().map_err(|source| ProcessError::LogFile {
        path: log.to_path_buf(),
        source,
    })?;
    command.stdin(Stdio::null()).stdout(out).stderr(err_out);
    prepare(&mut command, options);
    command.spawn().map_err(|source| ProcessError::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// Writes `pid` to `path` (one line), creating the folder.
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), ProcessError> {
    let err = |source| ProcessError::WritePidFile {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    fs::write(path, format!("{pid}\n")).map_err(err)
}

/// Reads a pid file; `Ok(None)` when it does not exist.
pub fn read_pid_file(path: &Path) -> Result<Option<u32>, ProcessError> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ProcessError::ReadPidFile {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let first_line = content.lines().next().unwrap_or("").trim();
    first_line
        .parse::<u32>()
        .ok()
        .filter(|pid| *pid > 0)
        .map(Some)
        .ok_or_else(|| ProcessError::BadPidFile {
            path: path.to_path_buf(),
            content: first_line.to_string(),
        })
}

/// True when process `pid` exists and is not a zombie. Reaps it first if it is our own exited
/// child, so a stopped child is not reported alive.
pub fn is_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let pid = Pid::from_raw(raw);
    // ECHILD (not our child) is expected and ignored.
    if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
        waitpid(pid, Some(WaitPidFlag::WNOHANG))
    {
        return false;
    }
    match kill(pid, None) {
        Ok(()) => !is_zombie(raw),
        // EPERM: it exists but belongs to someone else.
        Err(Errno::EPERM) => !is_zombie(raw),
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces, so split after the last ')'.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// How [`stop_pid`] ended a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    NotRunning,
    /// It exited after the polite signal.
    Exited,
    /// It ignored the polite signal for the grace period and was killed.
    Killed,
}

/// Sends `signal` to `pid`, waits up to `grace` for it to exit, then SIGKILLs it and waits
/// again. Works for any process we may signal, not only our children.
pub fn stop_pid(pid: u32, signal: Signal, grace: Duration) -> Result<StopOutcome, ProcessError> {
    let raw = i32::try_from(pid).map_err(|_| ProcessError::Signal {
        pid: -1,
        source: Errno::ESRCH,
    })?;
    if !is_alive(pid) {
        return Ok(StopOutcome::NotRunning);
    }
    match kill(Pid::from_raw(raw), signal) {
        Ok(()) => {}
        Err(Errno::ESRCH) => return Ok(StopOutcome::NotRunning),
        Err(source) => return Err(ProcessError::Signal { pid: raw, source }),
    }
    if wait_for_exit(pid, grace) {
        return Ok(StopOutcome::Exited);
    }
    match kill(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(source) => return Err(ProcessError::Signal { pid: raw, source }),
    }
    let after_kill = Duration::from_secs(10);
    if wait_for_exit(pid, after_kill) {
        Ok(StopOutcome::Killed)
    } else {
        Err(ProcessError::Unkillable {
            pid: raw,
            waited: after_kill,
        })
    }
}

/// Polls until `pid` is gone; false if it is still alive after `timeout`.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last `max_lines` lines of a log file, for error messages (empty if unreadable).
pub fn log_tail(path: &Path, max_lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `sleep 30` (after logging "started") and returns its pid; tests stop it by pid,
    /// which also reaps it.
    fn sleeper(options: &SpawnOptions, log: &Path) -> u32 {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; exec sleep 30"]);
        spawn_logged(command, log, options)
            .expect("spawn sleep")
            .id()
    }

    /// Waits until the log's last line is `line`, so a signal does not race the child's start.
    fn wait_for_line(log: &Path, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_tail(log, 1) != line {
            assert!(
                Instant::now() < deadline,
                "{} never said {line:?}",
                log.display()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_stopped_child_is_reported_dead_and_its_output_is_in_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("logs/sleep.log");
        let pid = sleeper(&SpawnOptions::default(), &log);
        wait_for_line(&log, "started");
        assert!(is_alive(pid));
        assert_eq!(
            stop_pid(pid, Signal::SIGTERM, Duration::from_secs(5)).expect("stop"),
            StopOutcome::Exited
        );
        assert!(!is_alive(pid));
        assert_eq!(
            stop_pid(pid, Signal::SIGTERM, Duration::from_secs(1)).expect("stop again"),
            StopOutcome::NotRunning
        );
        assert!(wait_for_exit(pid, Duration::from_secs(1)));
    }

    #[test]
    fn a_process_ignoring_the_polite_signal_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("trap.log");
        let mut command = Command::new("sh");
        // The shell ignores SIGTERM and keeps running until SIGKILL.
        command.args([
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        ]);
        let pid = spawn_logged(command, &log, &SpawnOptions::default())
            .expect("spawn")
            .id();
        wait_for_line(&log, "ready");
        let outcome = stop_pid(pid, Signal::SIGTERM, Duration::from_millis(300)).expect("stop");
        assert_eq!(outcome, StopOutcome::Killed);
        assert!(!is_alive(pid));
    }

    #[test]
    fn a_child_tied_to_its_thread_dies_when_the_thread_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("tied.log");
        let options = SpawnOptions {
            die_with_parent: Some(Signal::SIGKILL),
            ..SpawnOptions::default()
        };
        let pid = thread::spawn(move || sleeper(&options, &log))
            .join()
            .expect("spawning thread");
        assert!(
            wait_for_exit(pid, Duration::from_secs(5)),
            "child {pid} outlived its spawning thread"
        );
    }

    #[test]
    fn pid_files_round_trip_and_reject_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/x.pid");
        assert_eq!(read_pid_file(&path).expect("missing is fine"), None);
        write_pid_file(&path, 4242).expect("write");
        assert_eq!(read_pid_file(&path).expect("read"), Some(4242));
        fs::write(&path, "not a pid\n").expect("overwrite");
        let err = read_pid_file(&path).expect_err("garbage");
        assert!(err.to_string().contains("x.pid"), "{err}");
    }

    #[test]
    fn the_root_user_is_found_and_a_missing_user_is_named() {
        assert_eq!(lookup_user("root").expect("root exists").uid, 0);
        let err = lookup_user("no-such-user-dqetl").expect_err("missing");
        assert!(err.to_string().contains("no-such-user-dqetl"), "{err}");
    }
}
