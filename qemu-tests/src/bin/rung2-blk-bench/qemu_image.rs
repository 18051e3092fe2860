//! The host's own QEMU, packed for L1: an ext4 image (built with
//! `mke2fs -d`) holding `bin/qemu-system-x86_64`, every shared library
//! `ldd` names in `lib/`, the dynamic loader in `lib64/`, and the microvm
//! firmware in `share/qemu/`. L1 mounts it at `/opt/q`, links `/lib64` to
//! the loader and runs QEMU with `LD_LIBRARY_PATH=/opt/q/lib`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libraries {
    /// Shared libraries (resolved paths on the host).
    pub libs: Vec<PathBuf>,
    /// The dynamic loader (the `PT_INTERP` path).
    pub loader: PathBuf,
}

/// Parses `ldd` output: `name => /path (0x...)` lines are libraries, a
/// bare absolute path is the loader, `linux-vdso` is skipped. A library
/// `ldd` cannot find (`=> not found`) is an error.
pub fn parse_ldd(text: &str) -> Result<Libraries, String> {
    let mut libs = Vec::new();
    let mut loader = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, rest)) = line.split_once("=>") {
            let path = rest.split_whitespace().next().unwrap_or("");
            if path == "not" || !path.starts_with('/') {
                return Err(format!("ldd: {} not found", name.trim()));
            }
            libs.push(PathBuf::from(path));
        } else if line.starts_with('/') {
            let path = line.split_whitespace().next().unwrap_or("");
            loader = Some(PathBuf::from(path));
        } else if !line.starts_with("linux-vdso") && !line.starts_with("linux-gate") {
            return Err(format!("ldd: unexpected line {line:?}"));
        }
    }
    let loader = loader.ok_or("ldd: no dynamic loader line (is the binary static?)")?;
    Ok(Libraries { libs, loader })
}

/// Firmware QEMU reads for `-M microvm -kernel <PVH vmlinux>` (seen with
/// strace on QEMU 7.2: qboot as bios-microvm.bin, and the PVH option ROM).
pub const FIRMWARE: &[&str] = &["bios-microvm.bin", "pvh.bin"];

/// Builds the image at `out` from the `qemu` binary and firmware in
/// `datadir`; returns the image size in bytes.
pub fn build(qemu: &Path, datadir: &Path, stage: &Path, out: &Path) -> Result<u64, String> {
    let o = Command::new("ldd")
        .arg(qemu)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "ldd {}: {}",
            qemu.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let libs = parse_ldd(&String::from_utf8_lossy(&o.stdout))?;
    let _ = std::fs::remove_dir_all(stage);
    let mut total = 0u64;
    // std::fs::copy follows symlinks: the image gets the real files.
    let mut copy = |src: &Path, dir: &str, name: Option<&str>| -> Result<(), String> {
        let d = stage.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let name = match name {
            Some(n) => n.into(),
            None => src
                .file_name()
                .ok_or_else(|| format!("{}: no file name", src.display()))?
                .to_os_string(),
        };
        total += std::fs::copy(src, d.join(name)).map_err(|e| format!("{}: {e}", src.display()))?;
        Ok(())
    };
    copy(qemu, "bin", Some("qemu-system-x86_64"))?;
    for l in &libs.libs {
        copy(l, "lib", None)?;
    }
    copy(&libs.loader, "lib64", None)?;
    for f in FIRMWARE {
        copy(&datadir.join(f), "share/qemu", None)?;
    }
    // ext4 overhead (inode tables, journal) plus slack.
    let size = (total + total / 4 + (16 << 20)).next_multiple_of(1 << 20);
    let _ = std::fs::remove_file(out);
    std::fs::File::create(out)
        .and_then(|f| f.set_len(size))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "qemu", "-d"])
        .arg(stage)
        .arg(out)
        .status()
        .map_err(|e| format!("cannot run mke2fs: {e}"))?;
    if !st.success() {
        return Err(format!("mke2fs -d {} failed: {st}", stage.display()));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd)\n\
        \tlibpixman-1.so.0 => /lib/x86_64-linux-gnu/libpixman-1.so.0 (0x00007fe2)\n\
        \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007fe3)\n\
        \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e)\n";

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let l = parse_ldd(LDD).unwrap();
        assert_eq!(
            l.libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libpixman-1.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1")
            ]
        );
        assert_eq!(l.loader, PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
    }

    #[test]
    fn missing_libraries_and_static_binaries_are_errors() {
        let e = parse_ldd("\tlibfoo.so.1 => not found\n\t/lib64/ld.so (0x1)\n").unwrap_err();
        assert!(e.contains("libfoo.so.1 not found"), "{e}");
        let e = parse_ldd("\tlibz.so.1 => /lib/libz.so.1 (0x1)\n").unwrap_err();
        assert!(e.contains("no dynamic loader"), "{e}");
        assert!(parse_ldd("garbage here\n").is_err());
    }

    #[test]
    fn the_hosts_qemu_resolves_when_installed() {
        // Real ldd on the real binary, when this host has it.
        let q = Path::new("/usr/bin/qemu-system-x86_64");
        if !q.exists() {
            eprintln!("SKIPPED: {} is not installed", q.display());
            return;
        }
        let o = Command::new("ldd").arg(q).output().unwrap();
        let l = parse_ldd(&String::from_utf8_lossy(&o.stdout)).unwrap();
        assert!(l.libs.iter().any(|p| p.ends_with("libglib-2.0.so.0")));
        assert!(l.loader.exists());
    }
}
