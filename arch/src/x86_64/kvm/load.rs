//! Loading the kernel, command line and initrd, and writing the boot
//! structures (zero page or hvm_start_info, ACPI tables, GDT, page tables).

use std::fs::File;
use std::path::PathBuf;

use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};
use zvisor_vmm::memory::GuestMemory;
use zvisor_vmm::VmConfig;

use super::{Entry, Error};
use crate::x86_64::acpi;
use crate::x86_64::boot::{self, ZeroPage};
use crate::x86_64::kernel::KernelInfo;
use crate::x86_64::layout::{self, MemoryLayout};

fn write(mem: &GuestMemory, what: &'static str, addr: u64, b: &[u8]) -> Result<(), Error> {
    mem.write_slice(b, GuestAddress(addr))
        .map_err(|e| Error::GuestWrite(what, e))
}

/// Refuses a command line `info`'s kernel cannot take; pure, so it runs
/// before any KVM or memory setup.
pub(super) fn check_cmdline(config: &VmConfig, info: &KernelInfo) -> Result<(), Error> {
    let cmdline = config.cmdline.as_bytes();
    if cmdline.contains(&0) {
        return Err(Error::CmdlineNul);
    }
    let kernel_max = match info {
        KernelInfo::BzImage { cmdline_size, .. } => *cmdline_size as usize,
        KernelInfo::Elf { .. } => layout::CMDLINE_MAX,
    };
    let max = kernel_max.min(layout::CMDLINE_MAX);
    if cmdline.len() > max {
        return Err(Error::CmdlineTooLong(cmdline.len(), max));
    }
    Ok(())
}

/// Loads everything and returns the boot vCPU's entry.
pub(super) fn load(
    config: &VmConfig,
    mem: &GuestMemory,
    lay: &MemoryLayout,
    info: &KernelInfo,
    kfile: &mut File,
    initrd: Option<(PathBuf, File, u64)>,
    virtio: Vec<acpi::VirtioMmioDevice>,
) -> Result<Entry, Error> {
    let himem = Some(GuestAddress(layout::HIMEM_START));
    let lerr = |e| Error::LoadKernel(config.kernel.clone(), e);
    let (entry, kernel_end) = match info {
        KernelInfo::BzImage { .. } => {
            let r = BzImage::load(mem, None, kfile, himem).map_err(lerr)?;
            // The 64-bit entry point is 0x200 past the protected-mode start.
            (Entry::Long(r.kernel_load.0 + 0x200), info.needs_end())
        }
        KernelInfo::Elf {
            entry, pvh_entry, ..
        } => {
            let r = Elf::load(mem, None, kfile, himem).map_err(lerr)?;
            let e = match pvh_entry {
                Some(p) => Entry::Pvh(*p),
                None => Entry::Long(*entry),
            };
            (e, r.kernel_end.max(info.needs_end()))
        }
    };

    // Command line (checked by `check_cmdline` before the VM was made).
    let mut c = config.cmdline.as_bytes().to_vec();
    c.push(0);
    write(mem, "the command line", layout::CMDLINE_ADDR, &c)?;

    // Initrd: as high as allowed below the MMIO gap, page aligned.
    let initrd = match initrd {
        Some((path, mut f, len)) => {
            let top = match info {
                KernelInfo::BzImage {
                    initrd_addr_max, ..
                } => lay.low_end().min(initrd_addr_max.saturating_add(1)),
                KernelInfo::Elf { .. } => lay.low_end(),
            };
            let addr = top.checked_sub(len).map(|a| a & !0xfff);
            let kend = (kernel_end + 0xfff) & !0xfff;
            let Some(addr) = addr.filter(|&a| a >= kend) else {
                return Err(Error::InitrdTooBig(path, len, config.memory));
            };
            mem.read_exact_volatile_from(GuestAddress(addr), &mut f, len as usize)
                .map_err(|e| Error::Initrd(path.clone(), std::io::Error::other(e.to_string())))?;
            Some((addr, len))
        }
        None => None,
    };

    // ACPI.
    let tables = acpi::build(&acpi::AcpiConfig {
        cpus: config.cpus,
        virtio,
    })?;
    for (addr, b) in &tables {
        write(mem, "ACPI tables", *addr, b)?;
    }

    let e820 = lay.e820();
    match entry {
        Entry::Long(_) => {
            let hdr = match info {
                KernelInfo::BzImage { setup_header, .. } => Some(setup_header.as_slice()),
                KernelInfo::Elf { .. } => None,
            };
            let mut z = ZeroPage::new(hdr);
            if let KernelInfo::BzImage { load, .. } = info {
                z.set_code32_start(*load as u32);
            }
            z.set_cmdline(layout::CMDLINE_ADDR, config.cmdline.len());
            if let Some((a, l)) = initrd {
                z.set_initrd(a, l);
            }
            z.set_e820(&e820);
            z.set_rsdp(layout::ACPI_ADDR);
            write(mem, "the zero page", layout::ZERO_PAGE_ADDR, &z.0[..])?;
            write(
                mem,
                "the GDT",
                layout::GDT_ADDR,
                &boot::gdt_bytes(&boot::gdt_long_mode()),
            )?;
            for (addr, page) in boot::page_tables() {
                write(mem, "page tables", addr, &page)?;
            }
        }
        Entry::Pvh(_) => {
            let (s, m, l) =
                boot::pvh_start_info(layout::CMDLINE_ADDR, layout::ACPI_ADDR, &e820, initrd);
            write(mem, "hvm_start_info", layout::PVH_INFO_ADDR, &s)?;
            write(mem, "the PVH memory map", layout::PVH_MEMMAP_ADDR, &m)?;
            write(mem, "the PVH module list", layout::PVH_MODLIST_ADDR, &l)?;
            write(
                mem,
                "the GDT",
                layout::GDT_ADDR,
                &boot::gdt_bytes(&boot::gdt_protected_mode()),
            )?;
        }
    }
    Ok(entry)
}
