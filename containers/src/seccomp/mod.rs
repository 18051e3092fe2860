//! OCI seccomp profiles compiled to classic BPF by our own compiler, for
//! x86_64, aarch64 and s390x (libseccomp would complicate cross-linking and
//! seccompiler lacks s390x). Syscall numbers come from tables generated from
//! the Linux uAPI headers (`gen-tables.sh`): the `syscalls` crate needs
//! nightly on s390x.
//!
//! Layout of the program: check `seccomp_data.arch` against the target's
//! AUDIT_ARCH (mismatch: kill the process), reject x32 numbers on x86_64,
//! then one block per (rule, syscall name) in profile order, and finally
//! the default action.

pub mod arch;
pub mod bpf;
mod tables;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

pub use arch::Arch;
use bpf::{Asm, SockFilter, Target, BPF_JEQ_K, BPF_JGE_K, BPF_JGT_K, BPF_JSET_K};

use crate::error::{Error, Result};

const RET_KILL_THREAD: u32 = 0;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

/// A compiled filter plus the flags to install it with.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The BPF program.
    pub program: Vec<SockFilter>,
    /// `SECCOMP_FILTER_FLAG_*` bits.
    pub flags: u32,
}

fn action(act: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    use LinuxSeccompAction as A;
    let data = |default: u32| errno.unwrap_or(default) & 0xffff;
    Ok(match act {
        A::ScmpActKill | A::ScmpActKillThread => RET_KILL_THREAD,
        A::ScmpActKillProcess => RET_KILL_PROCESS,
        A::ScmpActTrap => RET_TRAP,
        A::ScmpActErrno => RET_ERRNO | data(EPERM),
        A::ScmpActTrace => RET_TRACE | data(EPERM),
        A::ScmpActLog => RET_LOG,
        A::ScmpActAllow => RET_ALLOW,
        A::ScmpActNotify => {
            return Err(Error::Unsupported(
                "seccomp: SCMP_ACT_NOTIFY (no listener support yet)".into(),
            ))
        }
    })
}

/// Compiles an OCI profile for `arch`.
pub fn compile(profile: &LinuxSeccomp, arch: Arch) -> Result<Filter> {
    if profile.listener_path().is_some() {
        return Err(Error::Unsupported(
            "seccomp: listenerPath (no notify support yet)".into(),
        ));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut a = Asm::default();
    // The fail paths sit right after their checks: BPF conditional jumps
    // reach at most 255 instructions ahead.
    let arch_ok = a.label();
    a.load(OFF_ARCH);
    a.jump(
        BPF_JEQ_K,
        arch.audit_arch(),
        Target::Label(arch_ok),
        Target::Next,
    );
    a.ret(RET_KILL_PROCESS);
    a.bind(arch_ok);
    a.load(OFF_NR);
    if let Some(bit) = arch.abi_bit() {
        let nr_ok = a.label();
        a.jump(BPF_JSET_K, bit, Target::Next, Target::Label(nr_ok));
        a.ret(if default == RET_ALLOW {
            RET_ERRNO | ENOSYS
        } else {
            default
        });
        a.bind(nr_ok);
    }
    for rule in profile.syscalls().iter().flatten() {
        let ret = action(rule.action(), rule.errno_ret())?;
        let args = rule.args().clone().unwrap_or_default();
        for name in rule.names() {
            let Some(nr) = arch.syscall(name) else {
                tracing::debug!("seccomp: {name} does not exist on {arch:?}, skipped");
                continue;
            };
            let next = a.label();
            a.jump(BPF_JEQ_K, nr, Target::Next, Target::Label(next));
            for arg in &args {
                compare(&mut a, arch, arg, next)?;
            }
            a.ret(ret);
            a.bind(next);
            if !args.is_empty() {
                a.load(OFF_NR);
            }
        }
    }
    a.ret(default);
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
        };
    }
    Ok(Filter {
        program: a.finish()?,
        flags,
    })
}

/// Emits "if the argument does not satisfy the condition, goto `fail`".
fn compare(a: &mut Asm, arch: Arch, arg: &LinuxSeccompArg, fail: usize) -> Result<()> {
    use LinuxSeccompOperator as Op;
    let idx = arg.index();
    if idx > 5 {
        return Err(Error::Config(format!(
            "seccomp: argument index {idx} out of range 0..=5"
        )));
    }
    let base = OFF_ARGS + 8 * idx as u32;
    let (lo_off, hi_off) = if arch.big_endian() {
        (base + 4, base)
    } else {
        (base, base + 4)
    };
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    let (hi, lo) = split(arg.value());
    let f = Target::Label(fail);
    let n = Target::Next;
    match arg.op() {
        Op::ScmpCmpEq => {
            a.load(hi_off);
            a.jump(BPF_JEQ_K, hi, n, f);
            a.load(lo_off);
            a.jump(BPF_JEQ_K, lo, n, f);
        }
        Op::ScmpCmpNe => {
            let ok = a.label();
            a.load(hi_off);
            a.jump(BPF_JEQ_K, hi, n, Target::Label(ok));
            a.load(lo_off);
            a.jump(BPF_JEQ_K, lo, f, n);
            a.bind(ok);
        }
        Op::ScmpCmpGt | Op::ScmpCmpGe => {
            let ok = a.label();
            let lo_op = if arg.op() == Op::ScmpCmpGt {
                BPF_JGT_K
            } else {
                BPF_JGE_K
            };
            a.load(hi_off);
            a.jump(BPF_JGT_K, hi, Target::Label(ok), n);
            a.jump(BPF_JEQ_K, hi, n, f);
            a.load(lo_off);
            a.jump(lo_op, lo, n, f);
            a.bind(ok);
        }
        Op::ScmpCmpLt | Op::ScmpCmpLe => {
            // arg < v  <=>  !(arg >= v);  arg <= v  <=>  !(arg > v)
            let ok = a.label();
            let lo_op = if arg.op() == Op::ScmpCmpLt {
                BPF_JGE_K
            } else {
                BPF_JGT_K
            };
            a.load(hi_off);
            a.jump(BPF_JGT_K, hi, f, n);
            a.jump(BPF_JEQ_K, hi, n, Target::Label(ok));
            a.load(lo_off);
            a.jump(lo_op, lo, f, n);
            a.bind(ok);
        }
        Op::ScmpCmpMaskedEq => {
            let (mhi, mlo) = (hi, lo);
            let (vhi, vlo) = split(arg.value_two().unwrap_or(0));
            a.load(hi_off);
            a.and(mhi);
            a.jump(BPF_JEQ_K, vhi, n, f);
            a.load(lo_off);
            a.and(mlo);
            a.jump(BPF_JEQ_K, vlo, n, f);
        }
    }
    Ok(())
}

/// Installs a filter on the calling thread (needs no_new_privs or
/// CAP_SYS_ADMIN).
pub fn install(filter: &Filter) -> Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const SockFilter,
    }
    let len = u16::try_from(filter.program.len())
        .map_err(|_| Error::Config("seccomp: filter too long".into()))?;
    let prog = SockFprog {
        len,
        filter: filter.program.as_ptr(),
    };
    // SAFETY: `prog` points at a live, correctly sized array of sock_filter
    // that outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1u32, // SECCOMP_SET_MODE_FILTER
            filter.flags,
            &prog as *const SockFprog,
        )
    };
    if rc < 0 {
        return Err(Error::Sys {
            ctx: "loading the seccomp filter".into(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
