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
    /// Where to write the console transcript.
    pub log: Option<PathBuf>,
    /// Also copy the console to stderr as it arrives.
    pub echo: bool,
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
        a
    }

    /// Runs QEMU to completion or timeout.
    pub fn run(&self) -> Result<QemuRun, String> {
        let bin = self.arch.qemu_binary();
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
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
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
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut s);
            s
        });
        let deadline = start + self.timeout;
        let mut output = String::new();
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
                Ok(line) => {
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
            .map_err(|e| format!("waiting for {bin}: {e}"))?;
        let stderr = err_thread.join().unwrap_or_default();
        Ok(QemuRun {
            output,
            stderr,
            exit_code: if timed_out { None } else { status.code() },
            timed_out,
            elapsed: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            log: None,
            echo: false,
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
