//! Runs a QEMU guest with its serial console on a pipe: streams the
//! console to a log file (and optionally stderr), enforces a timeout, and
//! returns the transcript.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::arch::GuestArch;

/// One QEMU run.
#[derive(Debug, Clone)]
pub struct QemuSpec {
    /// Guest architecture.
    pub arch: GuestArch,
    /// Ask for hardware virtualization inside the guest.
    pub nested: bool,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line (the console is prepended).
    pub append: String,
    /// vCPUs.
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Kill QEMU when its console stays silent this long (a hung guest).
    pub silence_timeout: Option<Duration>,
    /// Where to write the console transcript.
    pub log: Option<PathBuf>,
    /// Also copy the console to stderr as it arrives.
    pub echo: bool,
    /// Extra QEMU arguments (drives for L1, ...), appended last.
    pub extra: Vec<String>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct QemuRun {
    /// The console transcript.
    pub output: String,
    /// QEMU's own stderr.
    pub stderr: String,
    /// QEMU's exit code (`None` if killed).
    pub exit_code: Option<i32>,
    /// True when the timeout killed it.
    pub timed_out: bool,
    /// True when the silence timeout killed it.
    pub stalled: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl QemuSpec {
    /// QEMU's full argument list.
    pub fn args(&self) -> Vec<String> {
        let mut a = self.arch.machine_args(self.nested);
        a.extend(self.arch.console_args());
        a.extend([
            "-smp".into(),
            self.cpus.to_string(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-no-reboot".into(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            format!("console={} {}", self.arch.console(), self.append),
        ]);
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Runs QEMU to completion or timeout.
    pub fn run(&self) -> Result<QemuRun, String> {
        self.run_with_path(&std::env::var("PATH").unwrap_or_default())
    }

    /// Like [`QemuSpec::run`], looking the QEMU binary up in `path`.
    pub fn run_with_path(&self, path: &str) -> Result<QemuRun, String> {
        let name = self.arch.qemu_binary();
        let bin = std::env::split_paths(path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{name} not found on PATH"))?;
        let bin = bin.as_path();
        let mut log = match &self.log {
            Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut buf) {
                if n == 0 || tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
        let mut stderr_pipe = child.stderr.take().ok_or("no stderr pipe")?;
        // Detached readers: a killed guest's stray children may keep the
        // pipes open, and the harness must not wait for them.
        let (etx, erx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut s);
            let _ = etx.send(s);
        });
        let deadline = start + self.timeout;
        let mut output = String::new();
        let mut timed_out = false;
        let mut stalled = false;
        let mut last_output = start;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            if self
                .silence_timeout
                .is_some_and(|s| now.duration_since(last_output) >= s)
            {
                timed_out = true;
                stalled = true;
                let _ = child.kill();
                break;
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
                Ok(line) => {
                    last_output = Instant::now();
                    if self.echo {
                        eprint!("{line}");
                    }
                    if let Some(f) = log.as_mut() {
                        let _ = f.write_all(line.as_bytes());
                    }
                    output.push_str(&line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("waiting for {}: {e}", bin.display()))?;
        let stderr = erx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        Ok(QemuRun {
            output,
            stderr,
            exit_code: if timed_out { None } else { status.code() },
            timed_out,
            stalled,
            elapsed: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in "QEMU" for the watchdog tests: any program works, since
    /// only the process handling is under test.
    fn spec_for(timeout: Duration, silence: Option<Duration>) -> QemuSpec {
        QemuSpec {
            arch: GuestArch::X86_64,
            nested: false,
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: String::new(),
            cpus: 1,
            memory_mib: 64,
            timeout,
            silence_timeout: silence,
            log: None,
            echo: false,
            extra: Vec::new(),
        }
    }

    #[test]
    fn silence_and_overall_timeouts_kill_a_hung_guest() {
        // A script named like QEMU that prints once, then hangs.
        let dir = std::env::temp_dir().join(format!("zvisor-fake-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("qemu-system-x86_64");
        std::fs::write(&fake, "#!/bin/sh\necho booting\nsleep 30\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let t = Instant::now();
        let run = spec_for(Duration::from_secs(20), Some(Duration::from_millis(500)))
            .run_with_path(&path)
            .unwrap();
        assert!(run.stalled && run.timed_out, "{run:?}");
        assert_eq!(run.output, "booting\n");
        assert!(t.elapsed() < Duration::from_secs(10));
        let run = spec_for(Duration::from_millis(700), None)
            .run_with_path(&path)
            .unwrap();
        assert!(run.timed_out && !run.stalled, "{run:?}");
        assert_eq!(run.exit_code, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_line_has_console_memory_and_no_reboot() {
        let s = QemuSpec {
            arch: GuestArch::X86_64,
            nested: true,
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "quiet".into(),
            cpus: 2,
            memory_mib: 4096,
            timeout: Duration::from_secs(1),
            silence_timeout: None,
            log: None,
            echo: false,
            extra: Vec::new(),
        };
        let a = s.args().join(" ");
        for want in [
            "-M q35",
            "-cpu max",
            "-smp 2",
            "-m 4096",
            "-no-reboot",
            "-kernel /k",
            "-initrd /i",
        ] {
            assert!(a.contains(want), "{want} missing from {a}");
        }
        assert!(a.ends_with("-append console=ttyS0 quiet"), "{a}");
    }
}
