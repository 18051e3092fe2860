//! Builds the static binaries that go into guest initramfs images: the
//! guest init (`zvisor-init`) and the VMM itself (`zvisor`), with
//! `-C target-feature=+crt-static`, in their own target directory so the
//! flags do not invalidate the main build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::GuestArch;
use crate::assets::repo_root;

/// Where the static builds go: `<repo>/target/static-guest[-vmm]`.
pub fn static_target_dir(vmm: bool) -> PathBuf {
    let name = if vmm {
        "static-guest-vmm"
    } else {
        "static-guest"
    };
    repo_root().join("target").join(name)
}

/// Builds `packages` statically for `arch` (release profile) and returns
/// the directory holding the binaries. `ZVISOR_STATIC_BIN_DIR` overrides:
/// then nothing is built and the binaries are taken from there.
///
/// `vmm` marks builds of the VMM: on s390x those are linked with
/// `--s390-pgste` (KVM needs it), which an init must not be: the kernel
/// answers the first exec of such a binary with EAGAIN and a restart that
/// works for execve from user space, not for the kernel's exec of /init.
pub fn build_static(arch: GuestArch, packages: &[&str], vmm: bool) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ZVISOR_STATIC_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut flags = String::from("-C target-feature=+crt-static");
    if arch == GuestArch::S390x && vmm {
        // RUSTFLAGS replaces the target's rustflags from .cargo/config.toml,
        // so repeat the ones s390x needs: PGSTEs for KVM, and the cfg that
        // lets io-uring build there (see .cargo/config.toml).
        flags.push_str(" -C link-arg=-Wl,--s390-pgste --cfg io_uring_skip_arch_check");
    }
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            arch.rust_target(),
        ])
        .env("CARGO_TARGET_DIR", static_target_dir(vmm))
        .env("RUSTFLAGS", flags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for p in packages {
        cmd.args(["-p", p]);
    }
    let st = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err(format!(
            "static build of {packages:?} for {} failed: {st}",
            arch.name()
        ));
    }
    Ok(static_target_dir(vmm)
        .join(arch.rust_target())
        .join("release"))
}

/// Checks that `path` is a statically linked ELF executable (no
/// PT_INTERP), so it runs in an initramfs without a loader.
pub fn check_static(path: &Path) -> Result<(), String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return Err(format!("{}: not a 64-bit ELF file", path.display()));
    }
    let big = b[5] == 2;
    let rd = |off: usize, n: usize| -> Option<u64> {
        let s = b.get(off..off + n)?;
        Some(if big {
            s.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
        } else {
            s.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x))
        })
    };
    let bad = || format!("{}: malformed ELF program headers", path.display());
    let phoff = usize::try_from(rd(0x20, 8).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::try_from(rd(0x36, 2).ok_or_else(bad)?).map_err(|_| bad())?;
    let phnum = usize::try_from(rd(0x38, 2).ok_or_else(bad)?).map_err(|_| bad())?;
    for i in 0..phnum {
        if rd(phoff + i * phentsize, 4).ok_or_else(bad)? == 3 {
            return Err(format!(
                "{}: dynamically linked (has PT_INTERP); build with -C target-feature=+crt-static",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_not_static_but_is_elf() {
        // Test binaries are linked dynamically; the check must notice.
        let me = std::env::current_exe().unwrap();
        if let Err(e) = check_static(&me) {
            assert!(e.contains("dynamically linked"), "{e}");
        }
        assert!(check_static(Path::new("/nonexistent")).is_err());
    }
}
