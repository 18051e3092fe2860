//! Shared helpers of the zvisor integration tests: the tiny guests (built
//! from `guest/tiny` with the host's gcc), KVM detection, and running the
//! real `zvisor` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The zvisor binary under test.
pub fn zvisor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zvisor"))
}

/// Why the KVM tests cannot run here, if they cannot.
pub fn kvm_skip_reason() -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some("the x86_64 tiny guests need an x86_64 host".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm is not usable: {e}")),
    }
}

/// Returns true (after printing why) when KVM tests must be skipped.
pub fn skip_without_kvm(test: &str) -> bool {
    match kvm_skip_reason() {
        Some(why) => {
            eprintln!("SKIP {test}: {why}");
            true
        }
        None => false,
    }
}

/// The directory with tiny.elf, tiny-pvh.elf and tiny.bzImage, built once.
pub fn tiny_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(concat!("tiny-", env!("CARGO_CRATE_NAME")));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/tiny/build.sh");
        let st = Command::new("sh")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run guest/tiny/build.sh");
        assert!(st.success(), "guest/tiny/build.sh failed");
        out
    })
}

/// One of the tiny guests.
pub fn tiny(name: &str) -> PathBuf {
    tiny_dir().join(name)
}

/// What a zvisor run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// Lines of the tiny guest's report, without the "TINY " prefix.
    pub fn tiny_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix("TINY "))
            .collect()
    }
    /// The value after `key` on the first report line starting with it.
    pub fn value(&self, key: &str) -> Option<String> {
        self.tiny_lines()
            .into_iter()
            .find_map(|l| l.strip_prefix(key).map(str::to_string))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `zvisor run ARGS` with stdin from `input`, failing the test if it
/// takes longer than `timeout`.
pub fn run_with_input(args: &[&str], input: Option<&[u8]>, timeout: Duration) -> Run {
    let mut c = zvisor();
    c.arg("run").args(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().expect("spawn zvisor");
    if let Some(i) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(i).expect("write stdin");
    }
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "zvisor {args:?} did not finish in {timeout:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().expect("output").into()
}

/// Runs `zvisor run ARGS` with stdin from /dev/null.
pub fn run(args: &[&str]) -> Run {
    run_with_input(args, None, Duration::from_secs(60))
}
