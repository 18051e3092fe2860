//! Real container clients driving zvisor-runc: podman (through conmon) and
//! containerd (through ctr and its shim). Needs root and Debian's `podman`
//! and `containerd` packages; skips (printing why) when they are missing.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::*;

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// podman with private storage, the cgroupfs manager and our runtime.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let p = Podman {
            dir: tempfile::tempdir().unwrap(),
        };
        let rootfs = p.dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let tar = p.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        p.ok(&["import", tar.to_str().unwrap(), "localhost/bb:1"]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--runtime")
            .arg(runc_bin())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn out(&self, args: &[&str]) -> (bool, String) {
        let o = self.cmd(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("podman {args:?} -> {:?}: {text}", o.status.code());
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.out(args);
        assert!(ok, "podman {args:?} failed");
        out
    }
}

const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// CI sets ZVISOR_REQUIRE_CLIENTS=1: there a missing client is a failure,
/// elsewhere the test says why it skipped.
fn skip_or_fail(why: &str) {
    if std::env::var_os("ZVISOR_REQUIRE_CLIENTS").is_some_and(|v| v == "1") {
        panic!("required client missing: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

#[test]
fn podman_run_exec_stop_ps_rm_and_tty() {
    require_root!();
    if !have("podman") {
        skip_or_fail("podman is not installed (apt-get install podman)");
        return;
    }
    let p = Podman::new();
    let run = |extra: &[&str], cmd: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&ULIMITS);
        a.push("localhost/bb:1");
        a.extend_from_slice(cmd);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = run(&["--rm"], &["/bin/echo", "hi-podman"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(p.ok(&argv), "hi-podman\n");

    let name = id("pod");
    let args = run(&["-d", "--name", &name], &["sleep", "100"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    p.ok(&argv);
    assert_eq!(
        p.ok(&["exec", &name, "sh", "-c", "echo exec-$((1+1))"]),
        "exec-2\n"
    );
    let ps = p.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&name) && ps.contains("Up"), "{ps}");
    let top = p.ok(&["top", &name]);
    assert!(top.contains("sleep 100"), "{top}");
    p.ok(&["stop", "-t", "1", &name]);
    let ps = p.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("Exited"), "{ps}");
    p.ok(&["rm", &name]);
    assert!(!p.ok(&["ps", "-a"]).contains(&name));

    // run -it: conmon hands us its console socket; script(1) gives podman a tty.
    let inner = format!(
        "{} run --rm -it {} localhost/bb:1 sh -c 'tty; echo it-ok'",
        p.cmd(&[])
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" run ", " "),
        ULIMITS.join(" ")
    );
    // script's stdin stays open until the session ends: at end of file it
    // would hang up the terminal, racing the container's output.
    let mut child = Command::new("script")
        .args(["-qec", &format!("podman {inner}"), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut raw).unwrap();
    drop(_stdin);
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&raw).replace('\r', "");
    assert!(
        text.contains("/dev/pts/0") && text.contains("it-ok"),
        "{text}"
    );
}

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
}

#[test]
fn containerd_ctr_run() {
    require_root!();
    if !have("containerd") || !have("ctr") || !have("podman") {
        skip_or_fail("needs containerd, ctr and podman (apt-get install containerd podman)");
        return;
    }
    let p = Podman::new();
    let oci = p.dir.path().join("bb-oci.tar");
    p.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "localhost/bb:1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("containerd")
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(dir.path().join("c.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Containerd { dir, child };
    assert!(wait_for(|| d.sock().exists()), "containerd did not start");
    let ctr = |args: &[&str]| {
        let o = Command::new("ctr")
            .arg("--address")
            .arg(d.sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        eprintln!(
            "ctr {args:?} -> {:?} {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let bin = runc_bin();
    // ctr 1.6's import of podman's OCI archive reports "content digest ...
    // not found" and sometimes leaves the image's snapshots incomplete
    // ("parent snapshot ... does not exist", before any runtime is called);
    // import again in that case.
    let mut result = (false, String::new());
    for attempt in 0..3 {
        ctr(&[
            "images",
            "import",
            "--index-name",
            "localhost/bb:1",
            oci.to_str().unwrap(),
        ]);
        let name = format!("{}-{attempt}", id("ctr"));
        result = ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            bin.to_str().unwrap(),
            "localhost/bb:1",
            &name,
            "/bin/sh",
            "-c",
            "echo hi-ctr; echo pid=$$",
        ]);
        if result.0 {
            break;
        }
    }
    let (ok, out) = result;
    assert!(ok, "ctr run failed");
    assert!(out.contains("hi-ctr"), "{out}");
    assert!(out.contains("pid=1"), "own pid namespace: {out}");
}
