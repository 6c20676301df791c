//! Whether a recorded pid is still the process dqetl started. Pids are reused (after a reboot,
//! or simply over time), so a pid from a pid file is only trusted when the live process still
//! points into the stack's folder: its command line names a path inside it (capture, process,
//! the generator and the postmaster all get one) or its working directory lies inside it
//! (tansu runs in its work folder, PostgreSQL's server processes in their data folder).

use std::fs;
use std::path::Path;

use super::process;

/// A live process and its command line, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub command: String,
}

/// True when `pid` is alive and belongs to the folder `dir` (see the module comment).
pub fn belongs_to(pid: u32, dir: &Path) -> bool {
    process::is_alive(pid) && points_into(pid, dir)
}

/// Every live process other than this one whose command line or working directory points into
/// `dir`: what would keep running if the folder were removed.
pub fn processes_in(dir: &Path) -> Vec<ProcessInfo> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<ProcessInfo> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && points_into(pid, dir) && process::is_alive(pid))
        .map(|pid| ProcessInfo {
            pid,
            command: command_line(pid).unwrap_or_default(),
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// The command line of `pid`, arguments joined by spaces.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(args.join(" "))
}

fn points_into(pid: u32, dir: &Path) -> bool {
    let dir_text = dir.to_string_lossy();
    let in_command = command_line(pid).is_some_and(|cmd| {
        cmd.split(' ')
            .any(|arg| arg == dir_text || Path::new(arg).starts_with(dir))
            || cmd.contains(&format!("{dir_text}/"))
    });
    in_command || fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use nix::sys::signal::Signal;

    use super::*;
    use crate::target::local::process::{SpawnOptions, spawn_logged, stop_pid};

    #[test]
    fn a_process_is_ours_by_its_arguments_or_its_working_directory_only() {
        let base = tempfile::tempdir().expect("tempdir");
        let ours = base.path().join("stack");
        let other = base.path().join("stack-other");
        fs::create_dir_all(ours.join("broker")).expect("dirs");
        fs::create_dir_all(&other).expect("dirs");

        // Named in the arguments (like `capture --state-dir <stack>/capture`).
        let marker = ours.join("capture.marker");
        fs::write(&marker, "").expect("marker");
        let mut by_arg = Command::new("tail");
        by_arg.arg("-f").arg(&marker);
        let by_arg = spawn_logged(by_arg, &base.path().join("a.log"), &SpawnOptions::default())
            .expect("spawn")
            .id();
        // Running inside the folder (like tansu in its work folder).
        let mut by_cwd = Command::new("sleep");
        by_cwd.arg("30").current_dir(ours.join("broker"));
        let by_cwd = spawn_logged(by_cwd, &base.path().join("b.log"), &SpawnOptions::default())
            .expect("spawn")
            .id();
        // A sibling folder whose name starts the same is not ours.
        let mut elsewhere = Command::new("sleep");
        elsewhere.arg("30").current_dir(&other);
        let elsewhere = spawn_logged(
            elsewhere,
            &base.path().join("c.log"),
            &SpawnOptions::default(),
        )
        .expect("spawn")
        .id();

        assert!(belongs_to(by_arg, &ours));
        assert!(belongs_to(by_cwd, &ours));
        assert!(!belongs_to(elsewhere, &ours));
        let found: Vec<u32> = processes_in(&ours).iter().map(|p| p.pid).collect();
        assert!(
            found.contains(&by_arg) && found.contains(&by_cwd),
            "{found:?}"
        );
        assert!(!found.contains(&elsewhere), "{found:?}");

        for pid in [by_arg, by_cwd, elsewhere] {
            stop_pid(pid, Signal::SIGTERM, Duration::from_secs(5)).expect("stop");
        }
        assert!(
            !belongs_to(by_arg, &ours),
            "a dead process belongs to nobody"
        );
        assert!(processes_in(&ours).is_empty());
    }
}
