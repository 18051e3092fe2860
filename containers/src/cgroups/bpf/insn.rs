//! A small eBPF instruction encoder: only what a device-cgroup program
//! needs (32-bit context loads, 32-bit ALU, 32-bit conditional jumps,
//! `ja`, `mov r0, imm`, `exit`).
//!
//! `struct bpf_insn` is `{ u8 code; u8 dst_reg:4; u8 src_reg:4; s16 off;
//! s32 imm; }` in host byte order. The two register nibbles share one byte
//! whose layout follows the C bitfield allocation of the host: on a
//! little-endian host `dst_reg` is the low nibble, on a big-endian host
//! (s390x) it is the high nibble. `off` and `imm` are host-endian too.

/// Byte order of an encoded program (the kernel wants the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// x86_64, aarch64 (as Linux runs it).
    Little,
    /// s390x.
    Big,
}

impl Endian {
    /// The byte order of the machine this code runs on.
    pub fn host() -> Endian {
        if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        }
    }
}

/// eBPF registers used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    /// Return value.
    R0 = 0,
    /// Context pointer on entry; scratch afterwards.
    R1 = 1,
    /// Scratch.
    R2 = 2,
    /// Scratch.
    R3 = 3,
    /// Scratch.
    R4 = 4,
    /// Scratch.
    R5 = 5,
}

impl Reg {
    /// The register with number `n` (0..=5).
    pub fn from_num(n: u8) -> Option<Reg> {
        Some(match n {
            0 => Reg::R0,
            1 => Reg::R1,
            2 => Reg::R2,
            3 => Reg::R3,
            4 => Reg::R4,
            5 => Reg::R5,
            _ => return None,
        })
    }
}

// Instruction classes.
/// Load from memory into a register.
pub const BPF_LDX: u8 = 0x01;
/// 32-bit ALU.
pub const BPF_ALU: u8 = 0x04;
/// 64-bit jumps (`ja`, `exit`).
pub const BPF_JMP: u8 = 0x05;
/// 32-bit conditional jumps.
pub const BPF_JMP32: u8 = 0x06;
/// 64-bit ALU.
pub const BPF_ALU64: u8 = 0x07;
// Size and mode of loads.
/// 32-bit word.
pub const BPF_W: u8 = 0x00;
/// Memory mode.
pub const BPF_MEM: u8 = 0x60;
// Source operand.
/// Immediate operand.
pub const BPF_K: u8 = 0x00;
/// Register operand.
pub const BPF_X: u8 = 0x08;
// ALU operations.
/// `&=`.
pub const BPF_AND: u8 = 0x50;
/// `>>=` (logical).
pub const BPF_RSH: u8 = 0x70;
/// `=`.
pub const BPF_MOV: u8 = 0xb0;
// Jump operations.
/// Unconditional jump.
pub const BPF_JA: u8 = 0x00;
/// Jump if equal.
pub const BPF_JEQ: u8 = 0x10;
/// Jump if not equal.
pub const BPF_JNE: u8 = 0x50;
/// Return r0.
pub const BPF_EXIT: u8 = 0x90;

/// One decoded eBPF instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode (class | size/op | mode/source).
    pub code: u8,
    /// Destination register (0..=10).
    pub dst: u8,
    /// Source register (0..=10).
    pub src: u8,
    /// Signed offset (memory offset or jump distance).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// Size of one encoded instruction.
pub const INSN_SIZE: usize = 8;

impl Insn {
    /// `dst = *(u32 *)(src + off)`, zero-extended.
    pub fn ldx_w(dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, dst as u8, src as u8, off, 0)
    }

    /// `(u32) dst &= imm`.
    pub fn and32_imm(dst: Reg, imm: u32) -> Insn {
        Insn::new(BPF_ALU | BPF_AND | BPF_K, dst as u8, 0, 0, imm as i32)
    }

    /// `(u32) dst >>= imm`.
    pub fn rsh32_imm(dst: Reg, imm: u32) -> Insn {
        Insn::new(BPF_ALU | BPF_RSH | BPF_K, dst as u8, 0, 0, imm as i32)
    }

    /// `(u32) dst = (u32) src`.
    pub fn mov32_reg(dst: Reg, src: Reg) -> Insn {
        Insn::new(BPF_ALU | BPF_MOV | BPF_X, dst as u8, src as u8, 0, 0)
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst as u8, 0, 0, imm)
    }

    /// `if (u32) dst != imm goto +off`.
    pub fn jne32_imm(dst: Reg, imm: u32, off: i16) -> Insn {
        Insn::new(BPF_JMP32 | BPF_JNE | BPF_K, dst as u8, 0, off, imm as i32)
    }

    /// `if (u32) dst == imm goto +off`.
    pub fn jeq32_imm(dst: Reg, imm: u32, off: i16) -> Insn {
        Insn::new(BPF_JMP32 | BPF_JEQ | BPF_K, dst as u8, 0, off, imm as i32)
    }

    /// `goto +off`.
    pub fn ja(off: i16) -> Insn {
        Insn::new(BPF_JMP | BPF_JA, 0, 0, off, 0)
    }

    /// `return r0`.
    pub fn exit() -> Insn {
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
    }

    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// True for a jump whose `off` is a jump distance.
    pub fn is_jump(&self) -> bool {
        matches!(self.code & 0x07, BPF_JMP | BPF_JMP32) && self.code != BPF_JMP | BPF_EXIT
    }

    /// The 8 bytes of `struct bpf_insn` in byte order `e`.
    pub fn encode(&self, e: Endian) -> [u8; INSN_SIZE] {
        let regs = match e {
            Endian::Little => (self.src << 4) | (self.dst & 0x0f),
            Endian::Big => (self.dst << 4) | (self.src & 0x0f),
        };
        let (off, imm) = match e {
            Endian::Little => (self.off.to_le_bytes(), self.imm.to_le_bytes()),
            Endian::Big => (self.off.to_be_bytes(), self.imm.to_be_bytes()),
        };
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }

    /// Decodes 8 bytes in byte order `e`.
    pub fn decode(b: [u8; INSN_SIZE], e: Endian) -> Insn {
        let (dst, src) = match e {
            Endian::Little => (b[1] & 0x0f, b[1] >> 4),
            Endian::Big => (b[1] >> 4, b[1] & 0x0f),
        };
        let (off, imm) = match e {
            Endian::Little => (
                i16::from_le_bytes([b[2], b[3]]),
                i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            ),
            Endian::Big => (
                i16::from_be_bytes([b[2], b[3]]),
                i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ),
        };
        Insn::new(b[0], dst, src, off, imm)
    }
}

/// Encodes a whole program.
pub fn encode(prog: &[Insn], e: Endian) -> Vec<u8> {
    prog.iter().flat_map(|i| i.encode(e)).collect()
}

/// Decodes a whole program (trailing bytes that do not fill an
/// instruction are ignored).
pub fn decode(bytes: &[u8], e: Endian) -> Vec<Insn> {
    bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; INSN_SIZE];
            b.copy_from_slice(c);
            Insn::decode(b, e)
        })
        .collect()
}
