//! End-to-end tests of zvisor with real Linux guests under QEMU.
//!
//! - `arch`: per-architecture QEMU machines and consoles;
//! - `assets`: the Debian kernels fetched by `ci/assets.sh`;
//! - `binaries`: static builds of `zvisor` and `zvisor-init`;
//! - `containers`: the OCI runtime's integration tests, cross-built, run
//!   inside an emulated s390x or aarch64 guest;
//! - `libtest`: parses a Rust test executable's output from a console;
//! - `qemu`: runs a guest with its console on a pipe and a timeout;
//! - `serial`: parses `zvisor-init`'s result lines;
//! - `memory`: the MemTotal bound for a given RAM size and kernel;
//! - `nested`: rung 2, L2 microVMs under zvisor inside an L1 with KVM;
//! - `vmmtests`: the virtio device models' in-process tests, cross-built,
//!   run inside an emulated s390x or aarch64 guest (io_uring, tap).

pub mod arch;
pub mod assets;
pub mod binaries;
pub mod containers;
pub mod libtest;
pub mod memory;
pub mod nested;
pub mod qemu;
pub mod serial;
pub mod vmmtests;

pub use arch::GuestArch;

/// Environment variable that turns "skip" into "fail" for these tests
/// (CI sets it, so missing assets or QEMU cannot pass silently).
pub const REQUIRE_ENV: &str = "ZVISOR_REQUIRE_RUNG2";

/// True when the QEMU tests must run (see [`REQUIRE_ENV`]).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test with `why` (returns normally), or panics when
/// the tests are required.
pub fn skip(why: &str) {
    assert!(
        !required(),
        "{REQUIRE_ENV} is set but this test cannot run: {why}"
    );
    eprintln!("SKIPPED: {why} (set {REQUIRE_ENV}=1 to make this an error)");
}

/// Checks the prerequisites of a QEMU test for `arch`; returns the kernel
/// assets, or `None` after calling [`skip`].
pub fn prerequisites(arch: GuestArch) -> Option<assets::KernelAssets> {
    if !assets::on_path(arch.qemu_binary()) {
        skip(&format!("{} is not installed", arch.qemu_binary()));
        return None;
    }
    match assets::KernelAssets::find(arch) {
        Ok(k) => Some(k),
        Err(e) => {
            skip(&e);
            None
        }
    }
}

/// A fresh scratch directory under `target/qemu-tests/<name>`.
pub fn workdir(name: &str) -> std::path::PathBuf {
    let d = assets::repo_root()
        .join("target")
        .join("qemu-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}
