//! A tiny classic-BPF assembler with symbolic labels.

use crate::error::{Error, Result};

/// One `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

/// BPF_LD | BPF_W | BPF_ABS (BPF_LD and BPF_W are 0).
pub const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
pub const BPF_JEQ_K: u16 = 0x05 | 0x10;
/// BPF_JMP | BPF_JGT | BPF_K.
pub const BPF_JGT_K: u16 = 0x05 | 0x20;
/// BPF_JMP | BPF_JGE | BPF_K.
pub const BPF_JGE_K: u16 = 0x05 | 0x30;
/// BPF_JMP | BPF_JSET | BPF_K.
pub const BPF_JSET_K: u16 = 0x05 | 0x40;
/// BPF_JMP | BPF_JA.
pub const BPF_JA: u16 = 0x05;
/// BPF_RET | BPF_K.
pub const BPF_RET_K: u16 = 0x06;
/// BPF_ALU | BPF_AND | BPF_K.
pub const BPF_ALU_AND_K: u16 = 0x04 | 0x50;

/// A jump target: the next instruction or a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Fall through to the next instruction.
    Next,
    /// Jump to a label.
    Label(usize),
}

#[derive(Clone, Copy, Debug)]
enum Insn {
    Plain(SockFilter),
    Cond {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Ja(usize),
}

/// Builds a program; labels are resolved by [`Asm::finish`].
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    /// A new, unbound label.
    pub fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.insns.len());
    }

    /// `A = seccomp_data[offset]` (32 bits).
    pub fn load(&mut self, offset: u32) {
        self.insns.push(Insn::Plain(SockFilter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        }));
    }

    /// `A &= k`.
    pub fn and(&mut self, k: u32) {
        self.insns.push(Insn::Plain(SockFilter {
            code: BPF_ALU_AND_K,
            jt: 0,
            jf: 0,
            k,
        }));
    }

    /// A conditional jump.
    pub fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.insns.push(Insn::Cond { code, k, jt, jf });
    }

    /// An unconditional jump (32-bit offset).
    pub fn ja(&mut self, label: usize) {
        self.insns.push(Insn::Ja(label));
    }

    /// `return k`.
    pub fn ret(&mut self, k: u32) {
        self.insns.push(Insn::Plain(SockFilter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k,
        }));
    }

    /// Number of instructions so far.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Resolves the labels into relative offsets.
    pub fn finish(self) -> Result<Vec<SockFilter>> {
        let resolve = |l: usize| -> Result<usize> {
            self.labels
                .get(l)
                .copied()
                .flatten()
                .ok_or_else(|| Error::Config("seccomp: internal error: unbound label".into()))
        };
        let mut out = Vec::with_capacity(self.insns.len());
        for (pc, insn) in self.insns.iter().enumerate() {
            let rel = |t: Target| -> Result<u8> {
                match t {
                    Target::Next => Ok(0),
                    Target::Label(l) => {
                        let to = resolve(l)?;
                        let off = to.checked_sub(pc + 1).ok_or_else(|| {
                            Error::Config("seccomp: internal error: backward jump".into())
                        })?;
                        u8::try_from(off).map_err(|_| {
                            Error::Config("seccomp: a rule is too long for a BPF jump".into())
                        })
                    }
                }
            };
            out.push(match *insn {
                Insn::Plain(f) => f,
                Insn::Cond { code, k, jt, jf } => SockFilter {
                    code,
                    jt: rel(jt)?,
                    jf: rel(jf)?,
                    k,
                },
                Insn::Ja(l) => {
                    let to = resolve(l)?;
                    let off = to.checked_sub(pc + 1).ok_or_else(|| {
                        Error::Config("seccomp: internal error: backward jump".into())
                    })?;
                    SockFilter {
                        code: BPF_JA,
                        jt: 0,
                        jf: 0,
                        k: u32::try_from(off)
                            .map_err(|_| Error::Config("seccomp: filter too long".into()))?,
                    }
                }
            });
        }
        if out.len() > 4096 {
            return Err(Error::Config(format!(
                "seccomp: filter has {} instructions, the kernel allows 4096",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Runs a program against a `seccomp_data` image (for tests: a small
/// interpreter of the subset the compiler emits).
pub fn interpret(prog: &[SockFilter], data: &[u8], big_endian: bool) -> Option<u32> {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    let mut steps = 0;
    while pc < prog.len() && steps < 100_000 {
        steps += 1;
        let f = prog[pc];
        pc += 1;
        match f.code {
            BPF_LD_W_ABS => {
                let o = f.k as usize;
                let b = data.get(o..o + 4)?;
                let w = [b[0], b[1], b[2], b[3]];
                a = if big_endian {
                    u32::from_be_bytes(w)
                } else {
                    u32::from_le_bytes(w)
                };
            }
            BPF_ALU_AND_K => a &= f.k,
            BPF_RET_K => return Some(f.k),
            BPF_JA => pc += f.k as usize,
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let t = match f.code {
                    BPF_JEQ_K => a == f.k,
                    BPF_JGT_K => a > f.k,
                    BPF_JGE_K => a >= f.k,
                    _ => a & f.k != 0,
                };
                pc += if t { f.jt } else { f.jf } as usize;
            }
            _ => return None,
        }
    }
    None
}
