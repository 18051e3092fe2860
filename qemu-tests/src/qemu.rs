//! Runs a QEMU guest with its serial console on a pipe: streams the
//! console to a log file (and optionally stderr), enforces a timeout, and
//! returns the transcript.
//!
//! Every run has QEMU's monitor on a private Unix socket. When the guest
//! hangs (a timeout or the silence timeout fires), the harness asks the
//! monitor where each emulated CPU is (`info registers -a`, sampled a few
//! times, and `info irq` before and after) and keeps the answer in
//! [`QemuRun::hang_report`], also written beside the log as `<log>.hang`:
//! a hung L1 shows whether its CPUs spin, sleep or take an interrupt storm.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::arch::GuestArch;

/// Numbers the monitor sockets of one process's runs.
static MONITORS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
    /// What QEMU's monitor said about the CPUs when a timeout fired (empty
    /// when the guest did not hang or the monitor did not answer).
    pub hang_report: String,
}

impl QemuRun {
    /// The guest hung: a timeout or the silence timeout killed it.
    pub fn hung(&self) -> bool {
        self.timed_out || self.stalled
    }

    /// One line per distinct `RIP=` sample in the hang report, with counts.
    pub fn hang_summary(&self) -> String {
        let mut seen: Vec<(String, usize)> = Vec::new();
        for w in self
            .hang_report
            .split_whitespace()
            .filter(|w| w.starts_with("RIP="))
        {
            match seen.iter_mut().find(|(r, _)| r == w) {
                Some((_, n)) => *n += 1,
                None => seen.push((w.to_string(), 1)),
            }
        }
        seen.iter()
            .map(|(r, n)| format!("{r} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `attempt` (which boots a guest, from fresh images if it writes
/// any) up to `tries` times while the guest hangs, and returns the last run
/// with the wall time of every attempt. Each hang is reported on stderr
/// with the monitor's view of the CPUs, so a retried flake stays visible
/// in CI's log. For nested guests only: QEMU 7.2's TCG emulation of SVM
/// sometimes leaves an L1 spinning in its kernel (docs/testing.md).
pub fn run_retrying_hangs(
    what: &str,
    tries: usize,
    mut attempt: impl FnMut(usize) -> QemuRun,
) -> (QemuRun, Vec<Duration>) {
    let mut times = Vec::new();
    loop {
        let n = times.len() + 1;
        let run = attempt(n);
        times.push(run.elapsed);
        if !run.hung() || n >= tries.max(1) {
            return (run, times);
        }
        eprintln!(
            "{what}: attempt {n} hung after {:.0} s (timed out {}, silent {}); CPUs: {}; retrying",
            run.elapsed.as_secs_f64(),
            run.timed_out,
            run.stalled,
            run.hang_summary()
        );
    }
}

/// Asks QEMU's monitor at `sock` for the CPUs' state: `info irq`, then
/// `info registers -a` `samples` times, then `info irq` again. Empty if
/// the monitor does not answer.
fn monitor_report(sock: &std::path::Path, samples: usize) -> String {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let Ok(mut s) = UnixStream::connect(sock) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut out = String::new();
    let drain = |s: &mut UnixStream, out: &mut String| {
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    };
    let mut banner = String::new();
    drain(&mut s, &mut banner);
    let mut cmds = vec!["info irq"];
    cmds.extend(std::iter::repeat_n("info registers -a", samples));
    cmds.push("info irq");
    for c in cmds {
        if s.write_all(format!("{c}\n").as_bytes()).is_err() {
            break;
        }
        out.push_str(&format!("--- {c}\n"));
        drain(&mut s, &mut out);
    }
    // The monitor echoes input with terminal escapes; keep the text.
    let mut clean = String::with_capacity(out.len());
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                while let Some(&d) = chars.peek() {
                    chars.next();
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        clean.push(c);
    }
    clean
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
            format!(
                "console={} {}{}",
                self.arch.console(),
                // A nested L1's init holds one idle KVM VM, so the kernel's
                // per-VM static keys are not re-patched around every L2:
                // QEMU 7.2's TCG can leave both L1 CPUs looping in the int3
                // that live patching plants (docs/testing.md). Later words
                // of `append` override it.
                if self.nested { "zvisor.kvm_pin=1 " } else { "" },
                self.append
            ),
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
        let monitor = std::env::temp_dir().join(format!(
            "zvisor-qmon-{}-{}.sock",
            std::process::id(),
            MONITORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&monitor);
        let mut child = Command::new(bin)
            .args(self.args())
            .args([
                "-monitor".to_string(),
                format!("unix:{},server=on,wait=off", monitor.display()),
            ])
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
        let mut hang_report = String::new();
        loop {
            let now = Instant::now();
            let silent = self
                .silence_timeout
                .is_some_and(|s| now.duration_since(last_output) >= s);
            if now >= deadline || silent {
                timed_out = true;
                stalled = silent;
                hang_report = monitor_report(&monitor, 20);
                if let Some(p) = &self.log {
                    let _ = std::fs::write(p.with_extension("hang"), &hang_report);
                }
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
        let _ = std::fs::remove_file(&monitor);
        Ok(QemuRun {
            hang_report,
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
    fn a_hang_report_asks_the_monitor_and_summarizes_rips() {
        use std::io::{BufRead, BufReader};
        use std::os::unix::net::UnixListener;
        let sock = std::env::temp_dir().join(format!("zvisor-fake-mon-{}", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        // A stand-in monitor: a banner, then an answer (with the terminal
        // escapes QEMU's readline puts in) to each command.
        let server = std::thread::spawn(move || {
            let (c, _) = l.accept().unwrap();
            let mut w = c.try_clone().unwrap();
            w.write_all(b"QEMU 7.2 monitor\r\n(qemu) ").unwrap();
            let mut n = 0;
            for line in BufReader::new(c).lines() {
                let line = line.unwrap();
                let answer = if line == "info irq" {
                    "IRQ statistics:\r\n 0: 17\r\n".to_string()
                } else {
                    n += 1;
                    let rip = if n % 2 == 0 {
                        "ffffffff81000010"
                    } else {
                        "ffffffff81000020"
                    };
                    format!("\x1b[K\x1b[DCPU#0\r\nRIP={rip} RFL=00000046\r\n")
                };
                w.write_all(format!("{answer}(qemu) ").as_bytes()).unwrap();
            }
        });
        let report = monitor_report(&sock, 3);
        assert!(report.contains("--- info irq\n"), "{report}");
        assert!(report.contains(" 0: 17"), "{report}");
        assert!(!report.contains('\u{1b}'), "{report}");
        let run = QemuRun {
            output: String::new(),
            stderr: String::new(),
            exit_code: None,
            timed_out: true,
            stalled: true,
            elapsed: Duration::ZERO,
            hang_report: report,
        };
        assert!(run.hung());
        assert_eq!(
            run.hang_summary(),
            "RIP=ffffffff81000020 x2, RIP=ffffffff81000010 x1"
        );
        drop(run);
        let _ = std::fs::remove_file(&sock);
        // No monitor: an empty report, not an error.
        assert_eq!(monitor_report(&sock, 2), "");
        server.join().unwrap();
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
        // Nested: the L1 init pins a KVM VM; `append` comes last.
        assert!(
            a.ends_with("-append console=ttyS0 zvisor.kvm_pin=1 quiet"),
            "{a}"
        );
        let plain = QemuSpec { nested: false, ..s }.args().join(" ");
        assert!(plain.ends_with("-append console=ttyS0 quiet"), "{plain}");
    }
}
