//! Boot structures, written byte by byte in little-endian order: the zero
//! page (`struct boot_params`), PVH `hvm_start_info`, the GDT and the
//! identity-mapped long-mode page tables.

use super::layout::{self, E820Entry};

/// Offsets into `struct boot_params` (Linux `arch/x86/include/uapi/asm/bootparam.h`).
pub mod bp {
    /// u64 acpi_rsdp_addr.
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// u32 ext_ramdisk_image.
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    /// u32 ext_ramdisk_size.
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    /// u32 ext_cmd_line_ptr.
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    /// u8 e820_entries.
    pub const E820_ENTRIES: usize = 0x1e8;
    /// Start of the setup header.
    pub const HDR: usize = 0x1f1;
    /// u16 boot_flag (0xaa55).
    pub const BOOT_FLAG: usize = 0x1fe;
    /// u32 header ("HdrS").
    pub const HEADER: usize = 0x202;
    /// u16 version.
    pub const VERSION: usize = 0x206;
    /// u8 type_of_loader.
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// u8 loadflags.
    pub const LOADFLAGS: usize = 0x211;
    /// u32 code32_start.
    pub const CODE32_START: usize = 0x214;
    /// u32 ramdisk_image.
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// u32 ramdisk_size.
    pub const RAMDISK_SIZE: usize = 0x21c;
    /// u16 heap_end_ptr.
    pub const HEAP_END_PTR: usize = 0x224;
    /// u32 cmd_line_ptr.
    pub const CMD_LINE_PTR: usize = 0x228;
    /// u32 kernel_alignment.
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// u32 cmdline_size.
    pub const CMDLINE_SIZE: usize = 0x238;
    /// The e820 table: 128 entries of 20 bytes.
    pub const E820_TABLE: usize = 0x2d0;
}

/// `loadflags`: CAN_USE_HEAP.
const CAN_USE_HEAP: u8 = 0x80;
/// `type_of_loader` for a loader without an assigned id.
const LOADER_UNDEFINED: u8 = 0xff;

/// A 4 KiB zero page under construction.
#[derive(Clone)]
pub struct ZeroPage(pub Box<[u8; 4096]>);

impl ZeroPage {
    /// A zero page with the setup header from the kernel image (bzImage), or
    /// a synthesized minimal header (ELF vmlinux, like Firecracker does).
    pub fn new(setup_header: Option<&[u8]>) -> Self {
        let mut z = ZeroPage(Box::new([0u8; 4096]));
        match setup_header {
            Some(h) => {
                let n = h.len().min(0x290 - bp::HDR);
                z.0[bp::HDR..bp::HDR + n].copy_from_slice(&h[..n]);
            }
            None => {
                z.set_u16(bp::BOOT_FLAG, 0xaa55);
                z.set_u32(bp::HEADER, u32::from_le_bytes(*b"HdrS"));
                z.set_u16(bp::VERSION, 0x020f);
                z.set_u32(bp::KERNEL_ALIGNMENT, 0x100_0000);
            }
        }
        z.0[bp::TYPE_OF_LOADER] = LOADER_UNDEFINED;
        z.0[bp::LOADFLAGS] |= CAN_USE_HEAP;
        // Heap end relative to the real-mode code; unused on 64-bit entry.
        z.set_u16(bp::HEAP_END_PTR, 0xfe00);
        z
    }

    /// Little-endian u16 at `off`.
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    /// Little-endian u32 at `off`.
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Little-endian u64 at `off`.
    pub fn set_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Reads a little-endian u32 at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(b)
    }

    /// Command line address and length (without NUL).
    pub fn set_cmdline(&mut self, addr: u64, len: usize) {
        self.set_u32(bp::CMD_LINE_PTR, addr as u32);
        self.set_u32(bp::EXT_CMD_LINE_PTR, (addr >> 32) as u32);
        self.set_u32(bp::CMDLINE_SIZE, len as u32);
    }

    /// Initrd location.
    pub fn set_initrd(&mut self, addr: u64, size: u64) {
        self.set_u32(bp::RAMDISK_IMAGE, addr as u32);
        self.set_u32(bp::EXT_RAMDISK_IMAGE, (addr >> 32) as u32);
        self.set_u32(bp::RAMDISK_SIZE, size as u32);
        self.set_u32(bp::EXT_RAMDISK_SIZE, (size >> 32) as u32);
    }

    /// Where the kernel was loaded (bzImage).
    pub fn set_code32_start(&mut self, addr: u32) {
        self.set_u32(bp::CODE32_START, addr);
    }

    /// The ACPI RSDP address.
    pub fn set_rsdp(&mut self, addr: u64) {
        self.set_u64(bp::ACPI_RSDP_ADDR, addr);
    }

    /// The e820 map; entries past the table's 128 are dropped.
    pub fn set_e820(&mut self, map: &[E820Entry]) {
        let n = map.len().min(layout::MAX_E820);
        self.0[bp::E820_ENTRIES] = n as u8;
        for (i, e) in map.iter().take(n).enumerate() {
            let o = bp::E820_TABLE + i * 20;
            self.set_u64(o, e.addr);
            self.set_u64(o + 8, e.size);
            self.set_u32(o + 16, e.kind as u32);
        }
    }
}

/// `hvm_start_info` magic.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// PVH `hvm_start_info` (version 1, 56 bytes), with its memory map and
/// module list. Returns `(start_info, memmap, modlist)` byte blocks to be
/// written at [`layout::PVH_INFO_ADDR`], [`layout::PVH_MEMMAP_ADDR`] and
/// [`layout::PVH_MODLIST_ADDR`].
pub fn pvh_start_info(
    cmdline_addr: u64,
    rsdp_addr: u64,
    map: &[E820Entry],
    initrd: Option<(u64, u64)>,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut s = Vec::with_capacity(56);
    s.extend(HVM_START_MAGIC.to_le_bytes());
    s.extend(1u32.to_le_bytes()); // version
    s.extend(0u32.to_le_bytes()); // flags
    s.extend(u32::from(initrd.is_some()).to_le_bytes()); // nr_modules
    let modlist = if initrd.is_some() {
        layout::PVH_MODLIST_ADDR
    } else {
        0
    };
    s.extend(modlist.to_le_bytes());
    s.extend(cmdline_addr.to_le_bytes());
    s.extend(rsdp_addr.to_le_bytes());
    s.extend(layout::PVH_MEMMAP_ADDR.to_le_bytes());
    s.extend((map.len() as u32).to_le_bytes());
    s.extend(0u32.to_le_bytes());
    let mut m = Vec::with_capacity(map.len() * 24);
    for e in map {
        m.extend(e.addr.to_le_bytes());
        m.extend(e.size.to_le_bytes());
        m.extend((e.kind as u32).to_le_bytes());
        m.extend(0u32.to_le_bytes());
    }
    let mut l = Vec::new();
    if let Some((addr, size)) = initrd {
        l.extend(addr.to_le_bytes());
        l.extend(size.to_le_bytes());
        l.extend(0u64.to_le_bytes()); // cmdline_paddr
        l.extend(0u64.to_le_bytes()); // reserved
    }
    (s, m, l)
}

/// A segment as KVM's `kvm_segment` wants it, decoded from a GDT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by granularity).
    pub limit: u32,
    /// Selector.
    pub selector: u16,
    /// Type field.
    pub type_: u8,
    /// Present.
    pub present: u8,
    /// Privilege level.
    pub dpl: u8,
    /// Default operation size.
    pub db: u8,
    /// Code/data (1) or system (0).
    pub s: u8,
    /// 64-bit code.
    pub l: u8,
    /// Granularity.
    pub g: u8,
    /// Available bit.
    pub avl: u8,
}

/// A GDT descriptor from `flags` (the access byte in bits 0..8 and the
/// flags nibble in bits 12..16), `base` and `limit`.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << 32)
        | ((u64::from(flags) & 0xf0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << 32)
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0xffff)
}

/// Decodes GDT entry `index` of `table` into a segment.
pub fn segment(table: &[u64], index: usize) -> Segment {
    let e = table[index];
    let g = ((e >> 55) & 1) as u8;
    let raw_limit = (((e >> 32) & 0xf_0000) | (e & 0xffff)) as u32;
    Segment {
        base: ((e >> 16) & 0xff_ffff) | (((e >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: (index * 8) as u16,
        type_: ((e >> 40) & 0xf) as u8,
        present: ((e >> 47) & 1) as u8,
        dpl: ((e >> 45) & 3) as u8,
        db: ((e >> 54) & 1) as u8,
        s: ((e >> 44) & 1) as u8,
        l: ((e >> 53) & 1) as u8,
        g,
        avl: ((e >> 52) & 1) as u8,
    }
}

/// The GDT for 64-bit entry: null, code64, data, TSS.
pub fn gdt_long_mode() -> [u64; 4] {
    [
        0,
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// The GDT for PVH entry (32-bit protected mode, flat): null, code32, data, TSS.
pub fn gdt_protected_mode() -> [u64; 4] {
    [
        0,
        gdt_entry(0xc09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x008b, 0, 0x67),
    ]
}

/// GDT bytes.
pub fn gdt_bytes(table: &[u64]) -> Vec<u8> {
    table.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Identity-mapping page tables for the first 4 GiB with 2 MiB pages:
/// `(guest address, 4 KiB page)` pairs for the PML4, the PDPT and four PDs.
pub fn page_tables() -> Vec<(u64, Vec<u8>)> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let mut out = Vec::with_capacity(6);
    let mut pml4 = vec![0u8; 4096];
    pml4[..8].copy_from_slice(&(layout::PDPT_ADDR | P_RW).to_le_bytes());
    out.push((layout::PML4_ADDR, pml4));
    let mut pdpt = vec![0u8; 4096];
    for i in 0..4u64 {
        let pd = layout::PD_ADDR + i * 0x1000;
        pdpt[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&(pd | P_RW).to_le_bytes());
    }
    out.push((layout::PDPT_ADDR, pdpt));
    for i in 0..4u64 {
        let mut pd = vec![0u8; 4096];
        for j in 0..512u64 {
            let addr = ((i * 512 + j) << 21) | P_RW | PS;
            pd[j as usize * 8..j as usize * 8 + 8].copy_from_slice(&addr.to_le_bytes());
        }
        out.push((layout::PD_ADDR + i * 0x1000, pd));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::layout::MemoryLayout;

    #[test]
    fn zero_page_fields() {
        let mut z = ZeroPage::new(None);
        z.set_cmdline(0x2_0000, 11);
        z.set_initrd(0x1_2345_6000, 0x1000);
        z.set_e820(&MemoryLayout::new(64 << 20).unwrap().e820());
        z.set_rsdp(0xe_0000);
        let b = &z.0;
        assert_eq!(&b[0x202..0x206], b"HdrS");
        assert_eq!(&b[0x1fe..0x200], &[0x55, 0xaa]);
        assert_eq!(b[0x210], 0xff);
        assert_eq!(z.u32_at(0x228), 0x2_0000);
        assert_eq!(z.u32_at(0x238), 11);
        assert_eq!(z.u32_at(0x218), 0x2345_6000);
        assert_eq!(z.u32_at(0x0c0), 1);
        assert_eq!(z.u32_at(0x21c), 0x1000);
        assert_eq!(b[0x1e8], 3);
        // Third e820 entry: 1 MiB .. 64 MiB RAM.
        let o = 0x2d0 + 2 * 20;
        assert_eq!(&b[o..o + 8], &0x10_0000u64.to_le_bytes());
        assert_eq!(
            &b[o + 8..o + 16],
            &((64u64 << 20) - 0x10_0000).to_le_bytes()
        );
        assert_eq!(&b[o + 16..o + 20], &1u32.to_le_bytes());
        assert_eq!(&b[0x70..0x78], &0xe_0000u64.to_le_bytes());
    }

    #[test]
    fn zero_page_keeps_kernel_header() {
        let mut h = vec![0u8; 0x6c + 0x11];
        h[0x202 - 0x1f1..0x206 - 0x1f1].copy_from_slice(b"HdrS");
        h[0x211 - 0x1f1] = 0x01;
        let z = ZeroPage::new(Some(&h));
        assert_eq!(&z.0[0x202..0x206], b"HdrS");
        assert_eq!(z.0[0x211], 0x81);
    }

    #[test]
    fn pvh_info_layout() {
        let map = MemoryLayout::new(64 << 20).unwrap().e820();
        let (s, m, l) = pvh_start_info(0x2_0000, 0xe_0000, &map, Some((0x300_0000, 0x1234)));
        assert_eq!(s.len(), 56);
        assert_eq!(&s[0..4], &HVM_START_MAGIC.to_le_bytes());
        assert_eq!(&s[4..8], &1u32.to_le_bytes());
        assert_eq!(&s[12..16], &1u32.to_le_bytes());
        assert_eq!(&s[16..24], &layout::PVH_MODLIST_ADDR.to_le_bytes());
        assert_eq!(&s[24..32], &0x2_0000u64.to_le_bytes());
        assert_eq!(&s[32..40], &0xe_0000u64.to_le_bytes());
        assert_eq!(&s[40..48], &layout::PVH_MEMMAP_ADDR.to_le_bytes());
        assert_eq!(&s[48..52], &3u32.to_le_bytes());
        assert_eq!(m.len(), 72);
        assert_eq!(&l[0..8], &0x300_0000u64.to_le_bytes());
        assert_eq!(&l[8..16], &0x1234u64.to_le_bytes());
        // The memmap fits below the module list.
        assert!(
            layout::PVH_MEMMAP_ADDR + (layout::MAX_E820 * 24) as u64 <= layout::PVH_MODLIST_ADDR
        );
    }

    #[test]
    fn gdt_round_trip() {
        let t = gdt_long_mode();
        assert_eq!(t[1], 0x00af_9b00_0000_ffff);
        assert_eq!(t[2], 0x00cf_9300_0000_ffff);
        let cs = segment(&t, 1);
        assert_eq!(
            (cs.l, cs.db, cs.type_, cs.selector, cs.limit),
            (1, 0, 0xb, 8, 0xffff_ffff)
        );
        let p = gdt_protected_mode();
        let cs = segment(&p, 1);
        assert_eq!((cs.l, cs.db, cs.present, cs.s), (0, 1, 1, 1));
        let tss = segment(&p, 3);
        assert_eq!((tss.s, tss.type_, tss.limit), (0, 0xb, 0x67));
        assert_eq!(gdt_bytes(&t).len(), 32);
    }

    #[test]
    fn page_tables_identity_map_4g() {
        let pts = page_tables();
        assert_eq!(pts.len(), 6);
        assert_eq!(pts[0].0, layout::PML4_ADDR);
        assert_eq!(&pts[0].1[..8], &(layout::PDPT_ADDR | 3).to_le_bytes());
        // Last PD's last entry maps 4 GiB - 2 MiB.
        let last = &pts[5].1[511 * 8..];
        assert_eq!(last, &(((4u64 << 30) - (2 << 20)) | 0x83).to_le_bytes());
        const { assert!(layout::PD_ADDR + 4 * 0x1000 <= layout::CMDLINE_ADDR) };
    }
}
