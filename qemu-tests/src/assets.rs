//! Finds the guest kernels that `ci/assets.sh` fetched.

use std::path::{Path, PathBuf};

use crate::arch::GuestArch;

/// The repository root (this crate lives in `<root>/qemu-tests`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `$ZVISOR_ASSETS`, or `<repo>/.zvisor-assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("ZVISOR_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".zvisor-assets"))
}

/// One architecture's unpacked Debian kernel.
#[derive(Debug, Clone)]
pub struct KernelAssets {
    /// `.zvisor-assets/<arch>`.
    pub dir: PathBuf,
    /// The kernel as Debian ships it (bzImage, Image, s390 image).
    pub vmlinuz: PathBuf,
    /// x86_64: the ELF vmlinux with the PVH note.
    pub vmlinux: Option<PathBuf>,
    /// `lib/modules/<version>`.
    pub modules: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub kver: String,
}

impl KernelAssets {
    /// Loads the assets of `arch`, or explains what is missing.
    pub fn find(arch: GuestArch) -> Result<Self, String> {
        let dir = assets_dir().join(arch.name());
        let env = dir.join("kernel.env");
        let text = std::fs::read_to_string(&env).map_err(|e| {
            format!(
                "{}: {e} (run `ci/assets.sh {}` to fetch Debian's kernel)",
                env.display(),
                arch.name()
            )
        })?;
        let kver = text
            .lines()
            .find_map(|l| l.strip_prefix("KVER="))
            .ok_or_else(|| format!("{}: no KVER=", env.display()))?
            .to_string();
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.exists() {
            return Err(format!(
                "{} is missing (rerun ci/assets.sh)",
                vmlinuz.display()
            ));
        }
        let vmlinux = dir.join("vmlinux");
        Ok(Self {
            vmlinux: vmlinux.exists().then_some(vmlinux),
            modules: dir.join("modules"),
            vmlinuz,
            kver,
            dir,
        })
    }

    /// The fastest kernel to boot under TCG: the ELF vmlinux when there is
    /// one (no decompression under emulation), else the packaged image.
    pub fn fast_kernel(&self) -> &Path {
        self.vmlinux.as_deref().unwrap_or(&self.vmlinuz)
    }
}

/// True when `prog` is found on `PATH`.
pub fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}
