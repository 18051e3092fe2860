//! The `bpf(2)` calls a device cgroup needs: load a program, attach it to a
//! cgroup, list what is attached, detach.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::insn::{self, Endian, Insn};
use crate::error::{p, Context, Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`: several programs on one cgroup, all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for `BPF_PROG_LOAD` (the prefix we use; the rest of
/// the 128 bytes we pass stays zero, as the kernel requires).
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    pad: [u64; 8],
}

/// `union bpf_attr` for `BPF_PROG_ATTACH` / `BPF_PROG_DETACH`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 11],
}

/// `union bpf_attr` for `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad0: u32,
    pad: [u64; 10],
}

/// `union bpf_attr` for `BPF_PROG_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    pad: [u32; 13],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::result::Result<i32, nix::Error> {
    // SAFETY: `attr` is a live, fully initialised bpf_attr layout of
    // size_of::<T>() bytes; the pointers inside it (if any) are valid for
    // the lengths given in it for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(nix::Error::last())
    } else {
        Ok(r as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Loads a device cgroup program; on failure the error carries the
/// verifier's log.
pub fn load(prog: &[Insn]) -> Result<OwnedFd> {
    let code = insn::encode(prog, Endian::host());
    let license = CString::new("GPL").unwrap_or_default();
    let mut attr = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len())
            .map_err(|_| Error::Unsupported("device cgroup program too long".into()))?,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..9].copy_from_slice(b"zv_devcg\0");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(Error::Sys {
                ctx: format!(
                    "loading the device cgroup eBPF program ({} instructions); verifier: {}",
                    prog.len(),
                    if tail.is_empty() {
                        "(no log)".to_string()
                    } else {
                        tail.join(" | ")
                    }
                ),
                source: first,
            })
        }
    }
}

/// An open cgroup v2 directory.
pub fn open_cgroup(dir: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .ctx(|| format!("opening cgroup {}", p(dir)))?;
    Ok(OwnedFd::from(f))
}

/// Attaches `prog` to the cgroup (`BPF_F_ALLOW_MULTI`).
pub fn attach(cgroup: &OwnedFd, prog: &OwnedFd) -> Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .ctx(|| "attaching the device cgroup eBPF program")
}

/// Ids of the device programs attached directly to the cgroup.
pub fn query(cgroup: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(nix::Error::ENOSPC) if ids.len() < attr.prog_cnt as usize => {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e).ctx(|| "querying the cgroup's device eBPF programs"),
        }
    }
}

/// A program by id; `None` when it no longer exists.
pub fn prog_by_id(id: u32) -> Result<Option<OwnedFd>> {
    let mut attr = GetFdAttr {
        prog_id: id,
        ..Default::default()
    };
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
        Ok(fd) => Ok(Some(owned(fd))),
        Err(nix::Error::ENOENT) => Ok(None),
        Err(e) => Err(e).ctx(|| format!("opening eBPF program {id}")),
    }
}

/// Detaches program `id` from the cgroup (gone already: fine).
pub fn detach(cgroup: &OwnedFd, id: u32) -> Result<()> {
    let Some(prog) = prog_by_id(id)? else {
        return Ok(());
    };
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    match bpf(BPF_PROG_DETACH, &mut attr) {
        Ok(_) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("detaching device eBPF program {id}")),
    }
}
