//! `rung2-blk-bench`: in-guest dd throughput of zvisor's virtio-blk beside
//! QEMU's (microvm, virtio-mmio) in the same nested machine. A benchmark:
//! it prints numbers and fails only when the data is wrong or a run broke.
//!
//! ```text
//! rung2-blk-bench [--rounds N] [--echo] [--l2-append "PARAMS"]
//! ```
//!
//! `--l2-append` adds kernel parameters to every L2 boot (e.g.
//! `loglevel=7` to see where an L2 boot spends its time).
//!
//! The host boots one L1 Linux under QEMU TCG with nested SVM (rung 2). L1
//! gets zvisor (static), the host's own qemu-system-x86_64 with its shared
//! libraries and microvm firmware (an ext4 image as a read-only virtio-pci
//! disk), and the L2 kernel and initramfs. For each round L1 boots L2
//! once under each VMM, alternating which goes first (ABBA), each on a
//! fresh 64 MiB file in L1's tmpfs as the L2's virtio-blk disk. L2 runs
//! `guest/bench-blk-l2.sh` (write 32 MiB random, conv=fsync; read after
//! dropping caches; O_DIRECT read; sha256 of the read-back data), and L1's
//! `guest/bench-blk-l1.sh` checks the backing file's sha256 after the VMM
//! exits. Both VMMs write through L1's page cache and flush with
//! fdatasync: zvisor always, QEMU with `cache=writeback`.

mod qemu_image;
mod report;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::assets::{on_path, KernelAssets};
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::qemu::QemuSpec;
use zvisor_qemu_tests::{workdir, GuestArch};

const BUSYBOX: &str = "/bin/busybox";
const QEMU_DATADIR: &str = "/usr/share/qemu";
/// Per L2 boot, enforced by L1's init (the L1 script's own `timeout` on
/// the VMM is 120 s).
const L2_TIMEOUT: u64 = 150;

struct Options {
    rounds: u32,
    echo: bool,
    l2_append: String,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        rounds: 3,
        echo: false,
        l2_append: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                let v = args.next().ok_or("--rounds needs a value")?;
                o.rounds = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10).contains(n))
                    .ok_or(format!("--rounds {v:?}: want 1-10"))?;
            }
            "--echo" => o.echo = true,
            "--l2-append" => {
                let v = args.next().ok_or("--l2-append needs a value")?;
                if v.contains(['"', '\n']) {
                    return Err("--l2-append: no double quotes or newlines".into());
                }
                o.l2_append = v;
            }
            "-h" | "--help" => {
                println!("usage: rung2-blk-bench [--rounds N] [--echo] [--l2-append \"PARAMS\"]");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a:?} (try --help)")),
        }
    }
    Ok(o)
}

/// L1's plan: per round, both VMMs, the first one alternating.
fn l1_conf(rounds: u32, l2_append: &str) -> String {
    let mut c = String::from("tag L1\nreport\n");
    for r in 1..=rounds {
        let order = if r % 2 == 1 {
            report::VMMS
        } else {
            [report::VMMS[1], report::VMMS[0]]
        };
        for vmm in order {
            c.push_str(&format!(
                "exec {vmm}-r{r} {L2_TIMEOUT} 1 /bin/busybox sh /etc/zvisor/bench-blk-l1.sh {vmm} {r} \"{l2_append}\"\n"
            ));
        }
    }
    c
}

fn run() -> Result<bool, String> {
    let opts = parse_args()?;
    if GuestArch::host() != Some(GuestArch::X86_64) {
        return Err("rung 2 runs on x86_64 hosts only (nested SVM under QEMU TCG)".into());
    }
    let arch = GuestArch::X86_64;
    for tool in ["qemu-system-x86_64", "mke2fs", "ldd"] {
        if !on_path(tool) {
            return Err(format!("{tool} is not installed"));
        }
    }
    if !Path::new(BUSYBOX).exists() {
        return Err("busybox-static is not installed (/bin/busybox)".into());
    }
    let k = KernelAssets::find(arch)?;
    let vmlinux = k
        .vmlinux
        .clone()
        .ok_or("no ELF vmlinux for L2 (rerun ci/assets.sh)")?;
    let init = build_static(arch, &["zvisor-init"], false)?.join("zvisor-init");
    let zvisor = build_static(arch, &["zvisor"], true)?.join("zvisor");
    for b in [&init, &zvisor, &Path::new(BUSYBOX).to_path_buf()] {
        check_static(b)?;
    }
    let dir = workdir("rung2-blk-bench");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let read = |f: &str| std::fs::read(guest.join(f)).map_err(|e| format!("{f}: {e}"));
    let idx = ModuleIndex::scan(&k.modules).map_err(|e| e.to_string())?;
    let want = |names: &[&str]| {
        idx.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    };

    let qemu_bin = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or("qemu-system-x86_64 not found")?;
    let qemu_img = dir.join("qemu.ext4");
    let size = qemu_image::build(
        &qemu_bin,
        Path::new(QEMU_DATADIR),
        &dir.join("qemu-stage"),
        &qemu_img,
    )?;
    eprintln!(
        "rung2-blk-bench: {} with its libraries in {} ({} MiB)",
        qemu_bin.display(),
        qemu_img.display(),
        size >> 20
    );

    let l2_initrd = dir.join("l2.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init.clone()),
            files: vec![FileSpec {
                src: BUSYBOX.into(),
                dst: "/bin/busybox".into(),
            }],
            texts: vec![
                (
                    "/etc/zvisor/bench.conf".into(),
                    b"exec run 110 0 /bin/busybox sh /etc/zvisor/bench-blk-l2.sh\n".to_vec(),
                ),
                (
                    "/etc/zvisor/bench-blk-l2.sh".into(),
                    read("bench-blk-l2.sh")?,
                ),
            ],
            modules: want(&["virtio_mmio", "virtio_blk"])?,
        },
        &l2_initrd,
    )
    .map_err(|e| format!("L2 initramfs: {e}"))?;

    let l1_initrd = dir.join("l1.cpio");
    let file = |src: &Path, dst: &str| FileSpec {
        src: src.to_path_buf(),
        dst: dst.into(),
    };
    write_image_file(
        &ImageSpec {
            init: Some(init),
            files: vec![
                file(&zvisor, "/bin/zvisor"),
                file(&vmlinux, "/boot/l2-kernel"),
                file(&l2_initrd, "/boot/l2-initrd"),
                file(Path::new(BUSYBOX), "/bin/busybox"),
            ],
            texts: vec![
                (
                    "/etc/zvisor/init.conf".into(),
                    l1_conf(opts.rounds, &opts.l2_append).into_bytes(),
                ),
                (
                    "/etc/zvisor/bench-blk-l1.sh".into(),
                    read("bench-blk-l1.sh")?,
                ),
            ],
            modules: want(&["kvm-amd", "virtio_pci", "virtio_blk"])?,
        },
        &l1_initrd,
    )
    .map_err(|e| format!("L1 initramfs: {e}"))?;

    let runs = u64::from(opts.rounds) * 2;
    let log = dir.join("l1-console.log");
    let spec = QemuSpec {
        arch,
        nested: true,
        kernel: k.fast_kernel().to_path_buf(),
        initrd: l1_initrd,
        append: "panic=-1 quiet".into(),
        cpus: 2,
        memory_mib: 2048,
        timeout: Duration::from_secs(120 + runs * 2 * (L2_TIMEOUT + 10)),
        silence_timeout: Some(Duration::from_secs(L2_TIMEOUT + 30)),
        log: Some(log.clone()),
        echo: opts.echo,
        extra: vec![
            "-drive".into(),
            format!(
                "file={},format=raw,if=virtio,readonly=on",
                qemu_img.display()
            ),
        ],
    };
    eprintln!(
        "rung2-blk-bench: booting L1 ({} rounds x 2 L2 boots); console: {}",
        opts.rounds,
        log.display()
    );
    let r = spec.run()?;
    let out = &r.output;
    let samples = report::parse_all(out);
    let mut problems = Vec::new();
    if r.exit_code != Some(0) {
        problems.push(format!(
            "L1 QEMU exit {:?} (timed out: {}, stalled: {}): {}",
            r.exit_code,
            r.timed_out,
            r.stalled,
            r.stderr.trim()
        ));
    }
    if !out.contains("kvm=yes") {
        problems.push("L1 has no /dev/kvm".into());
    }
    for round in 1..=opts.rounds {
        for vmm in report::VMMS {
            let name = format!("{vmm}-r{round}");
            if !out.contains(&format!("ZVISOR-RESULT tag=L1 exec={name} final=ok")) {
                problems.push(format!("{name}: L1's run did not succeed"));
            }
            match samples.get(&(vmm.to_string(), round)) {
                Some(s) => problems.extend(s.problems()),
                None => problems.push(format!("{name}: no L1-BENCH line")),
            }
        }
    }
    let retried: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("tag=L1 exec=") && l.contains("attempt=2"))
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "rung 2 virtio-blk, L2 dd inside one L1 (QEMU TCG, nested SVM): {} rounds, L1 ran {:.0} s, host load at end: {}",
        opts.rounds,
        r.elapsed.as_secs_f64(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "32 MiB per dd, 1 vCPU / 256 MiB L2, disk = 64 MiB file in L1 tmpfs; qemu: -M microvm virtio-blk-device cache=writeback"
    );
    print!("{}", report::table(&samples));
    for vmm in report::VMMS {
        // What L2's block layer saw of each device (the same every round).
        if let Some(q) = out.lines().find_map(|l| {
            l.split_once("L2-BENCH-QUEUE ")
                .filter(|(p, _)| p.starts_with(&format!("[{vmm}-r")))
        }) {
            println!("{vmm} device in L2: {}", q.1.trim());
        }
    }
    for l in &retried {
        println!("retried: {}", l.trim());
    }
    if problems.is_empty() {
        println!("all runs: data verified in L2 (read back) and in L1 (backing file)");
        Ok(true)
    } else {
        eprintln!(
            "rung2-blk-bench FAILED:\n  - {}\nconsole: {}",
            problems.join("\n  - "),
            log.display()
        );
        Ok(false)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rung2-blk-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_vmm_goes_first() {
        let c = l1_conf(3, "");
        let execs: Vec<&str> = c
            .lines()
            .filter_map(|l| l.strip_prefix("exec "))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            execs,
            [
                "zvisor-r1",
                "qemu-r1",
                "qemu-r2",
                "zvisor-r2",
                "zvisor-r3",
                "qemu-r3"
            ]
        );
        assert!(c.contains(
            "exec qemu-r2 150 1 /bin/busybox sh /etc/zvisor/bench-blk-l1.sh qemu 2 \"\"\n"
        ));
        assert!(l1_conf(1, "loglevel=7").contains("bench-blk-l1.sh zvisor 1 \"loglevel=7\"\n"));
        assert!(c.starts_with("tag L1\nreport\n"));
    }
}
