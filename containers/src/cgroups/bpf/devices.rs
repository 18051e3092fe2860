//! OCI device cgroup rules to a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
//!
//! Semantics (the same for v1-style rule lists, evaluated per access bit):
//! for each access the kernel asks about (read, write, mknod), the **last**
//! rule that matches the device (type, major, minor; `a` and a missing or
//! -1 number are wildcards) and names that access decides; when no rule
//! does, the access is denied. An open with `O_RDWR` asks for read and
//! write at once and needs both.
//!
//! This differs from the v1 kernel's exception list in one corner only: on
//! v1, a deny rule removes access from an exception only when the rule's
//! type and numbers are *equal* to the exception's (`c 1:* w` does not
//! narrow an earlier `c 1:3 rw`); here a matching rule always applies.
//!
//! The program (registers after the prologue: w2 = device type, w3 =
//! requested access, w4 = major, w5 = minor):
//!
//! ```text
//!   r2 = *(u32 *)(r1 + 0)      access_type = access << 16 | type
//!   w3 = w2; w3 >>= 16
//!   w2 &= 0xffff
//!   r4 = *(u32 *)(r1 + 4)      major
//!   r5 = *(u32 *)(r1 + 8)      minor
//! for each access bit B (read, write, mknod):
//!   w1 = w3; w1 &= B; if w1 == 0 goto next_bit
//!   for each rule naming B, last first:
//!     if w2 != TYPE goto next_rule    (left out for type a)
//!     if w4 != MAJOR goto next_rule   (left out for a wildcard)
//!     if w5 != MINOR goto next_rule   (left out for a wildcard)
//!     goto next_bit | goto deny       (allow | deny)
//!   next_rule: ...
//!   goto deny                         (no rule matched)
//! next_bit: ...
//!   r0 = 1; exit
//! deny:
//!   r0 = 0; exit
//! ```
//!
//! A rule without conditions ends its bit's chain (the verifier rejects
//! unreachable instructions, so nothing is emitted after it).

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::insn::{Insn, Reg};
use crate::error::{Error, Result};

/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u32 = 4;

/// Offsets in `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
/// u32 minor; }`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

/// Device type of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    /// `a`: block and char.
    All,
    /// `b`.
    Block,
    /// `c` (and OCI's `u`).
    Char,
}

/// One device cgroup rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// Device type.
    pub typ: DevType,
    /// Major number; `None` matches any.
    pub major: Option<u32>,
    /// Minor number; `None` matches any.
    pub minor: Option<u32>,
    /// Access bits (`ACC_*`).
    pub access: u32,
}

/// runc's default allowed devices (`c`/`b *:* m`, null, zero, full, random,
/// urandom, tty, console, ptmx, and the pts range), as (type, major, minor,
/// access).
pub const DEFAULT_ALLOWED: &[(char, Option<u32>, Option<u32>, &str)] = &[
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"),
    ('c', Some(1), Some(5), "rwm"),
    ('c', Some(1), Some(7), "rwm"),
    ('c', Some(1), Some(8), "rwm"),
    ('c', Some(1), Some(9), "rwm"),
    ('c', Some(5), Some(0), "rwm"),
    ('c', Some(5), Some(1), "rwm"),
    ('c', Some(5), Some(2), "rwm"),
    ('c', Some(136), None, "rwm"),
];

/// Parses an access string made of `r`, `w`, `m`.
pub fn parse_access(s: &str) -> Result<u32> {
    let mut acc = 0;
    for c in s.chars() {
        acc |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => {
                return Err(Error::Config(format!(
                    "device cgroup access {s:?} must be made of r, w, m"
                )))
            }
        };
    }
    if acc == 0 {
        return Err(Error::Config(
            "device cgroup access must not be empty".into(),
        ));
    }
    Ok(acc)
}

fn number(what: &str, v: Option<i64>) -> Result<Option<u32>> {
    match v {
        None | Some(-1) => Ok(None),
        Some(n) => u32::try_from(n).map(Some).map_err(|_| {
            Error::Config(format!(
                "device cgroup {what} {n} is out of range (0..=4294967295 or -1)"
            ))
        }),
    }
}

impl DevRule {
    /// From an OCI `linux.resources.devices` entry (missing type: `a`,
    /// missing access: `rwm`).
    pub fn from_oci(d: &LinuxDeviceCgroup) -> Result<DevRule> {
        let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DevType::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DevType::Char,
            LinuxDeviceType::B => DevType::Block,
            LinuxDeviceType::P => {
                return Err(Error::Config(
                    "device cgroup rules cannot name fifos (type p)".into(),
                ))
            }
        };
        Ok(DevRule {
            allow: d.allow(),
            typ,
            major: number("major", d.major())?,
            minor: number("minor", d.minor())?,
            access: parse_access(d.access().as_deref().unwrap_or("rwm"))?,
        })
    }

    /// runc's default allowed devices.
    pub fn defaults() -> Vec<DevRule> {
        DEFAULT_ALLOWED
            .iter()
            .map(|&(t, major, minor, acc)| DevRule {
                allow: true,
                typ: if t == 'b' {
                    DevType::Block
                } else {
                    DevType::Char
                },
                major,
                minor,
                // The table only holds valid access strings.
                access: parse_access(acc).unwrap_or(0),
            })
            .collect()
    }

    /// True when the rule names device `typ` (`DEV_*`) `major:minor`.
    pub fn matches(&self, typ: u32, major: u32, minor: u32) -> bool {
        let t = match self.typ {
            DevType::All => true,
            DevType::Block => typ == DEV_BLOCK,
            DevType::Char => typ == DEV_CHAR,
        };
        t && self.major.is_none_or(|m| m == major) && self.minor.is_none_or(|m| m == minor)
    }
}

/// The reference decision the program implements (see the module docs).
pub fn decide(rules: &[DevRule], typ: u32, access: u32, major: u32, minor: u32) -> bool {
    [ACC_READ, ACC_WRITE, ACC_MKNOD]
        .into_iter()
        .filter(|b| access & b != 0)
        .all(|b| {
            rules
                .iter()
                .rev()
                .find(|r| r.access & b != 0 && r.matches(typ, major, minor))
                .is_some_and(|r| r.allow)
        })
}

/// Forward-jump assembler with labels.
struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, l: usize) {
        self.labels[l] = Some(self.insns.len());
    }

    fn emit(&mut self, i: Insn) {
        self.insns.push(i);
    }

    /// Emits a jump (built with offset 0) to label `l`.
    fn jump(&mut self, i: Insn, l: usize) {
        self.fixups.push((self.insns.len(), l));
        self.insns.push(i);
    }

    fn finish(mut self) -> Result<Vec<Insn>> {
        for (at, l) in self.fixups {
            let target = self.labels[l].ok_or_else(|| Error::State("unbound BPF label".into()))?;
            let off = target as i64 - (at as i64 + 1);
            self.insns[at].off = i16::try_from(off).map_err(|_| {
                Error::Unsupported(
                    "too many device cgroup rules: a jump exceeds the eBPF offset range".into(),
                )
            })?;
        }
        Ok(self.insns)
    }
}

/// Compiles `rules` (in order; the last matching rule wins; default deny).
pub fn compile(rules: &[DevRule]) -> Result<Vec<Insn>> {
    let mut a = Asm {
        insns: Vec::new(),
        fixups: Vec::new(),
        labels: Vec::new(),
    };
    a.emit(Insn::ldx_w(Reg::R2, Reg::R1, CTX_ACCESS_TYPE));
    a.emit(Insn::mov32_reg(Reg::R3, Reg::R2));
    a.emit(Insn::rsh32_imm(Reg::R3, 16));
    a.emit(Insn::and32_imm(Reg::R2, 0xffff));
    a.emit(Insn::ldx_w(Reg::R4, Reg::R1, CTX_MAJOR));
    a.emit(Insn::ldx_w(Reg::R5, Reg::R1, CTX_MINOR));
    let deny = a.label();
    let mut deny_used = false;
    for bit in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
        let next_bit = a.label();
        a.emit(Insn::mov32_reg(Reg::R1, Reg::R3));
        a.emit(Insn::and32_imm(Reg::R1, bit));
        a.jump(Insn::jeq32_imm(Reg::R1, 0, 0), next_bit);
        let mut ended = false;
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let next_rule = a.label();
            let mut conds = 0;
            let typ = match r.typ {
                DevType::All => None,
                DevType::Block => Some(DEV_BLOCK),
                DevType::Char => Some(DEV_CHAR),
            };
            for (reg, want) in [(Reg::R2, typ), (Reg::R4, r.major), (Reg::R5, r.minor)] {
                if let Some(v) = want {
                    a.jump(Insn::jne32_imm(reg, v, 0), next_rule);
                    conds += 1;
                }
            }
            if r.allow {
                a.jump(Insn::ja(0), next_bit);
            } else {
                a.jump(Insn::ja(0), deny);
                deny_used = true;
            }
            if conds == 0 {
                ended = true;
                break;
            }
            a.bind(next_rule);
        }
        if !ended {
            a.jump(Insn::ja(0), deny);
            deny_used = true;
        }
        a.bind(next_bit);
    }
    a.emit(Insn::mov64_imm(Reg::R0, 1));
    a.emit(Insn::exit());
    if deny_used {
        a.bind(deny);
        a.emit(Insn::mov64_imm(Reg::R0, 0));
        a.emit(Insn::exit());
    }
    a.finish()
}
