//! `zvisor run --channel`: bad options and paths are refused with one clear
//! line before anything is created, a failed run leaves no socket behind,
//! a stale socket is replaced, and (rung 1, /dev/kvm) a real run creates
//! the socket and the log file and removes the socket on exit.

mod common;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::*;

fn tmp(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a clean one-line failure that mentions every one of `needles`.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let mut all = vec!["--kernel", "/nonexistent/kernel"];
    all.extend_from_slice(args);
    let r = run(&all);
    assert_ne!(r.code, Some(0), "{args:?} succeeded: {r:?}");
    assert!(r.code.is_some(), "{args:?} died from a signal: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one stderr line: {r:?}");
    let line = lines[0];
    assert!(line.starts_with("zvisor: error: "), "{args:?}: {line}");
    for n in needles {
        assert!(
            line.contains(n),
            "{args:?}: {line:?} does not mention {n:?}"
        );
    }
    assert!(!line.contains("panicked"), "{r:?}");
}

#[test]
fn bad_channel_options() {
    assert_refused(
        &["--channel", "sock=/tmp/x"],
        &["--channel", "unknown key 'sock'"],
    );
    assert_refused(
        &["--channel", "socket=/tmp/a,file=/tmp/b"],
        &["--channel", "not both"],
    );
    assert_refused(&["--channel", "socket="], &["--channel", "empty value"]);
    assert_refused(
        &["--channel", "socket=/tmp/a,name=bad/name"],
        &["--channel", "name 'bad/name'"],
    );
    assert_refused(
        &[
            "--channel",
            "file=/tmp/zvisor-chan-a.log,name=org.x.0",
            "--channel",
            "file=/tmp/zvisor-chan-b.log,name=org.x.0",
        ],
        &["--channel", "name org.x.0 given twice"],
    );
    let long = format!("socket=/tmp/{}", "x".repeat(120));
    assert_refused(&["--channel", &long], &["--channel", "too long"]);
}

#[test]
fn bad_channel_paths_are_refused_and_left_alone() {
    // A regular file where the socket should go: refused, untouched.
    let file = tmp("chan-regular-file");
    std::fs::write(&file, b"precious").unwrap();
    let opt = format!("socket={}", s(&file));
    assert_refused(
        &["--channel", &opt],
        &["--channel", s(&file), "not a socket"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");

    // A socket somebody listens on: refused, still there.
    let live = tmp("chan-live.sock");
    let l = UnixListener::bind(&live).unwrap();
    let opt = format!("socket={}", s(&live));
    assert_refused(&["--channel", &opt], &["--channel", s(&live), "in use"]);
    assert!(live.exists());
    drop(l);

    assert_refused(
        &["--channel", "socket=/nonexistent-dir/c.sock"],
        &["--channel", "/nonexistent-dir/c.sock", "No such file"],
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let opt = format!("file={}", s(dir));
    assert_refused(&["--channel", &opt], &["--channel", "Is a directory"]);

    let a = tmp("chan-dup.sock");
    let opt = format!("socket={}", s(&a));
    assert_refused(
        &["--channel", &opt, "--channel", &opt],
        &["--channel", "given twice"],
    );
    let vs = format!("cid=3,socket={}", s(&a));
    assert_refused(
        &["--channel", &opt, "--vsock", &vs],
        &["--vsock", "also a --channel socket"],
    );
    assert!(!a.exists(), "a refused run created {}", a.display());
}

/// A failure after the socket was bound (the log file cannot be created)
/// removes the socket again.
#[test]
fn failed_run_leaves_no_socket() {
    let a = tmp("chan-undo.sock");
    let opt = format!("socket={}", s(&a));
    assert_refused(
        &[
            "--channel",
            &opt,
            "--channel",
            "file=/nonexistent-dir/guest.log",
        ],
        &["--channel", "/nonexistent-dir/guest.log"],
    );
    assert!(!a.exists(), "socket left behind after a failed run");
}

/// A stale socket (nobody listens) is replaced, and removed on exit even
/// when the run fails later (here: the kernel does not exist).
#[test]
fn stale_socket_is_replaced_and_removed() {
    let p = tmp("chan-stale.sock");
    drop(UnixListener::bind(&p).unwrap());
    assert!(p.exists());
    let opt = format!("socket={}", s(&p));
    let r = run(&["--kernel", "/nonexistent/kernel", "--channel", &opt]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(!r.stderr.contains("--channel"), "{r:?}");
    assert!(!p.exists(), "socket left behind: {r:?}");
}

/// Rung 1: the tiny guest boots with a socket channel, a file channel and a
/// named (multiport) socket channel; the sockets are gone after the run and
/// the log file is created (truncated).
#[test]
fn tiny_guest_runs_with_channels() {
    if skip_without_kvm("tiny_guest_runs_with_channels") {
        return;
    }
    let sock = tmp("chan-rung1.sock");
    let log = tmp("chan-rung1.log");
    let agent = tmp("chan-rung1-agent.sock");
    std::fs::write(&log, b"old content").unwrap();
    let so = format!("socket={}", s(&sock));
    let fo = format!("file={}", s(&log));
    let ao = format!("socket={},name=org.zvisor.agent.0", s(&agent));
    let r = run(&[
        "--kernel",
        s(&tiny("tiny.elf")),
        "--channel",
        &so,
        "--channel",
        &fo,
        "--channel",
        &ao,
        "--console",
        "serial",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        !r.tiny_lines().is_empty(),
        "tiny guest did not report: {r:?}"
    );
    assert!(!sock.exists(), "channel socket left behind");
    assert!(!agent.exists(), "named channel socket left behind");
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"",
        "the log file is truncated"
    );
}
