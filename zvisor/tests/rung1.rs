//! Rung 1: the real `zvisor` binary boots the tiny test guests on this
//! host's /dev/kvm and the guests report what they were given.

mod common;

use std::time::Duration;

use common::*;

const EBDA_HOLE: u64 = 0x10_0000 - 0x9_fc00;

fn parse_u64(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

/// Checks everything the guest reports about its boot.
fn check_boot(r: &Run, boot: &str, cmdline: &str, memory: u64, cpus: u32) {
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stderr, "", "{r:?}");
    assert_eq!(r.value("hello boot=").as_deref(), Some(boot), "{r:?}");
    if boot == "pvh" {
        assert_eq!(
            r.value("start_info ").as_deref(),
            Some("magic=ok version=1"),
            "{r:?}"
        );
    } else {
        let bp = r.value("bootparams ").unwrap();
        assert!(bp.starts_with("ok "), "{r:?}");
        if boot == "bzimage" {
            assert_eq!(bp, "ok code32_start=0x100000");
        }
    }
    assert_eq!(r.value("cmdline=").as_deref(), Some(cmdline), "{r:?}");
    // e820: RAM adds up to --memory minus the EBDA/BIOS hole.
    let e820: Vec<(u64, u64, u32)> = r
        .tiny_lines()
        .iter()
        .filter_map(|l| l.strip_prefix("e820 "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (parse_u64(f[0]), parse_u64(f[1]), f[2].parse().unwrap())
        })
        .collect();
    assert!(e820.len() >= 3, "{r:?}");
    let ram: u64 = e820.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    assert_eq!(ram, memory - EBDA_HOLE, "{r:?}");
    assert_eq!(r.value("ram=").map(|v| parse_u64(&v)), Some(ram));
    // No RAM in the 32-bit MMIO gap.
    assert!(e820
        .iter()
        .filter(|e| e.2 == 1)
        .all(|e| e.0 + e.1 <= 0xc000_0000 || e.0 >= 1 << 32));
    // ACPI: RSDP where promised and found by the legacy scan, every table's
    // checksum valid, one LAPIC per vCPU.
    assert_eq!(
        r.value("rsdp=").as_deref(),
        Some("0xe0000 scan=0xe0000"),
        "{r:?}"
    );
    for t in ["RSDP", "XSDT", "FACP", "DSDT", "APIC"] {
        let line = r.value(&format!("acpi {t} ")).unwrap_or_default();
        assert!(line.ends_with("csum=ok"), "{t}: {line:?}\n{r:?}");
    }
    assert_eq!(r.value("madt lapics="), Some(cpus.to_string()), "{r:?}");
    if cpus > 1 {
        assert_eq!(r.value("smp up="), Some(cpus.to_string()), "{r:?}");
    }
    // KVM's in-kernel PIT is there and counting.
    assert_eq!(r.value("pit ").as_deref(), Some("counting"), "{r:?}");
    assert!(r.tiny_lines().contains(&"ready"));
    assert!(r.tiny_lines().contains(&"action=poweroff"));
}

#[test]
fn boots_bzimage_elf_and_pvh() {
    if skip_without_kvm("boots_bzimage_elf_and_pvh") {
        return;
    }
    for (file, boot) in [
        ("tiny.bzImage", "bzimage"),
        ("tiny.elf", "elf64"),
        ("tiny-pvh.elf", "pvh"),
    ] {
        let cmdline = format!("tiny.action=poweroff marker={file}");
        let k = tiny(file);
        let r = run(&[
            "--kernel",
            k.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--memory",
            "64M",
        ]);
        check_boot(&r, boot, &cmdline, 64 << 20, 1);
    }
}

#[test]
fn smp_and_large_memory() {
    if skip_without_kvm("smp_and_large_memory") {
        return;
    }
    for (file, boot, cpus) in [("tiny.bzImage", "bzimage", 2), ("tiny-pvh.elf", "pvh", 3)] {
        let k = tiny(file);
        let r = run(&[
            "--kernel",
            k.to_str().unwrap(),
            "--cmdline",
            "tiny.action=poweroff",
            "--memory",
            "4G",
            "--cpus",
            &cpus.to_string(),
        ]);
        check_boot(&r, boot, "tiny.action=poweroff", 4 << 30, cpus);
        assert!(
            r.stdout.contains("TINY e820 0x100000000 0x40000000 1"),
            "{r:?}"
        );
    }
}

#[test]
fn initrd_arrives_intact() {
    if skip_without_kvm("initrd_arrives_intact") {
        return;
    }
    let data: Vec<u8> = (0..300_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sum: u32 = data.iter().map(|&b| u32::from(b)).sum();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("initrd.bin");
    std::fs::write(&path, &data).unwrap();
    for file in ["tiny.bzImage", "tiny-pvh.elf"] {
        let k = tiny(file);
        let r = run(&[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            path.to_str().unwrap(),
            "--cmdline",
            "tiny.action=poweroff",
        ]);
        assert_eq!(r.code, Some(0), "{r:?}");
        let line = r.value("initrd ").expect("initrd line");
        let f: Vec<&str> = line.split(' ').collect();
        let addr = parse_u64(f[0].strip_prefix("addr=").unwrap());
        assert_eq!(addr % 4096, 0);
        assert!(addr + data.len() as u64 <= 128 << 20);
        assert!(addr >= 0x20_0000, "initrd overlaps the kernel: {line}");
        assert_eq!(f[1], format!("size={}", data.len()));
        assert_eq!(f[2], format!("sum={sum:#x}"), "{file}");
    }
}

#[test]
fn exits_map_to_codes_and_messages() {
    if skip_without_kvm("exits_map_to_codes_and_messages") {
        return;
    }
    let k = tiny("tiny.elf");
    let k = k.to_str().unwrap();
    let cases: [(&str, i32, &str); 4] = [
        ("tiny.action=poweroff", 0, ""),
        ("tiny.action=reboot", 0, ""),
        (
            "tiny.action=panic",
            3,
            "zvisor: guest panicked: the guest kernel reported a panic (pvpanic)\n",
        ),
        ("tiny.action=triple", 4, "zvisor: guest triple-faulted\n"),
    ];
    for (cmdline, code, stderr) in cases {
        let r = run(&["--kernel", k, "--cmdline", cmdline]);
        assert_eq!(r.code, Some(code), "{cmdline}: {r:?}");
        assert_eq!(r.stderr, stderr, "{cmdline}: {r:?}");
        let action = cmdline.strip_prefix("tiny.").unwrap();
        assert!(r.tiny_lines().contains(&action), "{r:?}");
        // The VM stopped at the action: nothing ran after it.
        assert!(!r.stdout.contains("action returned"), "{r:?}");
    }
    // int3 with no IDT: a triple fault on hardware KVM; kvm_pvm's emulator
    // gives up with KVM_EXIT_INTERNAL_ERROR instead. Either way one line,
    // the matching code, and no panic.
    let r = run(&[
        "--kernel",
        k,
        "--cmdline",
        "tiny.action=triple tiny.triple=int3",
    ]);
    match r.code {
        Some(4) => assert_eq!(r.stderr, "zvisor: guest triple-faulted\n", "{r:?}"),
        Some(5) => {
            assert!(
                r.stderr
                    .starts_with("zvisor: guest crashed: KVM internal error on vCPU 0"),
                "{r:?}"
            );
            assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        }
        _ => panic!("int3 without an IDT: {r:?}"),
    }
    // Other triple-fault paths: #GP and #DE with no IDT.
    for how in ["gp", "div"] {
        let c = format!("tiny.action=triple tiny.triple={how}");
        let r = run(&["--kernel", k, "--cmdline", &c, "--cpus", "2"]);
        assert_eq!(r.code, Some(4), "{how}: {r:?}");
    }
}

#[test]
fn serial_output_and_input() {
    if skip_without_kvm("serial_output_and_input") {
        return;
    }
    let k = tiny("tiny.bzImage");
    let r = run_with_input(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--cmdline",
            "tiny.action=echo",
        ],
        Some(b"zv!q"),
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let got: Vec<&str> = r
        .tiny_lines()
        .into_iter()
        .filter(|l| l.starts_with("got "))
        .collect();
    assert_eq!(got, ["got z", "got v", "got !", "got q"], "{r:?}");
}

/// Starts `zvisor run` on the tiny guest with 2 vCPUs parked in its hang
/// loop (stdout read up to its `action=hang` line, stderr piped); returns
/// the child and its stdout, which must stay open while the guest runs.
fn spawn_parked_guest() -> (std::process::Child, std::process::ChildStdout) {
    use std::io::Read;
    use std::process::Stdio;
    let k = tiny("tiny.elf");
    let mut child = zvisor()
        .args(["run", "--kernel", k.to_str().unwrap(), "--cpus", "2"])
        .args(["--cmdline", "tiny.action=hang"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("action=hang") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "guest output ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    (child, stdout)
}

#[cfg(unix)]
#[test]
fn signals_stop_the_vm() {
    if skip_without_kvm("signals_stop_the_vm") {
        return;
    }
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (child, _stdout) = spawn_parked_guest();
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("zvisor: stopped by signal {sig}\n")
        );
    }
}

#[cfg(unix)]
#[test]
fn sigusr1_logs_each_vcpus_state_and_the_vm_goes_on() {
    if skip_without_kvm("sigusr1_logs_each_vcpus_state_and_the_vm_goes_on") {
        return;
    }
    use std::io::{BufRead, BufReader, Read};
    let (mut child, _stdout) = spawn_parked_guest();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut states = Vec::new();
    for round in 0..2 {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) }, 0);
        let mut got = Vec::new();
        while got.len() < 2 {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "stderr ended in round {round}: {got:?}"
            );
            if line.contains("state: vcpu") {
                got.push(line);
            }
        }
        states.extend(got);
    }
    // The VM is still running: a stop still works and says why.
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143), "{rest}");
    assert!(rest.contains("stopped by signal 15"), "{rest}");
    for id in 0..2 {
        let mine: Vec<_> = states
            .iter()
            .filter(|l| l.contains(&format!("state: vcpu{id} ")))
            .collect();
        assert_eq!(mine.len(), 2, "vcpu{id}: {states:?}");
        for l in mine {
            for field in ["rip=0x", "rsp=0x", "cr0=0x", "mp_state=", "kicks="] {
                assert!(l.contains(field), "{field} missing: {l}");
            }
        }
    }
    // vCPU 0 printed the banner through the serial port.
    assert!(
        states
            .iter()
            .any(|l| l.contains("state: vcpu0 ") && !l.contains(" io=0 ")),
        "{states:?}"
    );
}

/// Puts a fresh pty's slave side on zvisor's stdin and returns `(master, slave)`.
fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fds into the given ints; the other
    // arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(m),
            std::os::fd::OwnedFd::from_raw_fd(s),
        )
    }
}

fn termios(fd: &std::os::fd::OwnedFd) -> libc::termios {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed termios is a valid out buffer for tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal and `t` a valid termios.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t
}

fn same_modes(a: &libc::termios, b: &libc::termios) -> bool {
    (a.c_iflag, a.c_oflag, a.c_cflag, a.c_lflag) == (b.c_iflag, b.c_oflag, b.c_cflag, b.c_lflag)
}

/// Reads the child's stdout until `needle` appears.
fn read_until(out: &mut impl std::io::Read, seen: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = out.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "output ended before {needle:?}: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn terminal_raw_while_running_and_restored_on_every_exit() {
    if skip_without_kvm("terminal_raw_while_running_and_restored_on_every_exit") {
        return;
    }
    use std::io::Write;
    use std::process::Stdio;
    let k = tiny("tiny.elf");
    // Exit by signal, and exit by the guest powering off after reading a
    // byte typed on the terminal.
    for (action, by_signal) in [("tiny.action=hang", true), ("tiny.action=echo", false)] {
        let (master, slave) = open_pty();
        let before = termios(&slave);
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a fresh pty is canonical");
        let mut child = zvisor()
            .args(["run", "--kernel", k.to_str().unwrap(), "--cmdline", action])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        read_until(&mut out, &mut seen, "action=");
        // Raw while the guest runs: no line editing, no echo, no signals from
        // ^C. (zvisor switches right after starting the vCPUs, so allow it a
        // moment.)
        let start = std::time::Instant::now();
        while termios(&slave).c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG) != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "terminal never went raw"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        if by_signal {
            // SAFETY: kill(2) on our own child.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        } else {
            // ^C is a plain byte for the guest in raw mode, then q ends it.
            let mut m = std::fs::File::from(master.try_clone().unwrap());
            m.write_all(b"\x03q").unwrap();
        }
        let status = child.wait().unwrap();
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut rest).unwrap();
        seen.extend(rest);
        if by_signal {
            assert_eq!(status.code(), Some(143));
        } else {
            assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&seen));
            let s = String::from_utf8_lossy(&seen);
            assert!(
                s.contains("TINY got \x03") && s.contains("TINY got q"),
                "{s}"
            );
        }
        assert!(
            same_modes(&before, &termios(&slave)),
            "terminal not restored after {action}"
        );
    }
}
