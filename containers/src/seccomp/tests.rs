use super::*;

fn data(arch: Arch, nr: u32, args: [u64; 6]) -> Vec<u8> {
    let mut d = Vec::new();
    let be = arch.big_endian();
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w64 = |v: u64| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    d.extend_from_slice(&w32(nr));
    d.extend_from_slice(&w32(arch.audit_arch()));
    d.extend_from_slice(&w64(0));
    for a in args {
        d.extend_from_slice(&w64(a));
    }
    d
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

fn run(f: &Filter, arch: Arch, name: &str, args: [u64; 6]) -> u32 {
    let nr = arch.syscall(name).unwrap();
    bpf::interpret(&f.program, &data(arch, nr, args), arch.big_endian()).unwrap()
}

const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::S390x];

#[test]
fn deny_list_returns_configured_errno() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
    );
    for arch in ALL {
        let f = compile(&p, arch).unwrap();
        assert_eq!(run(&f, arch, "getpid", [0; 6]), RET_ERRNO | 38, "{arch:?}");
        assert_eq!(run(&f, arch, "mkdirat", [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(&f, arch, "read", [0; 6]), RET_ALLOW);
    }
}

#[test]
fn wrong_arch_is_killed() {
    let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    let f = compile(&p, Arch::X86_64).unwrap();
    let mut d = data(Arch::X86_64, 0, [0; 6]);
    d[4..8].copy_from_slice(&Arch::Aarch64.audit_arch().to_le_bytes());
    assert_eq!(
        bpf::interpret(&f.program, &d, false),
        Some(RET_KILL_PROCESS)
    );
}

#[test]
fn x32_numbers_do_not_bypass_a_deny_list() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_KILL"}]}"#,
    );
    let f = compile(&p, Arch::X86_64).unwrap();
    let d = data(Arch::X86_64, 39 | 0x4000_0000, [0; 6]);
    assert_eq!(
        bpf::interpret(&f.program, &d, false),
        Some(RET_ERRNO | ENOSYS)
    );
}

#[test]
fn allow_list_with_default_errno() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
            {"names":["read","write","no_such_syscall"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    for arch in ALL {
        let f = compile(&p, arch).unwrap();
        assert_eq!(run(&f, arch, "write", [0; 6]), RET_ALLOW);
        assert_eq!(run(&f, arch, "getpid", [0; 6]), RET_ERRNO | 1);
    }
}

#[test]
fn argument_comparisons_use_64_bits_and_arch_byte_order() {
    let cases = [
        (
            "SCMP_CMP_EQ",
            0x1_0000_0005u64,
            0u64,
            [(0x1_0000_0005u64, true), (5, false), (0x1_0000_0006, false)],
        ),
        (
            "SCMP_CMP_NE",
            7,
            0,
            [(7, false), (8, true), (0x1_0000_0007, true)],
        ),
        (
            "SCMP_CMP_GT",
            0x1_0000_0000,
            0,
            [
                (0x1_0000_0001, true),
                (0x1_0000_0000, false),
                (0xffff_ffff, false),
            ],
        ),
        (
            "SCMP_CMP_GE",
            10,
            0,
            [(10, true), (9, false), (1 << 40, true)],
        ),
        (
            "SCMP_CMP_LT",
            0x2_0000_0000,
            0,
            [
                (0x1_ffff_ffff, true),
                (0x2_0000_0000, false),
                (0x3_0000_0000, false),
            ],
        ),
        ("SCMP_CMP_LE", 10, 0, [(10, true), (11, false), (0, true)]),
        (
            "SCMP_CMP_MASKED_EQ",
            0xff00_0000_00f0,
            0x1200_0000_0030,
            [
                (0x12ab_0000_0031, true),
                (0x1300_0000_0030, false),
                (0x1200_0000_0040, false),
            ],
        ),
    ];
    for arch in ALL {
        for (op, value, two, probes) in cases {
            let p = profile(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["ioctl"],
                "action":"SCMP_ACT_ERRNO","errnoRet":5,
                "args":[{{"index":1,"value":{value},"valueTwo":{two},"op":"{op}"}}]}}]}}"#
            ));
            let f = compile(&p, arch).unwrap();
            for (probe, denied) in probes {
                let got = run(&f, arch, "ioctl", [0, probe, 0, 0, 0, 0]);
                let want = if denied { RET_ERRNO | 5 } else { RET_ALLOW };
                assert_eq!(got, want, "{arch:?} {op} value={value:#x} arg={probe:#x}");
            }
        }
    }
}

#[test]
fn notify_is_rejected_clearly() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    );
    let e = compile(&p, Arch::X86_64).unwrap_err();
    assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
}

#[test]
fn flags_are_mapped() {
    let p = profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
    );
    assert_eq!(compile(&p, Arch::S390x).unwrap().flags, 6);
}

#[test]
fn large_profiles_compile_and_keep_working() {
    let names: Vec<String> = tables::X86_64
        .iter()
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    let p = profile(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {{"names":[{}],"action":"SCMP_ACT_ALLOW"}},
            {{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":8,"op":"SCMP_CMP_EQ"}}]}}]}}"#,
        names.join(",")
    ));
    for arch in ALL {
        let f = compile(&p, arch).unwrap();
        assert!(f.program.len() > 300);
        assert_eq!(run(&f, arch, "read", [0; 6]), RET_ALLOW);
        let mut d = data(arch, 0, [0; 6]);
        let bad = if arch.big_endian() {
            Arch::X86_64
        } else {
            Arch::S390x
        }
        .audit_arch();
        let w = if arch.big_endian() {
            bad.to_be_bytes()
        } else {
            bad.to_le_bytes()
        };
        d[4..8].copy_from_slice(&w);
        assert_eq!(
            bpf::interpret(&f.program, &d, arch.big_endian()),
            Some(RET_KILL_PROCESS)
        );
    }
}
