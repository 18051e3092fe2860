//! Rung 2 on x86_64: real Linux L2 microVMs booted by `zvisor run` under
//! nested KVM inside an L1 Linux that QEMU emulates with TCG (`-cpu max`
//! exposes SVM). One L1 boot runs every L2 check; each L2 reports nproc and
//! MemTotal, which must match `--cpus` and `--memory`.
//!
//! Skips (with a message) when QEMU or the assets are missing, unless
//! ZVISOR_REQUIRE_RUNG2=1. Knobs: ZVISOR_RUNG2_ECHO=1 streams L1's console;
//! ZVISOR_L2_KERNEL=vmlinuz boots L2 from the bzImage instead of the PVH
//! ELF; ZVISOR_L2_CMDLINE adds L2 kernel parameters.

use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::nested::{l2_image_bytes, problems, run_nested, GuestBinaries, NestedPlan};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

#[test]
fn x86_64_l2_linux_under_zvisor_in_nested_kvm() {
    if !cfg!(target_arch = "x86_64") {
        skip("rung 2 on x86_64 needs an x86_64 host (it runs zvisor inside an x86_64 L1)");
        return;
    }
    let arch = GuestArch::X86_64;
    let Some(k) = prerequisites(arch) else {
        return;
    };
    let init_dir = build_static(arch, &["zvisor-init"], false).expect("static zvisor-init");
    let vmm_dir = build_static(arch, &["zvisor"], true).expect("static zvisor");
    let bins = GuestBinaries {
        init: init_dir.join("zvisor-init"),
        zvisor: vmm_dir.join("zvisor"),
    };
    check_static(&bins.init).expect("zvisor-init must be static");
    check_static(&bins.zvisor).expect("zvisor must be static to run in L1's initramfs");

    let mut plan = NestedPlan::rung2(arch, workdir("x86_64-nested"));
    plan.echo = std::env::var_os("ZVISOR_RUNG2_ECHO").is_some();
    if std::env::var("ZVISOR_L2_KERNEL").as_deref() == Ok("vmlinuz") {
        plan.l2_use_vmlinux = false;
    }
    if let Ok(extra) = std::env::var("ZVISOR_L2_CMDLINE") {
        plan.l2_cmdline_extra = extra;
    }
    let out = run_nested(&plan, &k, &bins).expect("nested run");

    eprintln!(
        "rung 2: L1 ran {:.1} s (QEMU exit {:?}); console: {}",
        out.run.elapsed.as_secs_f64(),
        out.run.exit_code,
        out.log.display()
    );
    if let Some(r) = &out.l1_report {
        eprintln!("  L1: {}", r.raw);
    }
    for c in &out.checks {
        let tries: Vec<String> = c
            .attempts
            .iter()
            .map(|a| {
                format!(
                    "{} in {} ms",
                    a.get("status").unwrap_or("?"),
                    a.get("elapsed_ms").unwrap_or("?")
                )
            })
            .collect();
        eprintln!(
            "  {}: {} [{}] report: {}",
            c.check.name(),
            if c.ok { "ok" } else { "FAILED" },
            tries.join(", "),
            c.report.as_ref().map_or("none", |r| r.raw.as_str())
        );
    }
    let p = problems(&plan, &out, l2_image_bytes(&k));
    if !p.is_empty() {
        // The last lines of each failed L2 run say what zvisor reported.
        let tail: Vec<&str> = out.run.output.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "rung 2 failed:\n  - {}\nlast console lines ({}):\n{}",
            p.join("\n  - "),
            out.log.display(),
            tail.join("\n")
        );
    }
}
