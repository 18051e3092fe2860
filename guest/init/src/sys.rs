//! The few system calls init needs that std does not wrap.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mount(source, target, fstype, 0, NULL)`.
pub fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    let (s, t, f) = (
        cstr(source.as_bytes())?,
        cstr(target.as_bytes())?,
        cstr(fstype.as_bytes())?,
    );
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; a null data pointer is allowed.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) })
}

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the module.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads a kernel module with `finit_module` and `params` (`a=1 b=2`).
/// Compressed modules (`.xz`, `.zst`, `.gz`) are handed to the kernel to
/// decompress.
pub fn load_module(path: &Path, params: &str) -> io::Result<()> {
    let f = File::open(path)?;
    let compressed = path
        .extension()
        .is_some_and(|e| matches!(e.as_bytes(), b"xz" | b"zst" | b"gz"));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = cstr(params.as_bytes())?;
    // SAFETY: the fd is open for the duration of the call and `params` is a
    // valid NUL-terminated string; finit_module does not retain either.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates a character device node.
pub fn mknod_char(path: &str, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path.as_bytes())?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `p` is a valid NUL-terminated path for the call's duration.
    check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, dev) })
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        // c_char is i8 or u8 depending on the target: take its byte.
        .map(|&c| c.to_ne_bytes()[0])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Flushes filesystems and powers the machine off (or reboots it).
/// Returns only on failure.
pub fn halt(reboot: bool) -> io::Error {
    let how = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    // SAFETY: reboot with a valid command constant; it only returns on error.
    unsafe { libc::reboot(how) };
    io::Error::last_os_error()
}
