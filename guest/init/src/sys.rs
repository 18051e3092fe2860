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

/// `KVM_CREATE_VM`, `KVM_CREATE_IRQCHIP`, `KVM_CREATE_VCPU` (`_IO(0xAE, n)`).
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_CREATE_IRQCHIP: libc::c_ulong = 0xAE60;

/// Creates an idle KVM VM: an in-kernel irqchip where the architecture
/// has that ioctl (x86) and one vCPU that is never run. Returns the open
/// descriptors (/dev/kvm, VM, vCPU); the VM lives as long as they do.
pub fn kvm_idle_vm() -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let kvm: OwnedFd = File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")?
        .into();
    let fd = |r: libc::c_int| -> io::Result<OwnedFd> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: `r` is a new descriptor the kernel just returned to us.
            Ok(unsafe { OwnedFd::from_raw_fd(r) })
        }
    };
    // SAFETY: plain ioctls on descriptors we own; the argument is an integer
    // (machine type 0 / vCPU id 0 / none), no memory is passed.
    let vm = fd(unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM as _, 0) })?;
    // Best effort: only x86 (and s390x with the capability) have it.
    // SAFETY: as above.
    let _ = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_IRQCHIP as _, 0) };
    // SAFETY: as above.
    let vcpu = fd(unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU as _, 0) })?;
    Ok(vec![kvm, vm, vcpu])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this host's /dev/kvm when there is one: three live descriptors,
    /// and the VM accepts no second vCPU 0 (so it really exists).
    #[test]
    fn idle_vm_holds_a_vm_and_a_vcpu() {
        let Ok(kvm) = File::options().read(true).write(true).open("/dev/kvm") else {
            eprintln!("SKIP idle_vm_holds_a_vm_and_a_vcpu: no usable /dev/kvm");
            return;
        };
        // KVM_GET_API_VERSION: qemu-user does not pass KVM ioctls through
        // (ENOSYS), and a foreign-arch binary has no KVM of its own anyway.
        // SAFETY: an ioctl without an argument on a descriptor we own.
        if unsafe { libc::ioctl(kvm.as_raw_fd(), 0xAE00 as _, 0) } != 12 {
            eprintln!(
                "SKIP idle_vm_holds_a_vm_and_a_vcpu: KVM_GET_API_VERSION: {}",
                io::Error::last_os_error()
            );
            return;
        }
        let fds = kvm_idle_vm().expect("idle VM");
        assert_eq!(fds.len(), 3);
        // SAFETY: ioctl on our own VM descriptor with an integer argument.
        let again = unsafe { libc::ioctl(fds[1].as_raw_fd(), KVM_CREATE_VCPU as _, 0) };
        assert!(again < 0, "a second vCPU 0 was accepted");
        assert_eq!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EEXIST)
        );
    }
}
