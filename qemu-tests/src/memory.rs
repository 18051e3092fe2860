//! How much of a guest's RAM Linux may keep for itself, so a test can check
//! MemTotal against the configured memory without hard-coding a result.

/// Bytes of memory a kernel ELF image occupies when loaded (the sum of its
/// PT_LOAD segments' memory sizes), read from the ELF program headers.
/// Returns `None` for anything that is not a 64-bit ELF.
pub fn elf_load_size(b: &[u8]) -> Option<u64> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return None;
    }
    let big = match b[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let rd = |off: usize, n: usize| -> Option<u64> {
        let s = b.get(off..off.checked_add(n)?)?;
        let mut v = 0u64;
        for i in 0..n {
            let byte = if big { s[i] } else { s[n - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    let phoff = usize::try_from(rd(0x20, 8)?).ok()?;
    let phentsize = usize::try_from(rd(0x36, 2)?).ok()?;
    let phnum = usize::try_from(rd(0x38, 2)?).ok()?;
    if phentsize < 56 {
        return None;
    }
    let mut total = 0u64;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if rd(ph, 4)? == 1 {
            total = total.checked_add(rd(ph + 0x28, 8)?)?;
        }
    }
    Some(total)
}

/// The range MemTotal (KiB) must fall in for a guest given `memory_mib` of
/// RAM and a kernel whose loaded image takes `image_bytes`.
///
/// Upper bound: the RAM itself. Lower bound: RAM minus what Linux reserves
/// for itself: the kernel image, the `struct page` array (64 bytes per 4 KiB
/// page, 1/64 of RAM), a fixed 16 MiB for early allocations, page tables,
/// per-CPU areas and firmware/VMM holes below 1 MiB, and, above 3 GiB, the
/// 64 MiB swiotlb bounce buffer that x86 sets up when RAM crosses 4 GiB.
pub fn memtotal_bounds_kib(memory_mib: u64, image_bytes: u64) -> (u64, u64) {
    let ram = memory_mib * 1024;
    let memmap = ram / 64;
    let image = image_bytes.div_ceil(1024);
    let fixed = 16 * 1024;
    let swiotlb = if memory_mib > 3 * 1024 { 64 * 1024 } else { 0 };
    let reserve = memmap + image + fixed + swiotlb;
    (ram.saturating_sub(reserve), ram)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(big: bool, segs: &[(u32, u64)]) -> Vec<u8> {
        let put = |v: &mut Vec<u8>, x: u64, n: usize| {
            let b = x.to_le_bytes();
            if big {
                v.extend(b[..n].iter().rev());
            } else {
                v.extend(&b[..n]);
            }
        };
        let mut v = vec![0x7f, b'E', b'L', b'F', 2, if big { 2 } else { 1 }, 1];
        v.resize(0x20, 0);
        put(&mut v, 64, 8); // phoff
        put(&mut v, 0, 8); // shoff
        put(&mut v, 0, 4); // flags
        put(&mut v, 64, 2); // ehsize
        put(&mut v, 56, 2); // phentsize
        put(&mut v, segs.len() as u64, 2);
        v.resize(64, 0);
        for &(ty, memsz) in segs {
            put(&mut v, u64::from(ty), 4);
            v.resize(v.len() + 0x24, 0);
            put(&mut v, memsz, 8);
            put(&mut v, 0x20_0000, 8);
        }
        v
    }

    #[test]
    fn load_size_sums_pt_load_only() {
        for big in [false, true] {
            let e = elf(big, &[(1, 0x100_0000), (4, 0x999), (1, 0x60_0000)]);
            assert_eq!(elf_load_size(&e), Some(0x160_0000));
        }
        assert_eq!(elf_load_size(b"MZ not an elf"), None);
        let e = elf(false, &[(1, 1)]);
        assert_eq!(elf_load_size(&e[..80]), None, "truncated headers");
    }

    #[test]
    fn bounds_bracket_what_linux_reports() {
        // Debian 6.1 cloud kernel (44 MiB loaded) under QEMU q35 TCG,
        // observed: 256 MiB -> 223632 KiB, 512 MiB -> 481296 KiB.
        let image = 44 * 1024 * 1024;
        for (mib, seen) in [(256, 223_632), (512, 481_296)] {
            let (lo, hi) = memtotal_bounds_kib(mib, image);
            assert!(lo <= seen && seen <= hi, "{mib} MiB: {lo}..={hi} vs {seen}");
        }
        // A VMM that gave half or double the memory must fail the check.
        let (lo, hi) = memtotal_bounds_kib(512, image);
        assert!(223_632 < lo, "256 MiB of RAM passes for 512");
        assert!(hi < 2 * 481_296, "1 GiB of RAM passes for 512");
    }

    #[test]
    fn tiny_memory_does_not_underflow() {
        assert_eq!(memtotal_bounds_kib(1, 1 << 30).0, 0);
    }
}
