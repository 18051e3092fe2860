//! A tap device with virtio-net headers (`/dev/net/tun`, `IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR`). Raw ioctls live here and nowhere else.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the virtio-net header (virtio 1.x always carries `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFNAMSIZ: usize = 16;

/// Offload flags for `TUNSETOFFLOAD`.
pub mod offload {
    /// Guest may receive partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCPv4 segmentation offload.
    pub const TSO4: u32 = 0x02;
    /// TCPv6 segmentation offload.
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN.
    pub const TSO_ECN: u32 = 0x08;
    /// UDP fragmentation offload.
    pub const UFO: u32 = 0x10;
}

// _IOW/_IOR('T', nr, int) with the generic ioctl encoding (x86, arm64, s390x).
const fn ioc(dir: u64, nr: u64) -> u64 {
    (dir << 30) | (4 << 16) | ((b'T' as u64) << 8) | nr
}
const TUNSETIFF: u64 = ioc(1, 202);
const TUNSETOFFLOAD: u64 = ioc(1, 208);
const TUNGETIFF: u64 = ioc(2, 210);
const TUNSETVNETHDRSZ: u64 = ioc(1, 216);
const TUNSETVNETLE: u64 = ioc(1, 220);

/// An open tap.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

/// Errors opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Name empty or too long.
    #[error("invalid tap name {0:?} (1 to 15 bytes, no '/')")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// An ioctl failed.
    #[error("tap {name}: {what} failed: {source}")]
    Ioctl {
        /// Tap name.
        name: String,
        /// Which ioctl.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// A given fd is not a tap with vnet headers.
    #[error("fd {0} is not a tap opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR")]
    NotVnetTap(i32),
}

fn ioctl_ptr(fd: &File, req: u64, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a pointer to a live buffer of the size `req`
    // encodes (an ifreq or an int); the kernel accesses only that.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Tap {
    /// Opens (or creates) tap `name`.
    pub fn open(name: &str) -> Result<Self, TapError> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('/') || name.contains('\0') {
            return Err(TapError::Name(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
        ioctl_ptr(&file, TUNSETIFF, ifr.as_mut_ptr().cast()).map_err(|source| TapError::Ioctl {
            name: name.to_string(),
            what: "TUNSETIFF",
            source,
        })?;
        let name = ifr_name(&ifr);
        let tap = Self { file, name };
        tap.setup_vnet()?;
        Ok(tap)
    }

    /// Takes an already open tap fd (e.g. passed by a management stack).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, TapError> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut ifr = [0u8; 40];
        ioctl_ptr(&file, TUNGETIFF, ifr.as_mut_ptr().cast())
            .map_err(|_| TapError::NotVnetTap(raw))?;
        let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
        if flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) != IFF_TAP | IFF_NO_PI | IFF_VNET_HDR {
            return Err(TapError::NotVnetTap(raw));
        }
        // SAFETY: fcntl on an fd we own; no memory is passed.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::NotVnetTap(raw));
        }
        let tap = Self {
            file,
            name: ifr_name(&ifr),
        };
        tap.setup_vnet()?;
        Ok(tap)
    }

    fn setup_vnet(&self) -> Result<(), TapError> {
        let mut sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
        self.ioctl(
            TUNSETVNETHDRSZ,
            "TUNSETVNETHDRSZ",
            (&mut sz as *mut libc::c_int).cast(),
        )?;
        // virtio 1.x headers are little-endian whatever the host is.
        let mut le: libc::c_int = 1;
        self.ioctl(
            TUNSETVNETLE,
            "TUNSETVNETLE",
            (&mut le as *mut libc::c_int).cast(),
        )
    }

    fn ioctl(&self, req: u64, what: &'static str, arg: *mut libc::c_void) -> Result<(), TapError> {
        ioctl_ptr(&self.file, req, arg).map_err(|source| TapError::Ioctl {
            name: self.name.clone(),
            what,
            source,
        })
    }

    /// Sets what the kernel may hand us un-checksummed / unsegmented.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // TUNSETOFFLOAD takes the flags as the argument value itself.
        // SAFETY: no memory is passed; the argument is an integer.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                TUNSETOFFLOAD as _,
                flags as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name the kernel chose or confirmed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tap's file (non-blocking).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A second handle on the same tap queue.
    pub fn try_clone(&self) -> io::Result<Self> {
        // File::try_clone duplicates with F_DUPFD_CLOEXEC.
        Ok(Self {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }
}

fn ifr_name(ifr: &[u8; 40]) -> String {
    let end = ifr[..IFNAMSIZ]
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(IFNAMSIZ);
    String::from_utf8_lossy(&ifr[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(TUNSETIFF, 0x4004_54ca);
        assert_eq!(TUNSETOFFLOAD, 0x4004_54d0);
        assert_eq!(TUNGETIFF, 0x8004_54d2);
        assert_eq!(TUNSETVNETHDRSZ, 0x4004_54d8);
        assert_eq!(TUNSETVNETLE, 0x4004_54dc);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(Tap::open(""), Err(TapError::Name(_))));
        assert!(matches!(
            Tap::open("0123456789abcdef"),
            Err(TapError::Name(_))
        ));
        assert!(matches!(Tap::open("a/b"), Err(TapError::Name(_))));
    }
}
