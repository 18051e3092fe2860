//! Runs a command with a timeout, forwarding its output line by line with a
//! `[name] ` prefix, and retries it on failure.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::plan::ExecSpec;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with this code.
    Exit(i32),
    /// Killed by this signal (not by us).
    Signal(i32),
    /// We killed it at the deadline.
    Timeout,
    /// It could not be started.
    SpawnFailed,
}

impl Outcome {
    /// True for exit code 0.
    pub fn ok(self) -> bool {
        self == Outcome::Exit(0)
    }

    /// `exit:N`, `signal:N`, `timeout` or `spawn-failed`.
    pub fn label(self) -> String {
        match self {
            Outcome::Exit(c) => format!("exit:{c}"),
            Outcome::Signal(s) => format!("signal:{s}"),
            Outcome::Timeout => "timeout".into(),
            Outcome::SpawnFailed => "spawn-failed".into(),
        }
    }
}

fn outcome(st: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => Outcome::Exit(c),
        (None, Some(s)) => Outcome::Signal(s),
        (None, None) => Outcome::Exit(-1),
    }
}

/// Before a timed-out command is killed: every `zvisor` process here gets
/// SIGUSR1 twice, a second apart, so that the VMMs log where their vCPUs
/// are (two samples tell a spinning guest from a stuck one) into the output
/// that is being forwarded.
fn ask_vmms_for_state() {
    let pids = || -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == "zvisor")
            })
            .collect()
    };
    let found = pids();
    if found.is_empty() {
        return;
    }
    for _ in 0..2 {
        for &pid in &found {
            // SAFETY: kill(2) with a pid read from /proc; at worst the
            // process is gone (ESRCH) or the pid was reused by another
            // process, which SIGUSR1 would not harm more than a kill.
            unsafe {
                libc::kill(pid, libc::SIGUSR1);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Waits for `child` until `deadline`; kills it after that. If even a
/// killed child does not go away within `grace`, gives up on it (a process
/// stuck in the kernel cannot be reaped, and init must go on).
fn wait_until(child: &mut Child, deadline: Instant, grace: Duration) -> Outcome {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return outcome(st),
            Ok(None) => {}
            Err(_) => return Outcome::Exit(-1),
        }
        if Instant::now() >= deadline {
            ask_vmms_for_state();
            let _ = child.kill();
            let give_up = Instant::now() + grace;
            while Instant::now() < give_up {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            return Outcome::Timeout;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one attempt of `spec`, passing each output line, prefixed with
/// `[name] `, to `out`.
pub fn run_once(spec: &ExecSpec, out: fn(&str)) -> Outcome {
    let Some((prog, args)) = spec.argv.split_first() else {
        return Outcome::SpawnFailed;
    };
    let name = spec.name.clone();
    let pipes = std::io::pipe().and_then(|(r, w)| Ok((r, w.try_clone()?, w)));
    let (reader, w1, w2) = match pipes {
        Ok(p) => p,
        Err(e) => {
            out(&format!("[{name}] zvisor-init: pipe: {e}"));
            return Outcome::SpawnFailed;
        }
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).stdout(w1).stderr(w2);
    let child = cmd.spawn();
    // Drop our copies of the write end (held by `cmd`) so EOF can arrive.
    drop(cmd);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            out(&format!("[{name}] zvisor-init: cannot start {prog}: {e}"));
            return Outcome::SpawnFailed;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(spec.timeout_secs);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let prefix = name.clone();
    // A detached thread: if a stray grandchild keeps the pipe open, init
    // must not wait for it.
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => out(&format!("[{prefix}] {}", sanitize(&buf))),
            }
        }
        let _ = done_tx.send(());
    });
    let res = wait_until(&mut child, deadline, Duration::from_secs(5));
    if done_rx.recv_timeout(Duration::from_secs(3)).is_err() {
        out(&format!(
            "[{name}] zvisor-init: output still open after the command ended; not waiting"
        ));
    }
    res
}

/// One output line made safe to print: no line ending, control characters
/// (a guest console may send any byte) replaced by `?`.
pub fn sanitize(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    s.trim_end_matches(['\n', '\r'])
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

/// Runs `spec` until it succeeds or its retries are used up. Returns the
/// last outcome and the number of attempts; `report(attempt, outcome,
/// elapsed)` is called after each attempt.
pub fn run_with_retries(
    spec: &ExecSpec,
    out: fn(&str),
    mut report: impl FnMut(u32, Outcome, Duration),
) -> (Outcome, u32) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let t = Instant::now();
        let o = run_once(spec, out);
        report(attempt, o, t.elapsed());
        if o.ok() || attempt > spec.retries {
            return (o, attempt);
        }
    }
}

/// Standard output, one whole line per write.
pub fn console_line(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_line_endings_and_controls() {
        assert_eq!(
            sanitize(b"ZVISOR-RESULT nproc=2\r\n"),
            "ZVISOR-RESULT nproc=2"
        );
        assert_eq!(sanitize(b"a\x1b[0mb\tc\n"), "a?[0mb\tc");
        assert_eq!(sanitize(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(Outcome::Exit(0).label(), "exit:0");
        assert!(Outcome::Exit(0).ok());
        assert!(!Outcome::Exit(1).ok());
        assert_eq!(Outcome::Signal(9).label(), "signal:9");
        assert_eq!(Outcome::Timeout.label(), "timeout");
    }
}
