//! A small AML encoder: just what zvisor's DSDT needs (names, integers,
//! strings, packages, buffers, devices, scopes and resource templates).

/// An AML name segment or path; `\` and `.` separators are allowed.
fn name_string(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let rest = match path.strip_prefix('\\') {
        Some(r) => {
            out.push(b'\\');
            r
        }
        None => path,
    };
    let segs: Vec<&str> = rest.split('.').filter(|s| !s.is_empty()).collect();
    match segs.len() {
        0 => out.push(0),
        1 => {}
        2 => out.push(0x2e), // DualNamePrefix
        n => {
            out.push(0x2f); // MultiNamePrefix
            out.push(n as u8);
        }
    }
    for s in segs {
        let mut seg = [b'_'; 4];
        for (d, c) in seg.iter_mut().zip(s.bytes()) {
            *d = c;
        }
        out.extend(seg);
    }
    out
}

/// PkgLength encoding of a body of `len` bytes (the length counts itself).
pub fn pkg_length(len: usize) -> Vec<u8> {
    if len + 1 < 0x40 {
        return vec![(len + 1) as u8];
    }
    for n in 2..=4usize {
        let total = len + n;
        if total < 1 << (4 + 8 * (n - 1)) {
            let mut v = vec![(((n - 1) as u8) << 6) | (total & 0xf) as u8];
            for i in 0..n - 1 {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return v;
        }
    }
    // 2^28 bytes of AML is far beyond any table we build.
    vec![0xff, 0xff, 0xff, 0xff]
}

/// An integer, in the shortest encoding.
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        2..=0xff => vec![0x0a, v as u8],
        0x100..=0xffff => {
            let mut o = vec![0x0b];
            o.extend((v as u16).to_le_bytes());
            o
        }
        0x1_0000..=0xffff_ffff => {
            let mut o = vec![0x0c];
            o.extend((v as u32).to_le_bytes());
            o
        }
        _ => {
            let mut o = vec![0x0e];
            o.extend(v.to_le_bytes());
            o
        }
    }
}

/// A string constant.
pub fn string(s: &str) -> Vec<u8> {
    let mut o = vec![0x0d];
    o.extend(s.bytes().filter(|&b| b != 0 && b < 0x80));
    o.push(0);
    o
}

/// A compressed EISA id such as `PNP0501`, as an integer.
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    if b.len() != 7 {
        return integer(0);
    }
    let c = |x: u8| u32::from(x.wrapping_sub(0x40) & 0x1f);
    let h = |x: u8| (x as char).to_digit(16).unwrap_or(0);
    let v = (c(b[0]) << 26)
        | (c(b[1]) << 21)
        | (c(b[2]) << 16)
        | (h(b[3]) << 12)
        | (h(b[4]) << 8)
        | (h(b[5]) << 4)
        | h(b[6]);
    integer(u64::from(v.swap_bytes()))
}

/// `Name(path, value)`.
pub fn name(path: &str, value: Vec<u8>) -> Vec<u8> {
    let mut o = vec![0x08];
    o.extend(name_string(path));
    o.extend(value);
    o
}

fn with_pkg(prefix: &[u8], head: Vec<u8>, body: &[Vec<u8>]) -> Vec<u8> {
    let mut inner = head;
    for b in body {
        inner.extend(b);
    }
    let mut o = prefix.to_vec();
    o.extend(pkg_length(inner.len()));
    o.extend(inner);
    o
}

/// `Package() { elements }`.
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x12], vec![elements.len() as u8], elements)
}

/// `Scope(path) { body }`.
pub fn scope(path: &str, body: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x10], name_string(path), body)
}

/// `Device(name) { body }`.
pub fn device(path: &str, body: &[Vec<u8>]) -> Vec<u8> {
    with_pkg(&[0x5b, 0x82], name_string(path), body)
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    with_pkg(&[0x11], integer(bytes.len() as u64), &[bytes.to_vec()])
}

/// Resource descriptors for `ResourceTemplate()`.
pub mod res {
    /// `IO(Decode16, port, port, 1, len)`.
    pub fn io(port: u16, len: u8) -> Vec<u8> {
        let mut o = vec![0x47, 0x01];
        o.extend(port.to_le_bytes());
        o.extend(port.to_le_bytes());
        o.extend([1, len]);
        o
    }
    /// `IRQNoFlags() { irq }` (ISA, edge, active high).
    pub fn irq(irq: u8) -> Vec<u8> {
        let mut o = vec![0x22];
        o.extend((1u16 << (irq & 15)).to_le_bytes());
        o
    }
    /// `Memory32Fixed(ReadWrite, base, len)`.
    pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
        let mut o = vec![0x86, 9, 0, 1];
        o.extend(base.to_le_bytes());
        o.extend(len.to_le_bytes());
        o
    }
    /// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`.
    pub fn interrupt(gsi: u32) -> Vec<u8> {
        let mut o = vec![0x89, 6, 0, 0x03, 1];
        o.extend(gsi.to_le_bytes());
        o
    }
}

/// `ResourceTemplate() { descriptors }` with its end tag.
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut b: Vec<u8> = descriptors.concat();
    b.extend([0x79, 0]);
    buffer(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_lengths() {
        assert_eq!(pkg_length(0), vec![1]);
        assert_eq!(pkg_length(62), vec![63]);
        // 63 body bytes + 2 length bytes = 65 = 0x41.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        assert_eq!(pkg_length(0xffd), vec![0x4f, 0xff]);
        assert_eq!(pkg_length(0xffe), vec![0x81, 0x00, 0x01]);
    }

    #[test]
    fn names_and_ints() {
        assert_eq!(name_string("_SB"), b"_SB_".to_vec());
        assert_eq!(name_string("\\_SB.COM1"), b"\\\x2e_SB_COM1".to_vec());
        assert_eq!(integer(0x505), vec![0x0b, 0x05, 0x05]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        // PNP0501 is 0x0105d041 in its compressed form, as iasl emits it.
        assert_eq!(eisa_id("PNP0501"), vec![0x0c, 0x41, 0xd0, 0x05, 0x01]);
        assert_eq!(string("QEMU0001"), b"\x0dQEMU0001\0".to_vec());
    }

    #[test]
    fn device_encoding() {
        // Device(PVPN) { Name(_HID, "QEMU0001") } as iasl compiles it.
        let d = device("PVPN", &[name("_HID", string("QEMU0001"))]);
        let expect: Vec<u8> = [
            &[0x5b, 0x82, 0x14][..],
            b"PVPN",
            &[0x08],
            b"_HID",
            b"\x0dQEMU0001\0",
        ]
        .concat();
        assert_eq!(d, expect);
        let rt = resource_template(&[res::io(0x505, 1)]);
        assert_eq!(
            rt,
            vec![
                0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01, 0x79, 0x00
            ]
        );
    }
}
