//! The substitutable system-call layer for filesystem setup: the real
//! implementation, and (in tests) a recorder so the rootfs logic is tested
//! without root, also under qemu-user.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::unistd::{chdir, chown, chroot, fchdir, pivot_root, Gid, Uid};

use crate::error::{p, Context, Result};

/// Kind of an existing path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A symlink.
    Symlink,
    /// Anything else.
    File,
}

/// The operations the rootfs code needs.
pub trait Sys {
    /// mount(2).
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()>;
    /// Makes `new_root` the root with pivot_root(2) and detaches the old one.
    fn pivot(&self, new_root: &Path) -> Result<()>;
    /// Moves `new_root` onto / and chroots into it (`--no-pivot`).
    fn move_chroot(&self, new_root: &Path) -> Result<()>;
    /// mkdir -p.
    fn mkdir_all(&self, path: &Path) -> Result<()>;
    /// Creates an empty file if missing.
    fn touch(&self, path: &Path) -> Result<()>;
    /// mknod(2).
    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> Result<()>;
    /// chown(2).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    /// symlink(2), ignoring an existing link.
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    /// What is at `path` (lstat), if anything.
    fn kind(&self, path: &Path) -> Option<Kind>;
    /// readlink(2).
    fn readlink(&self, path: &Path) -> Option<PathBuf>;
    /// The MS_* flags that a remount must keep (statvfs).
    fn locked_flags(&self, path: &Path) -> MsFlags;
}

/// The real system calls.
pub struct RealSys;

impl Sys for RealSys {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        mount(src, dst, fstype, flags, data).ctx(|| {
            format!(
                "mounting {} on {} (type {}, flags {:?}, data {:?})",
                src.map(p).unwrap_or_default(),
                p(dst),
                fstype.unwrap_or(""),
                flags,
                data.unwrap_or("")
            )
        })
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> Result<()> {
        umount2(target, flags).ctx(|| format!("unmounting {}", p(target)))
    }

    fn pivot(&self, new_root: &Path) -> Result<()> {
        let old = std::fs::File::open("/").ctx(|| "opening /")?;
        chdir(new_root).ctx(|| format!("chdir {}", p(new_root)))?;
        pivot_root(".", ".").ctx(|| format!("pivot_root to {}", p(new_root)))?;
        fchdir(std::os::fd::AsRawFd::as_raw_fd(&old)).ctx(|| "fchdir to the old root")?;
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| "making the old root a slave")?;
        umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching the old root")?;
        chdir("/").ctx(|| "chdir /")
    }

    fn move_chroot(&self, new_root: &Path) -> Result<()> {
        chdir(new_root).ctx(|| format!("chdir {}", p(new_root)))?;
        mount(
            Some(new_root),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| format!("moving {} onto /", p(new_root)))?;
        chroot(".").ctx(|| "chroot")?;
        chdir("/").ctx(|| "chdir /")
    }

    fn mkdir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).ctx(|| format!("creating {}", p(path)))
    }

    fn touch(&self, path: &Path) -> Result<()> {
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .ctx(|| format!("creating {}", p(path)))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> Result<()> {
        let _ = std::fs::remove_file(path);
        mknod(path, kind, Mode::from_bits_truncate(perm), dev).ctx(|| format!("mknod {}", p(path)))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .ctx(|| format!("chown {}", p(path)))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r.ctx(|| format!("symlink {} -> {}", p(link), p(target))),
        }
    }

    fn kind(&self, path: &Path) -> Option<Kind> {
        let m = path.symlink_metadata().ok()?;
        Some(if m.file_type().is_symlink() {
            Kind::Symlink
        } else if m.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        })
    }

    fn readlink(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }

    fn locked_flags(&self, path: &Path) -> MsFlags {
        let Ok(s) = statvfs(path) else {
            return MsFlags::empty();
        };
        let f = s.flags();
        let mut m = MsFlags::empty();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(a) {
                m |= b;
            }
        }
        m
    }
}

/// A C string from a path (for raw calls).
pub fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
pub mod recorder {
    //! Records operations instead of performing them.
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// A fake filesystem: paths with kinds, and a log of operations.
    #[derive(Default)]
    pub struct Recorder {
        /// Log of operations, one line each.
        pub log: RefCell<Vec<String>>,
        /// Existing paths.
        pub fs: RefCell<BTreeMap<PathBuf, (Kind, Option<PathBuf>)>>,
    }

    impl Recorder {
        /// Declares an existing directory.
        pub fn dir(&self, p: &str) {
            self.fs.borrow_mut().insert(p.into(), (Kind::Dir, None));
        }
        /// Declares an existing symlink.
        pub fn link(&self, p: &str, to: &str) {
            self.fs
                .borrow_mut()
                .insert(p.into(), (Kind::Symlink, Some(to.into())));
        }
        fn push(&self, s: String) {
            self.log.borrow_mut().push(s);
        }
    }

    impl Sys for Recorder {
        fn mount(
            &self,
            src: Option<&Path>,
            dst: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<()> {
            let f = format!("{flags:?}");
            let f = f.trim_start_matches("MsFlags(").trim_end_matches(')');
            let f = if f == "0x0" { "(empty)" } else { f };
            self.push(format!(
                "mount {} {} {} {f} {}",
                src.map(p).unwrap_or("-".into()),
                p(dst),
                fstype.unwrap_or("-"),
                data.unwrap_or("-")
            ));
            Ok(())
        }
        fn umount(&self, t: &Path, _f: MntFlags) -> Result<()> {
            self.push(format!("umount {}", p(t)));
            Ok(())
        }
        fn pivot(&self, n: &Path) -> Result<()> {
            self.push(format!("pivot {}", p(n)));
            Ok(())
        }
        fn move_chroot(&self, n: &Path) -> Result<()> {
            self.push(format!("chroot {}", p(n)));
            Ok(())
        }
        fn mkdir_all(&self, path: &Path) -> Result<()> {
            self.fs.borrow_mut().insert(path.into(), (Kind::Dir, None));
            self.push(format!("mkdir {}", p(path)));
            Ok(())
        }
        fn touch(&self, path: &Path) -> Result<()> {
            self.fs.borrow_mut().insert(path.into(), (Kind::File, None));
            self.push(format!("touch {}", p(path)));
            Ok(())
        }
        fn mknod(&self, path: &Path, _k: SFlag, perm: u32, dev: u64) -> Result<()> {
            self.fs.borrow_mut().insert(path.into(), (Kind::File, None));
            self.push(format!("mknod {} {perm:o} {dev}", p(path)));
            Ok(())
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
            self.push(format!("chown {} {uid}:{gid}", p(path)));
            Ok(())
        }
        fn symlink(&self, t: &Path, l: &Path) -> Result<()> {
            self.push(format!("symlink {} -> {}", p(l), p(t)));
            Ok(())
        }
        fn kind(&self, path: &Path) -> Option<Kind> {
            self.fs.borrow().get(path).map(|(k, _)| *k)
        }
        fn readlink(&self, path: &Path) -> Option<PathBuf> {
            self.fs.borrow().get(path).and_then(|(_, t)| t.clone())
        }
        fn locked_flags(&self, _path: &Path) -> MsFlags {
            MsFlags::empty()
        }
    }
}
