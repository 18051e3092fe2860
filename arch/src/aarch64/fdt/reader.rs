//! A strict DTB reader: parses a blob back into a tree. zvisor uses it to
//! check what it wrote (tests, and a sanity check before a boot); it
//! rejects anything out of bounds or misaligned instead of guessing.

use super::writer::{
    FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_LAST_COMP_VERSION, FDT_MAGIC, FDT_NOP, FDT_PROP,
    HEADER_SIZE,
};

/// Why a blob is not a valid DTB.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdtParseError {
    /// Shorter than a header, or the header's sizes disagree with the blob.
    #[error("truncated or inconsistent device tree: {0}")]
    Truncated(&'static str),
    /// Wrong magic number.
    #[error("bad device tree magic {0:#x}")]
    BadMagic(u32),
    /// A version this reader does not understand.
    #[error("unsupported device tree version {version} (last compatible {last_comp})")]
    BadVersion {
        /// `version`.
        version: u32,
        /// `last_comp_version`.
        last_comp: u32,
    },
    /// A block offset that is misaligned.
    #[error("misaligned {0}")]
    Misaligned(&'static str),
    /// An unknown or misplaced token.
    #[error("unexpected token {token:#x} at structure offset {offset:#x}")]
    BadToken {
        /// The token.
        token: u32,
        /// Where.
        offset: usize,
    },
    /// A name or string that is not NUL-terminated UTF-8.
    #[error("bad string at offset {0:#x}")]
    BadString(usize),
}

/// A parsed node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// `name[@unit]`; the root is `""`.
    pub name: String,
    /// Properties in blob order.
    pub props: Vec<(String, Vec<u8>)>,
    /// Subnodes in blob order.
    pub children: Vec<Node>,
}

/// A parsed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fdt {
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid: u32,
    /// Memory reservation map entries (address, size).
    pub reservations: Vec<(u64, u64)>,
    /// The root node.
    pub root: Node,
    /// The strings block, as stored.
    pub strings: Vec<u8>,
}

impl Node {
    /// A property's raw value.
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A direct child by full name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Big-endian u32 cells of a property (None if its length is not a
    /// multiple of 4).
    pub fn cells(&self, name: &str) -> Option<Vec<u32>> {
        let v = self.prop(name)?;
        if v.len() % 4 != 0 {
            return None;
        }
        Some(
            v.chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }

    /// A one-cell property.
    pub fn u32(&self, name: &str) -> Option<u32> {
        match self.cells(name)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// A two-cell property as u64.
    pub fn u64(&self, name: &str) -> Option<u64> {
        match self.cells(name)?.as_slice() {
            [hi, lo] => Some((u64::from(*hi) << 32) | u64::from(*lo)),
            _ => None,
        }
    }

    /// A string-list property (every entry NUL-terminated).
    pub fn strings(&self, name: &str) -> Option<Vec<&str>> {
        let v = self.prop(name)?;
        let body = v.strip_suffix(&[0])?;
        body.split(|&b| b == 0)
            .map(|s| std::str::from_utf8(s).ok())
            .collect()
    }

    /// A single-string property.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.strings(name)?.as_slice() {
            [s] => Some(*s),
            _ => None,
        }
    }
}

impl Fdt {
    /// A node by absolute path (`/`, `/cpus/cpu@0`).
    pub fn node(&self, path: &str) -> Option<&Node> {
        let mut n = &self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            n = n.child(part)?;
        }
        Some(n)
    }
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some((u64::from(be32(b, off)?) << 32) | u64::from(be32(b, off + 4)?))
}

fn cstr(b: &[u8], off: usize) -> Result<(&str, usize), FdtParseError> {
    let rest = b.get(off..).ok_or(FdtParseError::BadString(off))?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(FdtParseError::BadString(off))?;
    let s = std::str::from_utf8(&rest[..len]).map_err(|_| FdtParseError::BadString(off))?;
    Ok((s, len + 1))
}

/// Parses and checks a DTB.
pub fn parse(blob: &[u8]) -> Result<Fdt, FdtParseError> {
    let h = |i: usize| be32(blob, i * 4).ok_or(FdtParseError::Truncated("header"));
    let magic = h(0)?;
    if magic != FDT_MAGIC {
        return Err(FdtParseError::BadMagic(magic));
    }
    let (total, off_struct, off_strings, off_rsv) = (
        h(1)? as usize,
        h(2)? as usize,
        h(3)? as usize,
        h(4)? as usize,
    );
    let (version, last_comp) = (h(5)?, h(6)?);
    if version < 17 || last_comp > FDT_LAST_COMP_VERSION {
        return Err(FdtParseError::BadVersion { version, last_comp });
    }
    let boot_cpuid = h(7)?;
    let (size_strings, size_struct) = (h(8)? as usize, h(9)? as usize);
    if total != blob.len() || total < HEADER_SIZE {
        return Err(FdtParseError::Truncated("totalsize differs from the blob"));
    }
    if off_rsv % 8 != 0 {
        return Err(FdtParseError::Misaligned("memory reservation map"));
    }
    if off_struct % 4 != 0 || size_struct % 4 != 0 {
        return Err(FdtParseError::Misaligned("structure block"));
    }
    let in_blob = |off: usize, len: usize| off >= HEADER_SIZE && off.saturating_add(len) <= total;
    if !in_blob(off_struct, size_struct) || !in_blob(off_strings, size_strings) {
        return Err(FdtParseError::Truncated("block outside the blob"));
    }
    let mut reservations = Vec::new();
    let mut at = off_rsv;
    loop {
        let (a, s) = be64(blob, at)
            .zip(be64(blob, at + 8))
            .ok_or(FdtParseError::Truncated("memory reservation map"))?;
        if a == 0 && s == 0 {
            break;
        }
        reservations.push((a, s));
        at += 16;
    }
    let st = &blob[off_struct..off_struct + size_struct];
    let strings = &blob[off_strings..off_strings + size_strings];
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    let mut pos = 0;
    loop {
        let tok = be32(st, pos).ok_or(FdtParseError::Truncated("structure block"))?;
        let bad = FdtParseError::BadToken {
            token: tok,
            offset: pos,
        };
        pos += 4;
        match tok {
            FDT_BEGIN_NODE => {
                if root.is_some() {
                    return Err(bad);
                }
                let (name, len) = cstr(st, pos)?;
                pos = (pos + len).next_multiple_of(4);
                stack.push(Node {
                    name: name.to_string(),
                    ..Default::default()
                });
            }
            FDT_END_NODE => {
                let n = stack.pop().ok_or(bad)?;
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => root = Some(n),
                }
            }
            FDT_PROP => {
                let len = be32(st, pos).ok_or(FdtParseError::Truncated("property"))? as usize;
                let nameoff =
                    be32(st, pos + 4).ok_or(FdtParseError::Truncated("property"))? as usize;
                pos += 8;
                let value = st
                    .get(pos..pos.saturating_add(len))
                    .ok_or(FdtParseError::Truncated("property value"))?;
                let (name, _) = cstr(strings, nameoff)?;
                let node = stack.last_mut().ok_or(bad.clone())?;
                if !node.children.is_empty() {
                    return Err(bad);
                }
                node.props.push((name.to_string(), value.to_vec()));
                pos = (pos + len).next_multiple_of(4);
            }
            FDT_NOP => {}
            FDT_END => {
                if !stack.is_empty() || pos != size_struct {
                    return Err(bad);
                }
                break;
            }
            _ => return Err(bad),
        }
    }
    let root = root.ok_or(FdtParseError::Truncated("no root node"))?;
    if !root.name.is_empty() {
        return Err(FdtParseError::BadString(off_struct));
    }
    Ok(Fdt {
        boot_cpuid,
        reservations,
        root,
        strings: strings.to_vec(),
    })
}
