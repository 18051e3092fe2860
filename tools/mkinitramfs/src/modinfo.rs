//! Reads the `.modinfo` section of a kernel module (an ELF relocatable file)
//! to learn its name and its `depends=` list, without running `modinfo`.
//! Works for 32/64-bit and little/big-endian modules, so an s390x module can
//! be inspected on an x86 host and vice versa.

/// Errors while reading a module's metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModinfoError {
    /// Not an ELF file, or a header field is out of range.
    #[error("not a valid ELF file: {0}")]
    BadElf(&'static str),
    /// The file has no `.modinfo` section.
    #[error("no .modinfo section (not a kernel module?)")]
    NoModinfo,
    /// The module is compressed; decompress it first.
    #[error("compressed module ({0}); decompress it first")]
    Compressed(&'static str),
}

/// The metadata this tool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, if present (modules built by kbuild always have it).
    pub name: Option<String>,
    /// `depends=`, split on commas; empty entries dropped.
    pub depends: Vec<String>,
}

/// Normalizes a module name the way the kernel does (`-` and `_` are equal).
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

struct Elf<'a> {
    b: &'a [u8],
    big: bool,
    wide: bool,
}

impl<'a> Elf<'a> {
    fn uint(&self, off: usize, len: usize) -> Result<u64, ModinfoError> {
        let s = self
            .b
            .get(
                off..off
                    .checked_add(len)
                    .ok_or(ModinfoError::BadElf("offset overflow"))?,
            )
            .ok_or(ModinfoError::BadElf("field beyond end of file"))?;
        let mut v = 0u64;
        if self.big {
            for &x in s {
                v = (v << 8) | u64::from(x);
            }
        } else {
            for &x in s.iter().rev() {
                v = (v << 8) | u64::from(x);
            }
        }
        Ok(v)
    }

    fn addr(&self, off: usize) -> Result<usize, ModinfoError> {
        let v = self.uint(off, if self.wide { 8 } else { 4 })?;
        usize::try_from(v).map_err(|_| ModinfoError::BadElf("offset too large"))
    }

    fn half(&self, off: usize) -> Result<usize, ModinfoError> {
        // Lossless: 16-bit value.
        Ok(self.uint(off, 2)? as usize)
    }

    fn word(&self, off: usize) -> Result<usize, ModinfoError> {
        usize::try_from(self.uint(off, 4)?).map_err(|_| ModinfoError::BadElf("offset too large"))
    }

    /// (name offset, file offset, size) of section `i`.
    fn section(
        &self,
        shoff: usize,
        shentsize: usize,
        i: usize,
    ) -> Result<(usize, usize, usize), ModinfoError> {
        let base = i
            .checked_mul(shentsize)
            .and_then(|x| x.checked_add(shoff))
            .ok_or(ModinfoError::BadElf("section header offset overflow"))?;
        let name = self.word(base)?;
        let (off, size) = if self.wide {
            (self.addr(base + 0x18)?, self.addr(base + 0x20)?)
        } else {
            (self.addr(base + 0x10)?, self.addr(base + 0x14)?)
        };
        Ok((name, off, size))
    }

    fn bytes(&self, off: usize, size: usize) -> Result<&'a [u8], ModinfoError> {
        off.checked_add(size)
            .and_then(|end| self.b.get(off..end))
            .ok_or(ModinfoError::BadElf("section beyond end of file"))
    }
}

/// Returns the raw contents of the `.modinfo` section of an ELF module.
pub fn modinfo_section(b: &[u8]) -> Result<&[u8], ModinfoError> {
    if b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ModinfoError::Compressed("xz"));
    }
    if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ModinfoError::Compressed("zstd"));
    }
    if b.starts_with(&[0x1f, 0x8b]) {
        return Err(ModinfoError::Compressed("gzip"));
    }
    if b.len() < 0x34 || &b[..4] != b"\x7fELF" {
        return Err(ModinfoError::BadElf("no ELF magic"));
    }
    let wide = match b[4] {
        1 => false,
        2 => true,
        _ => return Err(ModinfoError::BadElf("bad ELF class")),
    };
    let big = match b[5] {
        1 => false,
        2 => true,
        _ => return Err(ModinfoError::BadElf("bad ELF data encoding")),
    };
    let e = Elf { b, big, wide };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (e.addr(0x28)?, e.half(0x3a)?, e.half(0x3c)?, e.half(0x3e)?)
    } else {
        (e.addr(0x20)?, e.half(0x2e)?, e.half(0x30)?, e.half(0x32)?)
    };
    let min_ent = if wide { 0x40 } else { 0x28 };
    if shentsize < min_ent {
        return Err(ModinfoError::BadElf("section header entry too small"));
    }
    if shstrndx >= shnum {
        return Err(ModinfoError::BadElf(
            "section name table index out of range",
        ));
    }
    let (_, stroff, strsize) = e.section(shoff, shentsize, shstrndx)?;
    let strtab = e.bytes(stroff, strsize)?;
    for i in 0..shnum {
        let (name, off, size) = e.section(shoff, shentsize, i)?;
        let Some(rest) = strtab.get(name..) else {
            continue;
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        if &rest[..end] == b".modinfo" {
            return e.bytes(off, size);
        }
    }
    Err(ModinfoError::NoModinfo)
}

/// Parses a module's metadata from its ELF bytes.
pub fn parse(b: &[u8]) -> Result<ModInfo, ModinfoError> {
    let sec = modinfo_section(b)?;
    let mut info = ModInfo {
        name: None,
        depends: Vec::new(),
    };
    for entry in sec.split(|&c| c == 0) {
        let Ok(s) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(v) = s.strip_prefix("name=") {
            info.name = Some(v.to_string());
        } else if let Some(v) = s.strip_prefix("depends=") {
            info.depends = v
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    Ok(info)
}

/// Builds a minimal relocatable ELF with the given sections (for tests).
#[cfg(test)]
pub(crate) fn test_elf(wide: bool, big: bool, sections: &[(&str, &[u8])]) -> Vec<u8> {
    let put = |v: &mut Vec<u8>, x: u64, n: usize| {
        let bytes = x.to_le_bytes();
        if big {
            v.extend(bytes[..n].iter().rev());
        } else {
            v.extend(&bytes[..n]);
        }
    };
    let ehsize = if wide { 64 } else { 52 };
    let shentsize = if wide { 64 } else { 40 };
    let aw = if wide { 8 } else { 4 };
    // Section name table: "\0.shstrtab\0" + names.
    let mut strtab = b"\0.shstrtab\0".to_vec();
    let mut name_offs = Vec::new();
    for (n, _) in sections {
        name_offs.push(strtab.len());
        strtab.extend(n.as_bytes());
        strtab.push(0);
    }
    let mut data = Vec::new();
    let mut offs = Vec::new();
    for (_, d) in sections {
        offs.push(ehsize + data.len());
        data.extend(*d);
    }
    let str_off = ehsize + data.len();
    data.extend(&strtab);
    let shoff = ehsize + data.len();
    let shnum = sections.len() + 2;
    let mut v = vec![
        0x7f,
        b'E',
        b'L',
        b'F',
        if wide { 2 } else { 1 },
        if big { 2 } else { 1 },
        1,
    ];
    v.resize(16, 0);
    put(&mut v, 1, 2); // e_type REL
    put(&mut v, 0x16, 2); // e_machine
    put(&mut v, 1, 4); // e_version
    put(&mut v, 0, aw); // e_entry
    put(&mut v, 0, aw); // e_phoff
    put(&mut v, shoff as u64, aw);
    put(&mut v, 0, 4); // e_flags
    put(&mut v, ehsize as u64, 2);
    put(&mut v, 0, 2); // e_phentsize
    put(&mut v, 0, 2); // e_phnum
    put(&mut v, shentsize as u64, 2);
    put(&mut v, shnum as u64, 2);
    put(&mut v, (shnum - 1) as u64, 2); // e_shstrndx
    assert_eq!(v.len(), ehsize);
    v.extend(&data);
    let sh = |v: &mut Vec<u8>, name: usize, off: usize, size: usize| {
        put(v, name as u64, 4);
        put(v, 1, 4); // sh_type
        put(v, 0, aw); // flags
        put(v, 0, aw); // addr
        put(v, off as u64, aw);
        put(v, size as u64, aw);
        put(v, 0, 4); // link
        put(v, 0, 4); // info
        put(v, 1, aw); // addralign
        put(v, 0, aw); // entsize
    };
    sh(&mut v, 0, 0, 0);
    for (i, (_, d)) in sections.iter().enumerate() {
        sh(&mut v, name_offs[i], offs[i], d.len());
    }
    sh(&mut v, 1, str_off, strtab.len());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &[u8] =
        b"license=GPL\0depends=kvm,irqbypass\0retpoline=Y\0name=kvm_amd\0vermagic=6.1\0";

    #[test]
    fn parses_all_four_layouts() {
        for wide in [false, true] {
            for big in [false, true] {
                let elf = test_elf(wide, big, &[(".text", b"\x90\x90"), (".modinfo", INFO)]);
                let info = parse(&elf).unwrap();
                assert_eq!(
                    info.name.as_deref(),
                    Some("kvm_amd"),
                    "wide={wide} big={big}"
                );
                assert_eq!(info.depends, ["kvm", "irqbypass"]);
            }
        }
    }

    #[test]
    fn empty_depends_means_none() {
        let elf = test_elf(true, false, &[(".modinfo", b"depends=\0name=irqbypass\0")]);
        assert!(parse(&elf).unwrap().depends.is_empty());
    }

    #[test]
    fn missing_section_and_garbage_are_errors() {
        let elf = test_elf(true, false, &[(".text", b"x")]);
        assert_eq!(parse(&elf), Err(ModinfoError::NoModinfo));
        assert!(matches!(
            parse(b"not an elf at all, but long enough to have a header....."),
            Err(ModinfoError::BadElf(_))
        ));
        assert_eq!(
            parse(b"\xfd7zXZ\0...."),
            Err(ModinfoError::Compressed("xz"))
        );
        assert!(matches!(parse(b""), Err(ModinfoError::BadElf(_))));
    }

    #[test]
    fn truncated_or_hostile_headers_do_not_panic() {
        let elf = test_elf(true, true, &[(".modinfo", INFO)]);
        for cut in 0..elf.len() {
            let _ = parse(&elf[..cut]);
        }
        // Point the section headers far outside the file.
        let mut bad = elf.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(parse(&bad), Err(ModinfoError::BadElf(_))));
        // Flip every byte of the header area once.
        for i in 0..elf.len().min(0x40) {
            let mut m = elf.clone();
            m[i] ^= 0xff;
            let _ = parse(&m);
        }
    }

    #[test]
    fn canonical_names_fold_dashes() {
        assert_eq!(canonical_name("kvm-amd"), "kvm_amd");
    }
}
