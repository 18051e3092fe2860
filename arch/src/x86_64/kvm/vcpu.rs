//! One x86_64 vCPU: CPUID, MSRs, LAPIC, registers, and exit decoding.

use std::sync::Arc;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_xcrs, CpuId, Msrs,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd, VmFd};
use tracing::{debug, trace};
use zvisor_vmm::bus::Bus;
use zvisor_vmm::{GuestExit, PlatformVcpu, VcpuExit as Exit};

use super::{kvm_err, Entry, Error};
use crate::x86_64::boot::{self, Segment};
use crate::x86_64::cpuid::{self, CpuidEntry};
use crate::x86_64::devices::ExitLatch;
use crate::x86_64::layout;

/// A x86_64 vCPU.
pub struct X86Vcpu {
    fd: VcpuFd,
    id: u32,
    pio: Arc<Bus>,
    latch: Arc<ExitLatch>,
    stats: ExitStats,
}

/// Exits seen by one vCPU, for [`PlatformVcpu::describe`].
#[derive(Debug)]
struct ExitStats {
    io: u64,
    mmio: u64,
    other: u64,
    interrupted: u64,
    /// The last exit: kind and port or address.
    last: (&'static str, u64),
}

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats {
            io: 0,
            mmio: 0,
            other: 0,
            interrupted: 0,
            last: ("none", 0),
        }
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

fn kvm_seg(s: Segment) -> kvm_segment {
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: s.type_,
        present: s.present,
        dpl: s.dpl,
        db: s.db,
        s: s.s,
        l: s.l,
        g: s.g,
        avl: s.avl,
        unusable: u8::from(s.present == 0),
        padding: 0,
    }
}

/// The guest's CPUID, filtered once per VM from KVM's supported CPUID
/// ([`cpuid::base`]), and the XCR0 every vCPU starts with.
pub(super) struct GuestCpuid {
    base: Vec<CpuidEntry>,
    xcr0: Option<u64>,
}

impl GuestCpuid {
    pub(super) fn new(supported: &CpuId, cpus: u32) -> Self {
        let entries: Vec<CpuidEntry> = supported
            .as_slice()
            .iter()
            .map(|e| CpuidEntry {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
            })
            .collect();
        GuestCpuid {
            base: cpuid::base(&entries, cpus),
            xcr0: cpuid::initial_xcr0(&entries),
        }
    }

    /// vCPU `id`'s table in KVM's format: the base with its APIC ids.
    fn for_vcpu(&self, id: u32) -> Result<CpuId, Error> {
        let mut table = self.base.clone();
        cpuid::patch_vcpu(&mut table, id);
        let entries: Vec<kvm_cpuid_entry2> = table
            .iter()
            .map(|e| kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        CpuId::from_entries(&entries)
            .map_err(|_| Error::Kvm("KVM_SET_CPUID2", kvm_ioctls::Error::new(libc::E2BIG)))
    }
}

impl X86Vcpu {
    pub(super) fn new(
        vm: &VmFd,
        id: u32,
        guest_cpuid: &GuestCpuid,
        entry: Option<&Entry>,
        pio: Arc<Bus>,
        latch: Arc<ExitLatch>,
    ) -> Result<Self, Error> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let v = X86Vcpu {
            fd,
            id,
            pio,
            latch,
            stats: ExitStats::default(),
        };
        v.set_cpuid(guest_cpuid)?;
        v.set_msrs();
        v.set_lint()?;
        if let Some(e) = entry {
            v.set_boot_regs(*e)?;
        }
        Ok(v)
    }

    fn set_cpuid(&self, guest_cpuid: &GuestCpuid) -> Result<(), Error> {
        let table = guest_cpuid.for_vcpu(self.id)?;
        self.fd
            .set_cpuid2(&table)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        // After the CPUID: KVM checks XCR0 against the guest's CPUID.
        if let Some(value) = guest_cpuid.xcr0 {
            self.set_xcr0(value);
        }
        Ok(())
    }

    /// XCR0: see [`cpuid::initial_xcr0`]. Not fatal when refused.
    fn set_xcr0(&self, value: u64) {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = value;
        if let Err(e) = self.fd.set_xcrs(&xcrs) {
            debug!(vcpu = self.id, "XCR0 {value:#x} not set: {e}");
        }
    }

    /// Boot MSRs, set one at a time: kvm_pvm refuses some that real KVM takes,
    /// and a missing one is not fatal for booting. The TSC is left to KVM,
    /// which starts the vCPUs' TSCs in sync.
    fn set_msrs(&self) {
        let list = [
            (MSR_IA32_SYSENTER_CS, 0),
            (MSR_IA32_SYSENTER_ESP, 0),
            (MSR_IA32_SYSENTER_EIP, 0),
            (MSR_STAR, 0),
            (MSR_CSTAR, 0),
            (MSR_KERNEL_GS_BASE, 0),
            (MSR_SYSCALL_MASK, 0),
            (MSR_LSTAR, 0),
            (MSR_IA32_MISC_ENABLE, 1),          // fast strings
            (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, default write-back
        ];
        for (index, data) in list {
            let m = Msrs::from_entries(&[kvm_msr_entry {
                index,
                data,
                ..Default::default()
            }]);
            match m.map(|m| self.fd.set_msrs(&m)) {
                Ok(Ok(1)) => {}
                r => debug!(vcpu = self.id, msr = index, "MSR not set: {r:?}"),
            }
        }
    }

    /// LINT0 as ExtINT (the 8259's output), LINT1 as NMI.
    fn set_lint(&self) -> Result<(), Error> {
        let mut l = self.fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        for (off, mode) in [(0x350usize, 7u32), (0x360, 4)] {
            let mut b = [0u8; 4];
            for (i, x) in b.iter_mut().enumerate() {
                *x = l.regs[off + i] as u8;
            }
            let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
            for (i, x) in v.to_le_bytes().iter().enumerate() {
                l.regs[off + i] = *x as _;
            }
        }
        self.fd.set_lapic(&l).map_err(kvm_err("KVM_SET_LAPIC"))
    }

    fn set_boot_regs(&self, entry: Entry) -> Result<(), Error> {
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
        let mut sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let mut regs = kvm_regs {
            rflags: 2,
            ..Default::default()
        };
        let table = match entry {
            Entry::Long(rip) => {
                regs.rip = rip;
                regs.rsp = layout::BOOT_STACK;
                regs.rbp = layout::BOOT_STACK;
                regs.rsi = layout::ZERO_PAGE_ADDR;
                boot::gdt_long_mode()
            }
            Entry::Pvh(rip) => {
                regs.rip = rip;
                regs.rbx = layout::PVH_INFO_ADDR;
                boot::gdt_protected_mode()
            }
        };
        sregs.gdt.base = layout::GDT_ADDR;
        sregs.gdt.limit = (table.len() * 8 - 1) as u16;
        sregs.idt.base = 0;
        sregs.idt.limit = 0;
        let data = kvm_seg(boot::segment(&table, 2));
        sregs.cs = kvm_seg(boot::segment(&table, 1));
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_seg(boot::segment(&table, 3));
        const CR0_PE: u64 = 1;
        const CR0_ET: u64 = 1 << 4;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LME: u64 = 1 << 8;
        const EFER_LMA: u64 = 1 << 10;
        match entry {
            Entry::Long(_) => {
                sregs.cr3 = layout::PML4_ADDR;
                sregs.cr4 = CR4_PAE;
                sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
                sregs.efer = EFER_LME | EFER_LMA;
            }
            Entry::Pvh(_) => {
                sregs.cr0 = CR0_PE | CR0_ET;
                sregs.cr4 = 0;
                sregs.efer = 0;
            }
        }
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        self.fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
    }

    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the
        // `internal` member of the exit union; reading plain integers from it
        // cannot be undefined behaviour.
        let (sub, n) = unsafe {
            (
                run.__bindgen_anon_1.internal.suberror,
                run.__bindgen_anon_1.internal.ndata,
            )
        };
        format!(
            "KVM internal error on vCPU {} (suberror {sub}, {n} data words)",
            self.id
        )
    }
}

impl PlatformVcpu for X86Vcpu {
    type Error = Error;

    fn run(&mut self, mmio: &Bus) -> Result<Exit, Error> {
        let exit = match self.fd.run() {
            Ok(e) => e,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.stats.interrupted += 1;
                return Ok(Exit::Interrupted);
            }
            Err(e) => return Err(Error::Kvm("KVM_RUN", e)),
        };
        let st = &mut self.stats;
        match &exit {
            KvmExit::IoOut(port, _) => (st.io, st.last) = (st.io + 1, ("io-out", u64::from(*port))),
            KvmExit::IoIn(port, _) => (st.io, st.last) = (st.io + 1, ("io-in", u64::from(*port))),
            KvmExit::MmioRead(a, _) => (st.mmio, st.last) = (st.mmio + 1, ("mmio-read", *a)),
            KvmExit::MmioWrite(a, _) => (st.mmio, st.last) = (st.mmio + 1, ("mmio-write", *a)),
            _ => (st.other, st.last) = (st.other + 1, ("other", 0)),
        }
        let out = match exit {
            KvmExit::IoOut(port, data) => {
                if !self.pio.write(u64::from(port), data) {
                    trace!(port, ?data, "unhandled port write");
                }
                match self.latch.get() {
                    Some(e) => Exit::Stop(e),
                    None => Exit::Continue,
                }
            }
            KvmExit::IoIn(port, data) => {
                if !self.pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
                Exit::Continue
            }
            KvmExit::MmioRead(addr, data) => {
                if !mmio.read(addr, data) {
                    data.fill(0xff);
                }
                Exit::Continue
            }
            KvmExit::MmioWrite(addr, data) => {
                if !mmio.write(addr, data) {
                    trace!(addr, "unhandled MMIO write");
                }
                Exit::Continue
            }
            KvmExit::Hlt | KvmExit::IrqWindowOpen | KvmExit::Intr => Exit::Continue,
            KvmExit::Shutdown => Exit::Stop(GuestExit::TripleFault),
            KvmExit::SystemEvent(t, _) => match t {
                KVM_SYSTEM_EVENT_SHUTDOWN => Exit::Stop(GuestExit::PowerOff),
                KVM_SYSTEM_EVENT_RESET => Exit::Stop(GuestExit::Reboot),
                KVM_SYSTEM_EVENT_CRASH => {
                    Exit::Stop(GuestExit::Crash("KVM reported a guest crash".into()))
                }
                t => Exit::Stop(GuestExit::Crash(format!("unknown KVM system event {t}"))),
            },
            KvmExit::FailEntry(reason, cpu) => Exit::Stop(GuestExit::Crash(format!(
                "KVM could not enter vCPU {cpu} (hardware entry failure reason {reason:#x})"
            ))),
            KvmExit::InternalError => Exit::Stop(GuestExit::Crash(self.internal_error())),
            other => Exit::Stop(GuestExit::Crash(format!(
                "unexpected KVM exit on vCPU {}: {other:?}",
                self.id
            ))),
        };
        Ok(out)
    }

    fn describe(&mut self) -> String {
        let st = &self.stats;
        let mut s = format!(
            "vcpu{} exits io={} mmio={} other={} kicks={} last={} {:#x}",
            self.id, st.io, st.mmio, st.other, st.interrupted, st.last.0, st.last.1
        );
        match self.fd.get_regs() {
            Ok(r) => s.push_str(&format!(
                " rip={:#x} rsp={:#x} rflags={:#x} rax={:#x}",
                r.rip, r.rsp, r.rflags, r.rax
            )),
            Err(e) => s.push_str(&format!(" regs: {e}")),
        }
        if let Ok(sr) = self.fd.get_sregs() {
            s.push_str(&format!(
                " cs={:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                sr.cs.selector, sr.cr0, sr.cr3, sr.cr4, sr.efer
            ));
        }
        if let Ok(mp) = self.fd.get_mp_state() {
            // 0 runnable, 3 halted (KVM_MP_STATE_*).
            s.push_str(&format!(" mp_state={}", mp.mp_state));
        }
        if let Ok(ev) = self.fd.get_vcpu_events() {
            s.push_str(&format!(
                " irq_pending={} nmi_pending={} intr_shadow={}",
                ev.interrupt.injected, ev.nmi.pending, ev.interrupt.shadow
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What KVM holds for each vCPU after `X86Vcpu::new`, read back with
    /// KVM_GET_CPUID2 and KVM_GET_LAPIC on this host's /dev/kvm.
    #[test]
    fn each_vcpu_gets_the_base_table_with_its_own_apic_id() {
        let kvm = match super::super::open_kvm(std::path::Path::new("/dev/kvm")) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("SKIP each_vcpu_gets_the_base_table_with_its_own_apic_id: {e}");
                return;
            }
        };
        let cpus = 3;
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let guest = GuestCpuid::new(&supported, cpus);
        let pio = Arc::new(Bus::new());
        let latch = Arc::new(ExitLatch::default());
        let read = |v: &X86Vcpu| -> Vec<CpuidEntry> {
            v.fd.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .unwrap()
                .as_slice()
                .iter()
                .map(|e| CpuidEntry {
                    function: e.function,
                    index: e.index,
                    flags: e.flags,
                    eax: e.eax,
                    ebx: e.ebx,
                    ecx: e.ecx,
                    edx: e.edx,
                })
                .collect()
        };
        let mut tables = Vec::new();
        for id in 0..cpus {
            let v = X86Vcpu::new(&vm, id, &guest, None, pio.clone(), latch.clone()).unwrap();
            let t = read(&v);
            let l1 = t.iter().find(|e| e.function == 1).expect("leaf 1");
            assert_eq!(l1.ebx >> 24, id, "leaf 1 APIC id");
            assert_eq!((l1.ebx >> 16) & 0xff, cpus, "leaf 1 logical count");
            assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit");
            for e in t.iter().filter(|e| e.function == 0xb) {
                assert_eq!(e.edx, id, "leaf 0xb subleaf {}", e.index);
            }
            assert!(t.iter().all(|e| e.function != 0x1f));
            // KVM's own LAPIC id agrees with what CPUID tells the guest.
            let lapic = v.fd.get_lapic().unwrap();
            assert_eq!(lapic.regs[0x23] as u8, id as u8, "LAPIC id register");
            tables.push(t);
        }
        // Apart from the APIC ids, every vCPU has the same table, with the
        // base's entries (KVM adjusts some bits of what it was given, so the
        // values are compared between vCPUs, not with the base).
        for t in &mut tables {
            cpuid::patch_vcpu(t, 0);
            assert_eq!(t.len(), guest.base.len());
        }
        assert!(tables.windows(2).all(|w| w[0] == w[1]));
    }
}
