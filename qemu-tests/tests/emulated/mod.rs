//! Shared driver of `s390x_containers` and `aarch64_containers`.

use zvisor_qemu_tests::containers::{CgroupLayout, GuestPlan};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

/// Tests that may skip inside the guest, with the reason they skip there.
fn allowed_skips(layout: CgroupLayout) -> Vec<&'static str> {
    // podman and containerd are not in the guest's initramfs.
    let mut v = vec![
        "clients::podman_run_exec_stop_ps_rm_and_tty",
        "clients::containerd_ctr_run",
        // These boot emulated guests themselves, from an x86_64 host.
        "devices_v2_guest::s390x_kernel_enforces_our_big_endian_program",
        "devices_v2_guest::aarch64_kernel_enforces_our_program",
    ];
    match layout {
        // These two check cgroup v1 files.
        CgroupLayout::V2 => v.extend([
            "resources::cpu_and_cpuset_limits_are_written",
            "resources::unavailable_controllers_are_clear_errors",
        ]),
        // This one checks cgroup v2 files.
        CgroupLayout::V1Hybrid => v.push("resources::v2_limits_update_pause_resume"),
    }
    v
}

/// Boots `arch` with `layout`, runs every containers test executable in
/// it and asserts a clean run.
pub fn run(arch: GuestArch, layout: CgroupLayout) {
    let Some(k) = prerequisites(arch) else {
        return;
    };
    if let Err(e) = zvisor_qemu_tests::containers::busybox(arch) {
        skip(&e);
        return;
    }
    let plan = GuestPlan::new(arch, layout);
    let dir = workdir(&plan.tag);
    let run = plan
        .run(k.fast_kernel(), &dir)
        .unwrap_or_else(|e| panic!("{}: {e}", plan.tag));
    let problems = run.problems(&plan.tag, &allowed_skips(layout));
    let (passed, skipped, failed) = run.totals();
    eprintln!(
        "{}: {passed} passed, {skipped} skipped, {failed} failed; build {:.1} s, QEMU run {:.1} s ({} vCPUs, {} MiB); console in {}\n{}",
        plan.tag,
        run.build_time.as_secs_f64(),
        run.qemu.elapsed.as_secs_f64(),
        plan.cpus,
        plan.memory_mib,
        run.log.display(),
        run.table()
    );
    assert!(
        problems.is_empty(),
        "{}: {}\n(console in {})",
        plan.tag,
        problems.join("\n"),
        run.log.display()
    );
}
