//! exec into a running container, and the terminal through a console
//! socket (needs root).

mod common;

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;

#[test]
fn exec_joins_the_running_container() {
    require_root!();
    let b = Bundle::new(&["sleep", "60"]);
    let id = id("exec");
    b.ok(&["run", "-d", &id]);
    let init = b.state(&id)["pid"].as_i64().unwrap();
    let out = b.ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo $$; hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/mnt",
    ]);
    let l: Vec<&str> = out.lines().collect();
    assert_ne!(l[0], "1", "a new process, not init");
    assert_eq!(l[1], "zvtest");
    let net = std::fs::read_link(format!("/proc/{init}/ns/net")).unwrap();
    let mnt = std::fs::read_link(format!("/proc/{init}/ns/mnt")).unwrap();
    assert_eq!(l[2], net.to_string_lossy());
    assert_eq!(l[3], mnt.to_string_lossy());
    // The exit code comes back.
    assert_eq!(
        b.runc(&["exec", &id, "sh", "-c", "exit 3"]).status.code(),
        Some(3)
    );
    // --process file.json, --detach and --pid-file.
    let pj = b.dir.path().join("process.json");
    std::fs::write(
        &pj,
        serde_json::to_vec(
            &json!({"args": ["sh", "-c", "echo from-process-json > /tmp/pj; sleep 30"],
            "cwd": "/tmp", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}),
        )
        .unwrap(),
    )
    .unwrap();
    b.ok(&[
        "exec",
        "--process",
        pj.to_str().unwrap(),
        "--detach",
        "--pid-file",
        "exec.pid",
        &id,
    ]);
    let epid: i64 = std::fs::read_to_string(b.dir.path().join("exec.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_for(|| b
        .ok(&["exec", &id, "cat", "/tmp/pj"])
        .contains("from-process-json")));
    let ps: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "-f", "json", &id])).unwrap();
    assert!(ps.contains(&init) && ps.contains(&epid), "{ps:?}");
    // Missing binaries fail clearly.
    let out = b.runc(&["exec", &id, "/no/such"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    b.ok(&["delete", "-f", &id]);
    assert_no_leaks(&b, &id);
    assert!(!b.runc(&["exec", &id, "true"]).status.success());
}

/// Accepts one connection and receives the pty master.
fn recv_master(l: &UnixListener) -> OwnedFd {
    let (s, _) = l.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this fd for us.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

fn read_until(master: OwnedFd, needle: &str) -> String {
    let mut f = std::fs::File::from(master);
    let mut all = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !all.contains(needle) {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    all
}

#[test]
fn terminal_through_the_console_socket() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && echo TTY-OK; sleep 30",
    ]);
    b.config["process"]["terminal"] = json!(true);
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let id = id("tty");
    let out = b.runc(&["create", "--console-socket", sock.to_str().unwrap(), &id]);
    assert!(out.status.success());
    let master = recv_master(&l);
    b.ok(&["start", &id]);
    let text = read_until(master, "TTY-OK");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("TTY-OK"), "{text}");
    // exec --tty through a second console socket.
    let sock2 = sock_dir.path().join("exec.sock");
    let l2 = UnixListener::bind(&sock2).unwrap();
    let bb = &b;
    let s2 = sock2.clone();
    let id2 = id.clone();
    let h = std::thread::spawn(move || recv_master(&l2));
    let out = bb.runc(&[
        "exec",
        "-t",
        "-d",
        "--console-socket",
        s2.to_str().unwrap(),
        &id2,
        "sh",
        "-c",
        "test -t 0 && echo EXEC-TTY; sleep 5",
    ]);
    assert!(out.status.success());
    let m2 = h.join().unwrap();
    assert!(read_until(m2, "EXEC-TTY").contains("EXEC-TTY"));
    // Without a console socket a terminal config is rejected up front.
    let out = b.runc(&["create", &format!("{id}-x")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("console-socket"));
    b.ok(&["delete", "-f", &id]);
    assert_no_leaks(&b, &id);
}
