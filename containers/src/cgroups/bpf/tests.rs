use super::devices::*;
use super::insn::*;

fn rule(allow: bool, typ: DevType, major: Option<u32>, minor: Option<u32>, acc: &str) -> DevRule {
    DevRule {
        allow,
        typ,
        major,
        minor,
        access: parse_access(acc).unwrap(),
    }
}

/// Runs a program the way the kernel would, for the subset we emit, on
/// `struct bpf_cgroup_dev_ctx`. Panics on anything else (a test failure).
fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
    let ctx = [access_type, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "runaway program");
        let i = prog[pc];
        let (d, s) = (i.dst as usize, i.src as usize);
        pc += 1;
        match i.code {
            0x61 => {
                assert_eq!(s, 1, "loads only from the context");
                assert!(i.off >= 0 && i.off % 4 == 0 && i.off < 12, "bad ctx load");
                r[d] = u64::from(ctx[i.off as usize / 4]);
            }
            0x54 => r[d] = u64::from(r[d] as u32 & i.imm as u32),
            0x74 => r[d] = u64::from((r[d] as u32) >> (i.imm as u32)),
            0xbc => r[d] = u64::from(r[s] as u32),
            0xb7 => r[d] = i64::from(i.imm) as u64,
            0x56 | 0x16 => {
                let eq = r[d] as u32 == i.imm as u32;
                if eq == (i.code == 0x16) {
                    pc = (pc as i64 + i64::from(i.off)) as usize;
                }
            }
            0x05 => pc = (pc as i64 + i64::from(i.off)) as usize,
            0x95 => return r[0],
            c => panic!("unexpected opcode {c:#x} at {}", pc - 1),
        }
    }
}

/// The verifier's structural checks: every jump lands inside, goes
/// forward, nothing is unreachable, the last instruction is not a fall
/// through.
fn check_cfg(prog: &[Insn]) {
    let mut reach = vec![false; prog.len()];
    reach[0] = true;
    for (pc, i) in prog.iter().enumerate() {
        if !reach[pc] {
            panic!("unreachable instruction {pc}: {i:?}\n{prog:#?}");
        }
        if i.is_jump() {
            let t = pc as i64 + 1 + i64::from(i.off);
            assert!(i.off >= 0, "backward jump at {pc}");
            assert!((t as usize) < prog.len(), "jump out of the program at {pc}");
            reach[t as usize] = true;
        }
        let falls = !(i.code == BPF_JMP | BPF_EXIT || i.code == BPF_JMP | BPF_JA);
        if falls {
            assert!(pc + 1 < prog.len(), "falls off the end");
            reach[pc + 1] = true;
        }
    }
}

#[test]
fn encoding_matches_the_kernel_layout_in_both_byte_orders() {
    // r2 = *(u32 *)(r1 + 4): dst 2, src 1.
    let i = Insn::ldx_w(Reg::R2, Reg::R1, 4);
    assert_eq!(i.encode(Endian::Little), [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
    assert_eq!(i.encode(Endian::Big), [0x61, 0x21, 0, 4, 0, 0, 0, 0]);
    // r0 = 1; exit: the classic "allow" program.
    assert_eq!(
        encode(&[Insn::mov64_imm(Reg::R0, 1), Insn::exit()], Endian::Little),
        [0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        encode(&[Insn::mov64_imm(Reg::R0, 1), Insn::exit()], Endian::Big),
        [0xb7, 0, 0, 0, 0, 0, 0, 1, 0x95, 0, 0, 0, 0, 0, 0, 0]
    );
    // if w4 != 136 goto +3
    let j = Insn::jne32_imm(Reg::R4, 136, 3);
    assert_eq!(j.encode(Endian::Little), [0x56, 0x04, 3, 0, 136, 0, 0, 0]);
    assert_eq!(j.encode(Endian::Big), [0x56, 0x40, 0, 3, 0, 0, 0, 136]);
    // w3 = w2 (src nibble set)
    let m = Insn::mov32_reg(Reg::R3, Reg::R2);
    assert_eq!(m.encode(Endian::Little)[..2], [0xbc, 0x23]);
    assert_eq!(m.encode(Endian::Big)[..2], [0xbc, 0x32]);
    // Negative offsets and immediates round-trip.
    let n = Insn::mov64_imm(Reg::R5, -2);
    for e in [Endian::Little, Endian::Big] {
        assert_eq!(Insn::decode(n.encode(e), e), n);
        let mut k = Insn::ja(-7);
        k.dst = 10;
        k.src = 9;
        assert_eq!(Insn::decode(k.encode(e), e), k);
    }
}

#[test]
fn host_byte_order_is_the_targets() {
    let want = if cfg!(target_endian = "big") {
        Endian::Big
    } else {
        Endian::Little
    };
    assert_eq!(Endian::host(), want);
    // The host encoding's off/imm fields are what the host reads natively.
    let b = Insn::jne32_imm(Reg::R5, 0x0102_0304, 0x0506).encode(Endian::host());
    assert_eq!(i16::from_ne_bytes([b[2], b[3]]), 0x0506);
    assert_eq!(i32::from_ne_bytes([b[4], b[5], b[6], b[7]]), 0x0102_0304);
}

#[test]
fn empty_rule_list_denies_everything() {
    let p = compile(&[]).unwrap();
    check_cfg(&p);
    for acc in [ACC_READ, ACC_WRITE, ACC_MKNOD, ACC_READ | ACC_WRITE] {
        assert_eq!(run(&p, acc << 16 | DEV_CHAR, 1, 3), 0);
    }
}

#[test]
fn last_matching_rule_wins_per_access() {
    use DevType::*;
    let rules = [
        rule(false, All, None, None, "rwm"),
        rule(true, Char, Some(1), Some(3), "rwm"),
        rule(true, Char, Some(1), Some(5), "r"),
        rule(true, Char, Some(136), None, "rw"),
        rule(false, Char, Some(136), Some(2), "w"),
        rule(true, Block, None, None, "m"),
    ];
    let p = compile(&rules).unwrap();
    check_cfg(&p);
    let q = |typ, acc: &str, maj, min| {
        let got = run(&p, parse_access(acc).unwrap() << 16 | typ, maj, min);
        assert_eq!(
            got == 1,
            decide(&rules, typ, parse_access(acc).unwrap(), maj, min)
        );
        got == 1
    };
    assert!(q(DEV_CHAR, "r", 1, 3));
    assert!(q(DEV_CHAR, "rw", 1, 3));
    assert!(q(DEV_CHAR, "m", 1, 3));
    assert!(!q(DEV_BLOCK, "r", 1, 3), "type matters");
    assert!(q(DEV_CHAR, "r", 1, 5));
    assert!(!q(DEV_CHAR, "w", 1, 5), "read-only /dev/zero");
    assert!(!q(DEV_CHAR, "rw", 1, 5), "O_RDWR needs both");
    assert!(!q(DEV_CHAR, "r", 1, 7));
    assert!(q(DEV_CHAR, "rw", 136, 9), "minor wildcard");
    assert!(q(DEV_CHAR, "r", 136, 2));
    assert!(!q(DEV_CHAR, "w", 136, 2), "later deny wins");
    assert!(!q(DEV_CHAR, "m", 136, 9));
    assert!(q(DEV_BLOCK, "m", 8, 0));
    assert!(!q(DEV_BLOCK, "r", 8, 0));
    // A later allow-all overrides everything before it.
    let mut open = rules.to_vec();
    open.push(rule(true, All, None, None, "rwm"));
    let p = compile(&open).unwrap();
    check_cfg(&p);
    assert_eq!(run(&p, (ACC_READ | ACC_WRITE) << 16 | DEV_CHAR, 136, 2), 1);
    assert_eq!(run(&p, ACC_MKNOD << 16 | DEV_BLOCK, 259, 0), 1);
}

#[test]
fn program_equals_the_reference_decision_on_random_rules() {
    // A small deterministic LCG: no extra crates.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u32| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as u32) % n
    };
    for _ in 0..300 {
        let n = rnd(12) as usize;
        let rules: Vec<DevRule> = (0..n)
            .map(|_| DevRule {
                allow: rnd(2) == 0,
                typ: [DevType::All, DevType::Block, DevType::Char][rnd(3) as usize],
                major: (rnd(3) != 0).then(|| rnd(3)),
                minor: (rnd(3) != 0).then(|| rnd(3)),
                access: 1 + rnd(7),
            })
            .collect();
        let prog = compile(&rules).unwrap();
        check_cfg(&prog);
        for e in [Endian::Little, Endian::Big] {
            // What the kernel sees: the bytes, decoded in that byte order.
            let decoded = decode(&encode(&prog, e), e);
            assert_eq!(decoded, prog);
        }
        for typ in [DEV_BLOCK, DEV_CHAR] {
            for acc in 1..8 {
                for maj in 0..3 {
                    for min in 0..3 {
                        let got = run(&prog, acc << 16 | typ, maj, min);
                        let want = decide(&rules, typ, acc, maj, min);
                        assert_eq!(got == 1, want, "{rules:?} {typ} {acc} {maj}:{min}");
                    }
                }
            }
        }
    }
}

#[test]
fn large_numbers_use_all_32_bits() {
    let rules = [rule(
        true,
        DevType::Char,
        Some(u32::MAX),
        Some(0x8000_0000),
        "r",
    )];
    let p = compile(&rules).unwrap();
    assert_eq!(run(&p, ACC_READ << 16 | DEV_CHAR, u32::MAX, 0x8000_0000), 1);
    assert_eq!(run(&p, ACC_READ << 16 | DEV_CHAR, u32::MAX, 0), 0);
}

#[test]
fn runc_defaults() {
    let d = DevRule::defaults();
    assert_eq!(d.len(), DEFAULT_ALLOWED.len());
    let mut rules = vec![rule(false, DevType::All, None, None, "rwm")];
    rules.extend(d);
    let p = compile(&rules).unwrap();
    check_cfg(&p);
    let rw = (ACC_READ | ACC_WRITE) << 16 | DEV_CHAR;
    assert_eq!(run(&p, rw, 1, 3), 1, "/dev/null");
    assert_eq!(run(&p, rw, 5, 2), 1, "/dev/ptmx");
    assert_eq!(run(&p, rw, 136, 4), 1, "/dev/pts/4");
    assert_eq!(run(&p, rw, 10, 200), 0, "/dev/net/tun");
    assert_eq!(run(&p, rw, 1, 1), 0, "/dev/mem");
    assert_eq!(
        run(&p, ACC_MKNOD << 16 | DEV_CHAR, 1, 1),
        1,
        "mknod is allowed"
    );
    assert_eq!(run(&p, ACC_READ << 16 | DEV_BLOCK, 8, 0), 0, "/dev/sda");
}

#[test]
fn oci_rules_are_validated() {
    let parse = |j: &str| {
        let d: oci_spec::runtime::LinuxDeviceCgroup = serde_json::from_str(j).unwrap();
        DevRule::from_oci(&d)
    };
    let r = parse(r#"{"allow":true,"type":"c","major":1,"minor":-1,"access":"rw"}"#).unwrap();
    assert_eq!(r, rule(true, DevType::Char, Some(1), None, "rw"));
    let r = parse(r#"{"allow":false}"#).unwrap();
    assert_eq!(r, rule(false, DevType::All, None, None, "rwm"));
    assert_eq!(
        parse(r#"{"allow":true,"type":"u","major":4}"#).unwrap().typ,
        DevType::Char
    );
    for bad in [
        r#"{"allow":true,"type":"p"}"#,
        r#"{"allow":true,"access":"rx"}"#,
        r#"{"allow":true,"access":""}"#,
        r#"{"allow":true,"major":-2}"#,
        r#"{"allow":true,"minor":4294967296}"#,
    ] {
        let e = parse(bad).unwrap_err();
        assert!(matches!(e, crate::error::Error::Config(_)), "{bad}: {e}");
    }
}

#[test]
fn too_many_rules_is_a_clear_error() {
    let rules: Vec<DevRule> = (0..6000)
        .map(|i| rule(true, DevType::Char, Some(i), Some(i), "rwm"))
        .collect();
    let e = compile(&rules).unwrap_err();
    assert!(
        e.to_string().contains("too many device cgroup rules"),
        "{e}"
    );
}
