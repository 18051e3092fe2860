//! Recognizing an x86_64 kernel image before loading it: bzImage or ELF
//! vmlinux (with or without a Xen PVH entry note), and how much guest RAM it
//! needs. Reads the file with explicit little-endian decoding, so it works
//! and is tested on every host.

use std::io::{Read, Seek, SeekFrom};

/// What kind of kernel the file is, with what the VMM needs to boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelInfo {
    /// A bzImage: 64-bit entry at `load + 0x200`, boot_params in rsi.
    BzImage {
        /// The raw setup header bytes, from file offset 0x1f1, for the zero page.
        setup_header: Vec<u8>,
        /// Where the protected-mode part is loaded (code32_start).
        load: u64,
        /// Guest RAM end the kernel needs to decompress and start.
        needs_end: u64,
        /// Longest command line the kernel accepts (without NUL).
        cmdline_size: u32,
        /// Highest address the initrd may end at.
        initrd_addr_max: u64,
    },
    /// An ELF vmlinux.
    Elf {
        /// The ELF entry (64-bit boot protocol, like Firecracker).
        entry: u64,
        /// The PVH 32-bit entry from the Xen note type 18, if present.
        pvh_entry: Option<u64>,
        /// End of the highest PT_LOAD segment in guest-physical memory.
        needs_end: u64,
        /// Lowest PT_LOAD guest-physical address.
        lowest: u64,
    },
}

impl KernelInfo {
    /// Guest RAM end the kernel needs.
    pub fn needs_end(&self) -> u64 {
        match self {
            KernelInfo::BzImage { needs_end, .. } | KernelInfo::Elf { needs_end, .. } => *needs_end,
        }
    }
}

/// Why a file is not a kernel we can boot.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Zero-length file.
    #[error("the kernel file is empty")]
    Empty,
    /// Neither magic matched.
    #[error("not a Linux kernel (neither an x86_64 ELF vmlinux nor a bzImage)")]
    NotAKernel,
    /// An ELF for something else.
    #[error("unsupported ELF kernel: {0}")]
    BadElf(&'static str),
    /// A bzImage we cannot enter in 64-bit mode.
    #[error("unsupported bzImage: {0}")]
    BadBzImage(String),
    /// Reading the file failed.
    #[error("cannot read the kernel: {0}")]
    Io(#[from] std::io::Error),
}

/// Xen ELF note type of the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const MAX_PHDRS: u16 = 256;
/// Default `cmdline_size` for kernels whose header predates the field.
const DEFAULT_CMDLINE_SIZE: u32 = 2047;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(off))?;
    let mut v = vec![0; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Inspects a kernel image.
pub fn inspect<R: Read + Seek>(r: &mut R) -> Result<KernelInfo, KernelError> {
    let len = r.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Err(KernelError::Empty);
    }
    let head = read_at(r, 0, len.min(0x400) as usize)?;
    if head.starts_with(b"\x7fELF") {
        return inspect_elf(r, &head, len);
    }
    if head.len() >= 0x270 && &head[0x202..0x206] == b"HdrS" {
        return inspect_bzimage(&head, len);
    }
    Err(KernelError::NotAKernel)
}

fn inspect_bzimage(h: &[u8], len: u64) -> Result<KernelInfo, KernelError> {
    let bad = |s: String| Err(KernelError::BadBzImage(s));
    let version = u16_at(h, 0x206);
    if version < 0x020c {
        return bad(format!(
            "boot protocol {}.{:02} is older than 2.12",
            version >> 8,
            version & 0xff
        ));
    }
    let xloadflags = u16_at(h, 0x236);
    if xloadflags & 1 == 0 {
        return bad("the kernel has no 64-bit entry point (XLF_KERNEL_64)".into());
    }
    if h[0x211] & 1 == 0 {
        return bad("the kernel is not loaded high (LOADED_HIGH unset)".into());
    }
    let setup_sects = match h[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let setup_len = (setup_sects + 1) * 512;
    if len <= setup_len {
        return bad("the file ends inside the real-mode setup code".into());
    }
    let payload = len - setup_len;
    let hdr_end = (0x202 + usize::from(h[0x201]))
        .clamp(0x26c, 0x290)
        .min(h.len());
    let load = u64::from(u32_at(h, 0x214));
    let init_size = u64::from(u32_at(h, 0x260));
    let pref = u64_at(h, 0x258);
    let needs_end = load
        .max(pref)
        .checked_add(init_size.max(payload))
        .ok_or_else(|| KernelError::BadBzImage("init_size overflows".into()))?;
    let cmdline_size = match u32_at(h, 0x238) {
        0 => DEFAULT_CMDLINE_SIZE,
        n => n,
    };
    let initrd_addr_max = match u32_at(h, 0x22c) {
        0 => 0x37ff_ffff,
        n => u64::from(n),
    };
    Ok(KernelInfo::BzImage {
        setup_header: h[0x1f1..hdr_end].to_vec(),
        load,
        needs_end,
        cmdline_size,
        initrd_addr_max,
    })
}

fn inspect_elf<R: Read + Seek>(r: &mut R, h: &[u8], len: u64) -> Result<KernelInfo, KernelError> {
    let bad = |s| Err(KernelError::BadElf(s));
    if h.len() < 64 {
        return bad("truncated ELF header");
    }
    if h[4] != 2 {
        return bad("not a 64-bit ELF");
    }
    if h[5] != 1 {
        return bad("not a little-endian ELF");
    }
    if u16_at(h, 18) != 62 {
        return bad("not an x86_64 ELF");
    }
    let entry = u64_at(h, 24);
    let phoff = u64_at(h, 32);
    let phentsize = u16_at(h, 54);
    let phnum = u16_at(h, 56);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PHDRS {
        return bad("invalid program headers");
    }
    let table_len = u64::from(phnum) * 56;
    if phoff.checked_add(table_len).is_none_or(|e| e > len) {
        return bad("program headers lie outside the file");
    }
    let ph = read_at(r, phoff, table_len as usize)?;
    let (mut lowest, mut end, mut pvh_entry) = (u64::MAX, 0u64, None);
    for p in ph.chunks_exact(56) {
        let (ty, off, paddr) = (u32_at(p, 0), u64_at(p, 8), u64_at(p, 24));
        let (filesz, memsz) = (u64_at(p, 32), u64_at(p, 40));
        if off.checked_add(filesz).is_none_or(|e| e > len) {
            return bad("a segment lies outside the file");
        }
        match ty {
            PT_LOAD => {
                if filesz > memsz {
                    return bad("a segment's file size exceeds its memory size");
                }
                let e = paddr.checked_add(memsz);
                let Some(e) = e else {
                    return bad("a segment overflows the address space");
                };
                lowest = lowest.min(paddr);
                end = end.max(e);
            }
            PT_NOTE if pvh_entry.is_none() && filesz <= 1 << 20 => {
                let notes = read_at(r, off, filesz as usize)?;
                pvh_entry = find_pvh_note(&notes);
            }
            _ => {}
        }
    }
    if end == 0 {
        return bad("no loadable segments");
    }
    Ok(KernelInfo::Elf {
        entry,
        pvh_entry,
        needs_end: end,
        lowest,
    })
}

/// Finds the Xen PVH entry in a block of ELF notes.
pub fn find_pvh_note(mut n: &[u8]) -> Option<u64> {
    let align4 = |x: usize| x.checked_add(3).map(|v| v & !3);
    while n.len() >= 12 {
        let namesz = u32_at(n, 0) as usize;
        let descsz = u32_at(n, 4) as usize;
        let ty = u32_at(n, 8);
        let name_end = 12usize.checked_add(align4(namesz)?)?;
        let desc_end = name_end.checked_add(align4(descsz)?)?;
        if desc_end > n.len() {
            return None;
        }
        if ty == XEN_ELFNOTE_PHYS32_ENTRY && &n[12..12 + namesz.min(4)] == b"Xen\0" {
            return match descsz {
                4 => Some(u64::from(u32_at(n, name_end))),
                8 => Some(u64_at(n, name_end)),
                _ => None,
            };
        }
        n = &n[desc_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn elf(notes: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        // PT_LOAD: 0x100 bytes at file 0x100 -> 0x200000, memsz 0x3000.
        let p = &mut f[64..120];
        p[0..4].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&0x100u64.to_le_bytes());
        p[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        p[32..40].copy_from_slice(&0x100u64.to_le_bytes());
        p[40..48].copy_from_slice(&0x3000u64.to_le_bytes());
        // PT_NOTE at file 0x180.
        let p = &mut f[120..176];
        p[0..4].copy_from_slice(&4u32.to_le_bytes());
        p[8..16].copy_from_slice(&0x180u64.to_le_bytes());
        p[32..40].copy_from_slice(&(notes.len() as u64).to_le_bytes());
        f[0x180..0x180 + notes.len()].copy_from_slice(notes);
        f
    }

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((name.len() as u32).to_le_bytes());
        v.extend((desc.len() as u32).to_le_bytes());
        v.extend(ty.to_le_bytes());
        v.extend(name);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v.extend(desc);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    #[test]
    fn elf_with_and_without_pvh() {
        let mut notes = note(b"GNU\0", 3, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(note(b"Xen\0", 18, &0x20_0040u32.to_le_bytes()));
        let info = inspect(&mut Cursor::new(elf(&notes))).unwrap();
        assert_eq!(
            info,
            KernelInfo::Elf {
                entry: 0x20_0000,
                pvh_entry: Some(0x20_0040),
                needs_end: 0x20_3000,
                lowest: 0x20_0000
            }
        );
        let plain = note(b"Xen\0", 17, &0x20_0040u32.to_le_bytes());
        match inspect(&mut Cursor::new(elf(&plain))).unwrap() {
            KernelInfo::Elf { pvh_entry, .. } => assert_eq!(pvh_entry, None),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn hostile_notes_do_not_panic() {
        assert_eq!(find_pvh_note(&[0xff; 40]), None);
        let mut n = note(b"Xen\0", 18, &[1, 2, 3, 4]);
        n[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(find_pvh_note(&n), None);
    }

    fn bzimage() -> Vec<u8> {
        let mut f = vec![0u8; 3 * 512 + 0x1000];
        f[0x1f1] = 2;
        f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        f[0x201] = 0x6a;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        f[0x211] = 1;
        f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        f[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        f[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes());
        f
    }

    #[test]
    fn bzimage_header() {
        match inspect(&mut Cursor::new(bzimage())).unwrap() {
            KernelInfo::BzImage {
                setup_header,
                load,
                needs_end,
                cmdline_size,
                initrd_addr_max,
            } => {
                assert_eq!(setup_header.len(), 0x26c - 0x1f1);
                assert_eq!(&setup_header[0x202 - 0x1f1..0x206 - 0x1f1], b"HdrS");
                assert_eq!(load, 0x10_0000);
                assert_eq!(needs_end, 0x20_0000);
                assert_eq!(cmdline_size, 2047);
                assert_eq!(initrd_addr_max, 0x37ff_ffff);
            }
            k => panic!("{k:?}"),
        }
        let mut old = bzimage();
        old[0x236] = 0;
        assert!(matches!(
            inspect(&mut Cursor::new(old)),
            Err(KernelError::BadBzImage(_))
        ));
    }

    #[test]
    fn junk_is_not_a_kernel() {
        assert!(matches!(
            inspect(&mut Cursor::new(Vec::new())),
            Err(KernelError::Empty)
        ));
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(matches!(
            inspect(&mut Cursor::new(junk)),
            Err(KernelError::NotAKernel)
        ));
        let mut e = elf(&[]);
        e[18] = 3;
        assert!(matches!(
            inspect(&mut Cursor::new(e)),
            Err(KernelError::BadElf(_))
        ));
        let mut e = elf(&[]);
        e[56] = 200; // program headers past the end
        assert!(matches!(
            inspect(&mut Cursor::new(e)),
            Err(KernelError::BadElf(_))
        ));
    }
}
