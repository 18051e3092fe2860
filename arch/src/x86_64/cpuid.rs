//! CPUID filtering: start from what KVM supports, describe the guest's
//! topology and hide what the guest must not use, once per VM ([`base`]);
//! then give each vCPU its APIC id ([`patch_vcpu`]).

/// One CPUID leaf/subleaf, the way `kvm_cpuid_entry2` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidEntry {
    /// Leaf (eax input).
    pub function: u32,
    /// Subleaf (ecx input).
    pub index: u32,
    /// KVM flags (KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1).
    pub flags: u32,
    /// Output eax.
    pub eax: u32,
    /// Output ebx.
    pub ebx: u32,
    /// Output ecx.
    pub ecx: u32,
    /// Output edx.
    pub edx: u32,
}

const SIGNIFICANT_INDEX: u32 = 1;
/// Leaf 1 ecx: running under a hypervisor.
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 edx: more than one logical processor per package.
const L1_EDX_HTT: u32 = 1 << 28;
/// Leaf 7 edx: IA32_ARCH_CAPABILITIES MSR (kvm_pvm refuses writes to it).
const L7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
/// Leaf 1 ecx: performance and debug capability MSR (no PMU here).
const L1_ECX_PDCM: u32 = 1 << 15;

/// Bits needed to number `n` things.
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// The CPUID table every vCPU of a `cpus`-vCPU guest shares (one socket,
/// `cpus` cores, one thread each), filtered once from KVM's supported
/// CPUID. The per-vCPU fields (the APIC ids) are left for [`patch_vcpu`].
pub fn base(supported: &[CpuidEntry], cpus: u32) -> Vec<CpuidEntry> {
    let mut out = Vec::with_capacity(supported.len());
    let core_bits = bits_for(cpus);
    for e in supported {
        let mut e = *e;
        match e.function {
            1 => {
                // EBX[31:24] (the initial APIC id) is per vCPU.
                e.ebx = (e.ebx & 0x0000_ffff) | ((cpus.min(255)) << 16);
                e.ecx |= L1_ECX_HYPERVISOR;
                e.ecx &= !L1_ECX_PDCM;
                if cpus > 1 {
                    e.edx |= L1_EDX_HTT;
                } else {
                    e.edx &= !L1_EDX_HTT;
                }
            }
            4 => {
                // Cores per package - 1 in bits 31:26; caches shared by one thread
                // (L1/L2) or by the whole package (L3).
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { cpus - 1 } else { 0 };
                e.eax = (e.eax & 0x3ff) | ((cpus - 1).min(63) << 26) | ((sharing & 0xfff) << 14);
            }
            6 | 0xa => {
                // Thermal/power management and the PMU: nothing to offer.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            7 if e.index == 0 => e.edx &= !L7_EDX_ARCH_CAPABILITIES,
            0xb => {
                // EDX (the x2APIC id) is per vCPU.
                e.flags |= SIGNIFICANT_INDEX;
                e.edx = 0;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (1 << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = cpus;
                        e.ecx = (2 << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            // The extended topology leaf V2 would need the same care; leaving it
            // out makes Linux use leaf 0xb.
            0x1f => continue,
            _ => {}
        }
        out.push(e);
    }
    out
}

/// Writes vCPU `cpu`'s APIC id (== its index) into a table made by
/// [`base`]: leaf 1 EBX[31:24] and every leaf 0xb subleaf's EDX. Nothing
/// else differs between vCPUs.
pub fn patch_vcpu(table: &mut [CpuidEntry], cpu: u32) {
    for e in table {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | ((cpu & 0xff) << 24),
            0xb => e.edx = cpu,
            _ => {}
        }
    }
}

/// The XCR0 value to start vCPUs with: every state component KVM supports
/// (CPUID leaf 0xd subleaf 0, EDX:EAX), if x87 and SSE are among them.
///
/// KVM derives leaf 0xd's EBX (the XSAVE area size for the enabled
/// components) from the vCPU's XCR0 and refreshes it when the guest runs
/// XSETBV. Under a nested hypervisor that does not forward XSETBV (QEMU TCG's
/// SVM, rung 2) the size stays at the reset value and Linux disables XSAVE
/// with a WARNING; starting from the full set keeps the size consistent. A
/// guest that writes its own XCR0 (Linux does) gets KVM's usual refresh.
pub fn initial_xcr0(supported: &[CpuidEntry]) -> Option<u64> {
    let e = supported
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)?;
    let mask = u64::from(e.eax) | (u64::from(e.edx) << 32);
    (mask & 3 == 3).then_some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CpuidEntry> {
        let mut v = vec![
            CpuidEntry {
                function: 1,
                ebx: 0x0a0b_0800,
                ecx: L1_ECX_PDCM | 1,
                edx: L1_EDX_HTT | 1,
                ..Default::default()
            },
            CpuidEntry {
                function: 7,
                edx: L7_EDX_ARCH_CAPABILITIES | 4,
                ..Default::default()
            },
            CpuidEntry {
                function: 0xa,
                eax: 0x0703_0804,
                ..Default::default()
            },
            CpuidEntry {
                function: 0x1f,
                ..Default::default()
            },
            CpuidEntry {
                function: 4,
                eax: (3 << 5) | 0x1 | (7 << 26),
                ..Default::default()
            },
        ];
        for i in 0..3 {
            v.push(CpuidEntry {
                function: 0xb,
                index: i,
                ..Default::default()
            });
        }
        v
    }

    fn filter(supported: &[CpuidEntry], cpu: u32, cpus: u32) -> Vec<CpuidEntry> {
        let mut t = base(supported, cpus);
        patch_vcpu(&mut t, cpu);
        t
    }

    #[test]
    fn per_cpu_topology() {
        let f = filter(&sample(), 2, 4);
        let l1 = f.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800);
        assert_ne!(l1.ecx & L1_ECX_HYPERVISOR, 0);
        assert_eq!(l1.ecx & L1_ECX_PDCM, 0);
        assert_ne!(l1.edx & L1_EDX_HTT, 0);
        let l7 = f.iter().find(|e| e.function == 7).unwrap();
        assert_eq!(l7.edx, 4);
        assert!(f.iter().all(|e| e.function != 0x1f));
        let pmu = f.iter().find(|e| e.function == 0xa).unwrap();
        assert_eq!(pmu.eax, 0);
        let l4 = f.iter().find(|e| e.function == 4).unwrap();
        assert_eq!(l4.eax >> 26, 3);
        assert_eq!((l4.eax >> 14) & 0xfff, 3);
        let b: Vec<_> = f.iter().filter(|e| e.function == 0xb).collect();
        assert_eq!((b[0].ebx, b[0].ecx, b[0].edx), (1, 0x100, 2));
        assert_eq!((b[1].eax, b[1].ebx, b[1].ecx, b[1].edx), (2, 4, 0x201, 2));
        assert_eq!((b[2].ebx, b[2].ecx), (0, 2));
    }

    #[test]
    fn xcr0_from_leaf_0xd() {
        let mut v = sample();
        assert_eq!(initial_xcr0(&v), None);
        v.push(CpuidEntry {
            function: 0xd,
            index: 1,
            eax: 0xf,
            ..Default::default()
        });
        assert_eq!(initial_xcr0(&v), None);
        v.push(CpuidEntry {
            function: 0xd,
            index: 0,
            eax: 0x207,
            edx: 0x1,
            ..Default::default()
        });
        assert_eq!(initial_xcr0(&v), Some((1 << 32) | 0x207));
        v.last_mut().unwrap().eax = 0x1; // no SSE: leave XCR0 alone
        assert_eq!(initial_xcr0(&v), None);
    }

    #[test]
    fn only_apic_ids_differ_between_vcpus() {
        let b = base(&sample(), 4);
        // The shared table carries no APIC id.
        let l1 = b.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ebx >> 24, 0);
        assert!(b.iter().filter(|e| e.function == 0xb).all(|e| e.edx == 0));
        let (v1, v3) = (filter(&sample(), 1, 4), filter(&sample(), 3, 4));
        assert_eq!(v1.len(), b.len());
        for ((x, y), z) in v1.iter().zip(&v3).zip(&b) {
            match x.function {
                1 => {
                    assert_eq!((x.ebx >> 24, y.ebx >> 24), (1, 3));
                    assert_eq!(x.ebx & 0xff_ffff, z.ebx & 0xff_ffff);
                    assert_eq!((x.eax, x.ecx, x.edx), (z.eax, z.ecx, z.edx));
                }
                0xb => {
                    assert_eq!((x.edx, y.edx), (1, 3));
                    assert_eq!((x.eax, x.ebx, x.ecx), (z.eax, z.ebx, z.ecx));
                }
                _ => assert!(x == z && y == z, "{x:?} {y:?} {z:?}"),
            }
        }
        // Patching again (a reused table) leaves no trace of the old id.
        let mut t = v3.clone();
        patch_vcpu(&mut t, 1);
        assert_eq!(t, v1);
    }

    #[test]
    fn single_cpu() {
        let f = filter(&sample(), 0, 1);
        let l1 = f.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.edx & L1_EDX_HTT, 0);
        assert_eq!(l1.ebx >> 24, 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }
}
