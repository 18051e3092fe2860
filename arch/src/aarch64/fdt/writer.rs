//! A small flattened device tree (DTB, version 17) writer.
//!
//! The blob is: a 40-byte header, the memory reservation map (8-byte
//! aligned pairs of big-endian u64, ended by a zero pair), the structure
//! block (big-endian tokens, every item padded to 4 bytes) and the strings
//! block (NUL-terminated property names, each stored once).
//!
//! The writer checks what a reader would otherwise misparse: node and
//! property names, properties after a child node (libfdt stops looking for
//! properties at the first subnode), duplicate properties, unbalanced
//! nodes and the total size.

use std::collections::{HashMap, HashSet};

/// `0xd00dfeed`, big-endian, at offset 0.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// The version written.
pub const FDT_VERSION: u32 = 17;
/// The oldest version a reader must support to read this blob.
pub const FDT_LAST_COMP_VERSION: u32 = 16;
/// Size of the v17 header.
pub const HEADER_SIZE: usize = 40;

pub(crate) const FDT_BEGIN_NODE: u32 = 1;
pub(crate) const FDT_END_NODE: u32 = 2;
pub(crate) const FDT_PROP: u32 = 3;
pub(crate) const FDT_NOP: u32 = 4;
pub(crate) const FDT_END: u32 = 9;

/// Longest node or property name the writer accepts (the spec's 31 for
/// properties; node names with unit address get more room).
const MAX_PROP_NAME: usize = 31;
const MAX_NODE_NAME: usize = 63;

/// Errors of [`FdtWriter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdtWriteError {
    /// A node name that is empty (except the root), too long or uses
    /// characters outside the spec's set.
    #[error("invalid device tree node name {0:?}")]
    InvalidNodeName(String),
    /// A property name that is empty, too long or uses characters outside
    /// the spec's set.
    #[error("invalid device tree property name {0:?}")]
    InvalidPropertyName(String),
    /// A string value with an embedded NUL.
    #[error("property {0:?}: string value contains a NUL byte")]
    NulInString(String),
    /// A property written after a subnode of the same node.
    #[error("property {0:?} comes after a subnode; properties must precede subnodes")]
    PropertyAfterSubnode(String),
    /// The same property twice in one node.
    #[error("property {0:?} is set twice in one node")]
    DuplicateProperty(String),
    /// The same subnode name twice in one node.
    #[error("node {0:?} appears twice under one parent")]
    DuplicateNode(String),
    /// A property outside any node, or a second root node.
    #[error("{0} outside the root node")]
    OutsideRoot(&'static str),
    /// `end_node` without an open node.
    #[error("end_node without an open node")]
    UnbalancedEnd,
    /// `finish` with nodes still open.
    #[error("{0} node(s) still open at finish")]
    UnclosedNodes(usize),
    /// The finished blob exceeds the size limit.
    #[error("device tree is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Blob size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A reservation whose end overflows u64.
    #[error("memory reservation {addr:#x}+{size:#x} overflows")]
    ReservationOverflow {
        /// Start.
        addr: u64,
        /// Length.
        size: u64,
    },
}

/// One open node: its property and child names, and whether a child came.
#[derive(Default)]
struct OpenNode {
    props: HashSet<String>,
    children: HashSet<String>,
    has_child: bool,
}

/// Builds a DTB. Call [`FdtWriter::begin_node`] with `""` for the root,
/// add properties and subnodes, close every node, then
/// [`FdtWriter::finish`].
pub struct FdtWriter {
    structure: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: HashMap<String, u32>,
    reservations: Vec<(u64, u64)>,
    stack: Vec<OpenNode>,
    root_done: bool,
    boot_cpuid: u32,
    size_limit: usize,
}

impl Default for FdtWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn valid_char(c: u8, extra: &[u8]) -> bool {
    c.is_ascii_alphanumeric() || b",._+-".contains(&c) || extra.contains(&c)
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

impl FdtWriter {
    /// A writer with no size limit beyond u32 offsets.
    pub fn new() -> Self {
        Self {
            structure: Vec::new(),
            strings: Vec::new(),
            string_offsets: HashMap::new(),
            reservations: Vec::new(),
            stack: Vec::new(),
            root_done: false,
            boot_cpuid: 0,
            size_limit: u32::MAX as usize,
        }
    }

    /// Makes [`FdtWriter::finish`] fail when the blob exceeds `limit` bytes.
    pub fn set_size_limit(&mut self, limit: usize) {
        self.size_limit = limit.min(u32::MAX as usize);
    }

    /// The header's `boot_cpuid_phys`.
    pub fn set_boot_cpuid(&mut self, id: u32) {
        self.boot_cpuid = id;
    }

    /// Adds a memory reservation map entry.
    pub fn add_reservation(&mut self, addr: u64, size: u64) -> Result<(), FdtWriteError> {
        if addr.checked_add(size).is_none() {
            return Err(FdtWriteError::ReservationOverflow { addr, size });
        }
        self.reservations.push((addr, size));
        Ok(())
    }

    fn token(&mut self, t: u32) {
        self.structure.extend_from_slice(&t.to_be_bytes());
    }

    /// Opens a node. The root is `""`; others are `name[@unit-address]`.
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtWriteError> {
        match self.stack.last_mut() {
            None => {
                if self.root_done {
                    return Err(FdtWriteError::OutsideRoot("a second root node"));
                }
                if !name.is_empty() {
                    return Err(FdtWriteError::InvalidNodeName(name.into()));
                }
            }
            Some(parent) => {
                let (base, unit) = match name.split_once('@') {
                    Some((b, u)) => (b, Some(u)),
                    None => (name, None),
                };
                let ok = !base.is_empty()
                    && name.len() <= MAX_NODE_NAME
                    && base.bytes().all(|c| valid_char(c, b""))
                    && unit.is_none_or(|u| !u.is_empty() && u.bytes().all(|c| valid_char(c, b"")));
                if !ok {
                    return Err(FdtWriteError::InvalidNodeName(name.into()));
                }
                if !parent.children.insert(name.to_string()) {
                    return Err(FdtWriteError::DuplicateNode(name.into()));
                }
                parent.has_child = true;
            }
        }
        self.token(FDT_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        pad4(&mut self.structure);
        self.stack.push(OpenNode::default());
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtWriteError> {
        self.stack.pop().ok_or(FdtWriteError::UnbalancedEnd)?;
        self.token(FDT_END_NODE);
        if self.stack.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    fn string_offset(&mut self, name: &str) -> u32 {
        if let Some(&off) = self.string_offsets.get(name) {
            return off;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(name.to_string(), off);
        off
    }

    /// Adds a property with a raw value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), FdtWriteError> {
        if name.is_empty()
            || name.len() > MAX_PROP_NAME
            || !name.bytes().all(|c| valid_char(c, b"?#"))
        {
            return Err(FdtWriteError::InvalidPropertyName(name.into()));
        }
        let node = self
            .stack
            .last_mut()
            .ok_or(FdtWriteError::OutsideRoot("a property"))?;
        if node.has_child {
            return Err(FdtWriteError::PropertyAfterSubnode(name.into()));
        }
        if !node.props.insert(name.to_string()) {
            return Err(FdtWriteError::DuplicateProperty(name.into()));
        }
        let nameoff = self.string_offset(name);
        self.token(FDT_PROP);
        self.token(value.len() as u32);
        self.token(nameoff);
        self.structure.extend_from_slice(value);
        pad4(&mut self.structure);
        Ok(())
    }

    /// An empty (boolean) property.
    pub fn property_null(&mut self, name: &str) -> Result<(), FdtWriteError> {
        self.property(name, &[])
    }

    /// A single big-endian u32 cell.
    pub fn property_u32(&mut self, name: &str, v: u32) -> Result<(), FdtWriteError> {
        self.property(name, &v.to_be_bytes())
    }

    /// A big-endian u64 (two cells).
    pub fn property_u64(&mut self, name: &str, v: u64) -> Result<(), FdtWriteError> {
        self.property(name, &v.to_be_bytes())
    }

    /// A list of big-endian u32 cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtWriteError> {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &bytes)
    }

    /// A list of u64 values, each as two big-endian cells (`reg` with
    /// #address-cells = #size-cells = 2).
    pub fn property_u64s(&mut self, name: &str, values: &[u64]) -> Result<(), FdtWriteError> {
        let bytes: Vec<u8> = values.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.property(name, &bytes)
    }

    /// A NUL-terminated string.
    pub fn property_string(&mut self, name: &str, s: &str) -> Result<(), FdtWriteError> {
        self.property_strings(name, &[s])
    }

    /// A list of NUL-terminated strings.
    pub fn property_strings(&mut self, name: &str, list: &[&str]) -> Result<(), FdtWriteError> {
        let mut bytes = Vec::new();
        for s in list {
            if s.as_bytes().contains(&0) {
                return Err(FdtWriteError::NulInString(name.into()));
            }
            bytes.extend_from_slice(s.as_bytes());
            bytes.push(0);
        }
        self.property(name, &bytes)
    }

    /// Ends the structure block and lays out the blob.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtWriteError> {
        if !self.stack.is_empty() {
            return Err(FdtWriteError::UnclosedNodes(self.stack.len()));
        }
        if !self.root_done {
            return Err(FdtWriteError::OutsideRoot("finish without a root node"));
        }
        self.token(FDT_END);
        let rsv_off = HEADER_SIZE.next_multiple_of(8);
        let rsv_len = (self.reservations.len() + 1) * 16;
        let struct_off = rsv_off + rsv_len;
        let strings_off = struct_off + self.structure.len();
        let total = strings_off + self.strings.len();
        if total > self.size_limit {
            return Err(FdtWriteError::TooLarge {
                size: total,
                limit: self.size_limit,
            });
        }
        let mut out = Vec::with_capacity(total);
        for v in [
            FDT_MAGIC,
            total as u32,
            struct_off as u32,
            strings_off as u32,
            rsv_off as u32,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            self.boot_cpuid,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.resize(rsv_off, 0);
        for (a, s) in self.reservations.iter().chain(std::iter::once(&(0, 0))) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.strings);
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }
}
