//! `zvisor-nested`: boots L1 Linux under QEMU TCG with nested
//! virtualization and runs `zvisor run` inside it for each requested L2
//! shape, streaming L1's console (which carries each L2 console behind a
//! `[l2-cNmM] ` prefix). Used by `ci/demo.sh` on hosts without hardware KVM.
//!
//! ```text
//! zvisor-nested [--check CPUSxMEMORY_MIB]... [--repeat N] [--verbose-l2] [--timeout SECS]
//! ```
//!
//! `--repeat N` runs the whole list N times in the same L1 (a soak test).

use std::process::ExitCode;

use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::nested::{
    l2_image_bytes, problems, run_nested, GuestBinaries, L2Check, NestedPlan,
};
use zvisor_qemu_tests::{assets::KernelAssets, workdir, GuestArch};

fn parse_check(s: &str) -> Result<L2Check, String> {
    let bad = || format!("--check {s:?}: expected CPUSxMEMORY_MIB, e.g. 2x512");
    let (c, m) = s.split_once('x').ok_or_else(bad)?;
    let cpus: u32 = c.parse().map_err(|_| bad())?;
    let memory_mib: u64 = m.trim_end_matches(['M', 'm']).parse().map_err(|_| bad())?;
    if cpus == 0 || cpus > 64 || !(64..=3072).contains(&memory_mib) {
        return Err(format!("--check {s:?}: want 1-64 CPUs and 64-3072 MiB"));
    }
    Ok(L2Check::new(cpus, memory_mib))
}

fn run() -> Result<bool, String> {
    let arch = GuestArch::host().ok_or("unsupported host architecture")?;
    if arch != GuestArch::X86_64 {
        return Err(format!(
            "the nested path is implemented for x86_64 hosts only (this is {})",
            arch.name()
        ));
    }
    let mut plan = NestedPlan::rung2(arch, workdir("nested-demo"));
    plan.checks.clear();
    plan.echo = true;
    let mut repeat = 1u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => plan
                .checks
                .push(parse_check(&args.next().ok_or("--check needs a value")?)?),
            "--verbose-l2" => plan.l2_quiet = false,
            "--repeat" => {
                let v = args.next().ok_or("--repeat needs a value")?;
                repeat = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=50).contains(n))
                    .ok_or(format!("--repeat {v:?}: want 1-50"))?;
            }
            "--timeout" => {
                let v = args.next().ok_or("--timeout needs a value")?;
                plan.l2_timeout_secs = v
                    .parse()
                    .ok()
                    .filter(|t| (1..=3600).contains(t))
                    .ok_or(format!("--timeout {v:?}: want 1-3600 seconds"))?;
            }
            "-h" | "--help" => {
                println!("usage: zvisor-nested [--check CPUSxMEMORY_MIB]... [--repeat N] [--verbose-l2] [--timeout SECS]");
                return Ok(true);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if plan.checks.is_empty() {
        plan.checks.push(L2Check::new(2, 512));
    }
    let shapes = plan.checks.clone();
    for run in 1..repeat {
        plan.checks
            .extend(shapes.iter().map(|c| L2Check { run, ..*c }));
    }
    let k = KernelAssets::find(arch)?;
    eprintln!("zvisor-nested: building static zvisor and zvisor-init ...");
    let init = build_static(arch, &["zvisor-init"], false)?.join("zvisor-init");
    let zvisor = build_static(arch, &["zvisor"], true)?.join("zvisor");
    check_static(&init)?;
    check_static(&zvisor)?;
    eprintln!(
        "zvisor-nested: booting L1 ({}, QEMU TCG, {} vCPUs, {} MiB, nested SVM); zvisor runs inside it",
        k.kver, plan.l1_cpus, plan.l1_memory_mib
    );
    let out = run_nested(&plan, &k, &GuestBinaries { init, zvisor })?;
    let p = problems(&plan, &out, l2_image_bytes(&k));
    eprintln!(
        "zvisor-nested: L1 ran {:.1} s; console saved in {}",
        out.run.elapsed.as_secs_f64(),
        out.log.display()
    );
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
            "zvisor-nested: {}: [{}] L2 saw nproc={} MemTotal={} KiB",
            c.check.name(),
            tries.join(", "),
            c.report
                .as_ref()
                .and_then(|r| r.get("nproc"))
                .unwrap_or("?"),
            c.report
                .as_ref()
                .and_then(|r| r.get("memtotal_kib"))
                .unwrap_or("?")
        );
    }
    for x in &p {
        eprintln!("zvisor-nested: problem: {x}");
    }
    Ok(p.is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("zvisor-nested: error: {e}");
            ExitCode::from(2)
        }
    }
}
