//! A writer for the "newc" cpio format (`070701`), the format the Linux
//! kernel unpacks into its initial rootfs (see the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Entries get deterministic metadata (uid/gid 0, mtime 0, inode numbers in
//! write order), so the same inputs give byte-identical archives. Missing
//! parent directories are emitted automatically, because the kernel does not
//! create them when it unpacks a file.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

/// Errors while writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The path is empty, has `..`, `.` or empty components, or is too long.
    #[error("invalid archive path {0:?}")]
    BadPath(String),
    /// The same path was written twice.
    #[error("duplicate archive path {0:?}")]
    Duplicate(String),
    /// The data did not have the declared size.
    #[error("{path}: expected {expected} bytes of data, got {got}")]
    SizeMismatch {
        /// Archive path.
        path: String,
        /// Declared size.
        expected: u64,
        /// Bytes actually read.
        got: u64,
    },
    /// A field does not fit in the format's 32-bit header fields.
    #[error("{0}: too large for a newc header")]
    TooLarge(String),
    /// The archive is already finished.
    #[error("archive already finished")]
    Finished,
    /// Writing to the output failed.
    #[error("write failed")]
    Io(#[from] io::Error),
}

/// File type bits of `st_mode`.
pub mod mode {
    /// Directory.
    pub const DIR: u32 = 0o040_000;
    /// Regular file.
    pub const FILE: u32 = 0o100_000;
    /// Symbolic link.
    pub const SYMLINK: u32 = 0o120_000;
    /// Character device.
    pub const CHAR: u32 = 0o020_000;
}

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
/// Longest path accepted (the kernel's PATH_MAX is 4096 including the NUL).
const MAX_PATH: usize = 4095;

/// The fields of one newc header that vary between entries.
#[derive(Debug, Clone, Copy)]
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// Streams a newc archive into `W`.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    paths: BTreeSet<String>,
    finished: bool,
}

/// Validates an archive path and returns it without leading `/`.
pub fn normalize_path(path: &str) -> Result<String, CpioError> {
    let p = path.trim_start_matches('/');
    let bad = p.is_empty()
        || p.len() > MAX_PATH
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(p.to_string())
}

fn padding(len: u64) -> usize {
    // Lossless: the result is always below 4.
    ((4 - (len % 4)) % 4) as usize
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            paths: BTreeSet::new(),
            finished: false,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let n = padding(self.written);
        self.put(&[0u8; 3][..n])
    }

    fn header(&mut self, name: &str, h: Header) -> Result<(), CpioError> {
        let namesize =
            u32::try_from(name.len() + 1).map_err(|_| CpioError::TooLarge(name.into()))?;
        let fields = [
            h.ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime
            h.filesize,
            0, // dev major
            0, // dev minor
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check
        ];
        let mut buf = Vec::with_capacity(110 + name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        self.put(&buf)?;
        self.pad()
    }

    /// Claims `path` (normalized), creating missing parent directories first.
    fn claim(&mut self, path: &str) -> Result<String, CpioError> {
        if self.finished {
            return Err(CpioError::Finished);
        }
        let p = normalize_path(path)?;
        if self.paths.contains(&p) {
            return Err(CpioError::Duplicate(p));
        }
        let mut parent = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            if !self.paths.contains(&parent) {
                let dir = parent.clone();
                self.entry(&dir, mode::DIR | 0o755, 2, 0, (0, 0))?;
            }
        }
        Ok(p)
    }

    fn entry(
        &mut self,
        p: &str,
        mode: u32,
        nlink: u32,
        filesize: u32,
        rdev: (u32, u32),
    ) -> Result<(), CpioError> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(p.to_string());
        self.header(
            p,
            Header {
                ino,
                mode,
                nlink,
                filesize,
                rdev_major: rdev.0,
                rdev_minor: rdev.1,
            },
        )
    }

    /// Adds a directory with permission bits `perm`. Adding a directory that
    /// was already created implicitly is an error, so add directories first.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let p = self.claim(path)?;
        self.entry(&p, mode::DIR | (perm & 0o7777), 2, 0, (0, 0))
    }

    /// Adds a regular file whose `size` bytes come from `data`.
    pub fn file_from_reader(
        &mut self,
        path: &str,
        perm: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), CpioError> {
        let size32 = u32::try_from(size).map_err(|_| CpioError::TooLarge(path.into()))?;
        let p = self.claim(path)?;
        self.entry(&p, mode::FILE | (perm & 0o7777), 1, size32, (0, 0))?;
        let start = self.written;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        self.written = start + copied;
        if copied != size {
            return Err(CpioError::SizeMismatch {
                path: p,
                expected: size,
                got: copied,
            });
        }
        self.pad()
    }

    /// Adds a regular file with the given contents.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let mut r = data;
        self.file_from_reader(path, perm, data.len() as u64, &mut r)
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadPath(target.to_string()));
        }
        let size = u32::try_from(target.len()).map_err(|_| CpioError::TooLarge(path.into()))?;
        let p = self.claim(path)?;
        self.entry(&p, mode::SYMLINK | 0o777, 1, size, (0, 0))?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// Adds a character device node (e.g. `/dev/console` = 5:1), which lets
    /// the kernel open the console for init before devtmpfs is mounted.
    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let p = self.claim(path)?;
        self.entry(&p, mode::CHAR | (perm & 0o7777), 1, 0, (major, minor))
    }

    /// Writes the trailer and returns the output and the archive's size.
    pub fn finish(mut self) -> Result<(W, u64), CpioError> {
        if self.finished {
            return Err(CpioError::Finished);
        }
        self.header(
            TRAILER,
            Header {
                ino: 0,
                mode: 0,
                nlink: 1,
                filesize: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
        )?;
        self.finished = true;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed entry: (name, mode, filesize, rdev major, rdev minor, data).
    type Parsed = (String, u32, u32, u32, u32, Vec<u8>);

    /// An independent reader, following the format description.
    fn parse(mut b: &[u8]) -> Vec<Parsed> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            let off = total - b.len();
            assert_eq!(off % 4, 0, "header at unaligned offset {off}");
            assert_eq!(&b[..6], MAGIC);
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&b[110..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[name_end - 1], 0);
            let data_start = name_end + padding(name_end as u64);
            let data = b[data_start..data_start + size as usize].to_vec();
            let next = data_start + size as usize;
            let next = next + padding(next as u64);
            b = &b[next..];
            if name == TRAILER {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, size, rmaj, rmin, data));
        }
    }

    #[test]
    fn empty_archive_is_just_a_trailer() {
        let (buf, n) = CpioWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(n as usize, buf.len());
        // 110-byte header + "TRAILER!!!\0" (11) = 121, padded to 124.
        assert_eq!(buf.len(), 124);
        assert!(buf.starts_with(b"070701"));
        assert_eq!(&buf[110..121], b"TRAILER!!!\0");
        assert!(parse(&buf).is_empty());
    }

    #[test]
    fn header_fields_are_exact() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("init", 0o755, b"abc").unwrap();
        let (buf, _) = w.finish().unwrap();
        let expected_header = concat!(
            "070701", "00000001", "000081ED", "00000000", "00000000", "00000001", "00000000",
            "00000003", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
        );
        assert_eq!(&buf[..110], expected_header.as_bytes());
        // name "init\0" ends at 115, padded to 116; data "abc" + 1 pad byte.
        assert_eq!(&buf[110..116], b"init\0\0");
        assert_eq!(&buf[116..120], b"abc\0");
    }

    #[test]
    fn round_trip_of_all_entry_kinds() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        w.file("/etc/zvisor/modules", 0o644, b"/lib/modules/kvm.ko\n")
            .unwrap();
        w.symlink("/sbin/init", "/init").unwrap();
        for len in 0..6 {
            let data = vec![b'x'; len];
            w.file(&format!("pad/{len}"), 0o600, &data).unwrap();
        }
        let (buf, _) = w.finish().unwrap();
        let e = parse(&buf);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/zvisor",
                "etc/zvisor/modules",
                "sbin",
                "sbin/init",
                "pad",
                "pad/0",
                "pad/1",
                "pad/2",
                "pad/3",
                "pad/4",
                "pad/5"
            ]
        );
        assert_eq!(e[0].1, mode::DIR | 0o755);
        assert_eq!((e[1].1, e[1].3, e[1].4), (mode::CHAR | 0o600, 5, 1));
        assert_eq!(e[4].5, b"/lib/modules/kvm.ko\n");
        assert_eq!(
            (e[6].1, e[6].5.as_slice()),
            (mode::SYMLINK | 0o777, &b"/init"[..])
        );
        for len in 0..6 {
            assert_eq!(e[8 + len].5.len(), len);
        }
    }

    #[test]
    fn output_is_deterministic() {
        let build = || {
            let mut w = CpioWriter::new(Vec::new());
            w.file("a/b/c", 0o644, b"hello").unwrap();
            w.finish().unwrap().0
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn rejects_bad_and_duplicate_paths() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/", "a/../b", "./a", "a//b", "a/.", "x\0y"] {
            assert!(
                matches!(w.file(bad, 0o644, b""), Err(CpioError::BadPath(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            w.file(&"a".repeat(5000), 0o644, b""),
            Err(CpioError::BadPath(_))
        ));
        w.file("/x", 0o644, b"1").unwrap();
        assert!(matches!(
            w.file("x", 0o644, b"2"),
            Err(CpioError::Duplicate(_))
        ));
        // A directory created implicitly cannot be added again.
        w.file("d/f", 0o644, b"").unwrap();
        assert!(matches!(w.dir("d", 0o755), Err(CpioError::Duplicate(_))));
        assert!(matches!(w.symlink("l", ""), Err(CpioError::BadPath(_))));
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let mut r: &[u8] = b"12";
        let err = w.file_from_reader("f", 0o644, 5, &mut r).unwrap_err();
        assert!(matches!(
            err,
            CpioError::SizeMismatch {
                expected: 5,
                got: 2,
                ..
            }
        ));
    }

    #[test]
    fn mode_strips_type_bits_from_permissions() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("f", 0o170_777, b"").unwrap();
        let (buf, _) = w.finish().unwrap();
        assert_eq!(parse(&buf)[0].1, mode::FILE | 0o777);
    }
}
