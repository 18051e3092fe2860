//! The runtime's operations: create, start, state, kill, delete, exec, ps,
//! pause, resume, update.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};
use serde_json::json;

use crate::cgroups::{rel_path, Cgroup, Layout};
use crate::error::{p, Context, Error, Result};
use crate::init::{self, InitCtx};
use crate::spawn::{self, Msg};
use crate::state::{self, Record, StateDir, Status};
use crate::{config, hooks};

/// Options of `create` (and `run`).
#[derive(Default, Debug, Clone)]
pub struct CreateOpts {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Where to write the init's pid.
    pub pid_file: Option<PathBuf>,
    /// Unix socket receiving the pty master.
    pub console_socket: Option<PathBuf>,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Number of extra fds (from 3) passed through.
    pub preserve_fds: i32,
}

const SPEC_COPY: &str = "config.json";

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    use LinuxNamespaceType as T;
    match t {
        T::Mount => CloneFlags::CLONE_NEWNS,
        T::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        T::Uts => CloneFlags::CLONE_NEWUTS,
        T::Ipc => CloneFlags::CLONE_NEWIPC,
        T::User => CloneFlags::CLONE_NEWUSER,
        T::Pid => CloneFlags::CLONE_NEWPID,
        T::Network => CloneFlags::CLONE_NEWNET,
        T::Time => CloneFlags::from_bits_retain(0x80),
    }
}

fn id_map(m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>) -> String {
    m.iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// `linux.timeOffsets` in the kernel's timens_offsets syntax.
fn timens_offsets(linux: &oci_spec::runtime::Linux) -> Result<Option<String>> {
    let Some(offs) = linux.time_offsets() else {
        return Ok(None);
    };
    let mut s = String::new();
    for (clock, o) in offs {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::Config(format!(
                "timeOffsets clock {clock:?} (monotonic or boottime)"
            )));
        }
        s.push_str(&format!(
            "{clock} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    Ok(Some(s))
}

/// Host uid/gid of the container's root in a new user namespace.
fn root_host_ids(linux: &oci_spec::runtime::Linux) -> Option<(u32, u32)> {
    let find = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    let new_user = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if !new_user {
        return None;
    }
    Some((find(linux.uid_mappings())?, find(linux.gid_mappings())?))
}

/// The OCI state JSON given to hooks and printed by `state`.
pub fn state_json(rec: &Record, status: Status, pid: Option<i32>) -> String {
    json!({
        "ociVersion": "1.0.2",
        "id": rec.id,
        "status": status.to_string(),
        "pid": pid.unwrap_or(0),
        "bundle": rec.bundle,
        "rootfs": rec.rootfs,
        "created": rec.created,
        "owner": "",
        "annotations": rec.annotations,
    })
    .to_string()
}

/// The default device cgroup rules (runc's list) after the config's own.
fn device_rules(spec: &Spec) -> Result<LinuxResources> {
    let linux = spec.linux().as_ref();
    let mut res = linux
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let mut rules = vec![json!({"allow": false, "access": "rwm"})];
    for r in res.devices().iter().flatten() {
        rules.push(serde_json::to_value(r).map_err(|e| Error::Config(e.to_string()))?);
    }
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
    ] {
        rules
            .push(json!({"allow": true, "type": "c", "major": maj, "minor": min, "access": "rwm"}));
    }
    rules.push(json!({"allow": true, "type": "c", "major": 136, "access": "rwm"}));
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        let t = serde_json::to_value(d.typ()).map_err(|e| Error::Config(e.to_string()))?;
        rules.push(json!({"allow": true, "type": t, "major": d.major(), "minor": d.minor(), "access": "rwm"}));
    }
    res.set_devices(Some(
        serde_json::from_value(serde_json::Value::Array(rules))
            .map_err(|e| Error::Config(e.to_string()))?,
    ));
    Ok(res)
}

/// Creates a container; returns the init's pid.
pub fn create(root: &Path, id: &str, o: &CreateOpts) -> Result<i32> {
    let bundle = std::fs::canonicalize(&o.bundle).ctx(|| format!("bundle {}", p(&o.bundle)))?;
    let spec = config::load(&bundle)?;
    config::validate(&spec, &bundle, &config::Host::current())?;
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal && o.console_socket.is_none() {
        return Err(Error::Config(
            "process.terminal is true but no --console-socket was given".into(),
        ));
    }
    let rootfs = config::rootfs(&spec, &bundle)?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Config("no linux".into()))?;
    let rel = rel_path(linux.cgroups_path().as_deref(), id)?;
    let layout = Layout::detect()?;
    let sd = StateDir::create(root, id)?;
    let mut rec = Record {
        id: id.into(),
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        status: Status::Creating,
        pid: None,
        pid_start: None,
        cgroup: rel.clone(),
        created: state::now_rfc3339(),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        own_pidns: config::ns_types(&spec).contains(&LinuxNamespaceType::Pid),
    };
    let cg = Cgroup::new(layout, rel);
    let r = (|| -> Result<i32> {
        sd.save(&rec)?;
        let spec_json = serde_json::to_vec(&spec).map_err(|e| Error::State(e.to_string()))?;
        state::write_atomic(&sd.dir.join(SPEC_COPY), &spec_json)?;
        cg.create()?;
        cg.apply(&device_rules(&spec)?)?;
        nix::unistd::mkfifo(&sd.fifo(), Mode::from_bits_truncate(0o600))
            .ctx(|| "creating the exec fifo")?;
        if let Some((uid, gid)) = root_host_ids(linux) {
            // The container's root must be able to open the fifo.
            nix::unistd::chown(
                &sd.fifo(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .ctx(|| "chown of the exec fifo")?;
        }
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(sd.fifo())
            .ctx(|| "opening the exec fifo")?;
        let console = match (&o.console_socket, terminal) {
            (Some(s), true) => Some(OwnedFd::from(
                UnixStream::connect(s).ctx(|| format!("connecting to console socket {}", p(s)))?,
            )),
            _ => None,
        };
        let mut join = Vec::new();
        let mut new = CloneFlags::empty();
        let nss: Vec<_> = linux.namespaces().clone().unwrap_or_default();
        let mut ordered: Vec<_> = nss.iter().collect();
        ordered.sort_by_key(|n| n.typ() != LinuxNamespaceType::User);
        for n in ordered {
            match n.path() {
                Some(path) => join.push((ns_flag(n.typ()), path.clone())),
                None => new |= ns_flag(n.typ()),
            }
        }
        let userns = new.contains(CloneFlags::CLONE_NEWUSER);
        let opts = spawn::Opts {
            join,
            new,
            maps: userns.then(|| (id_map(linux.uid_mappings()), id_map(linux.gid_mappings()))),
            cgroup: Some(&cg),
            timens_offsets: timens_offsets(linux)?,
            close: vec![sd.lock_fd()],
        };
        let ctx = InitCtx {
            spec: &spec,
            rootfs: &rootfs,
            bundle: &bundle,
            no_pivot: o.no_pivot,
            userns,
            mntns: new.contains(CloneFlags::CLONE_NEWNS),
            utsns: new.contains(CloneFlags::CLONE_NEWUTS)
                || config::ns_types(&spec).contains(&LinuxNamespaceType::Uts),
            cgroup: Some(&cg),
            fifo: fifo.as_raw_fd(),
            console,
            preserve_fds: o.preserve_fds,
        };
        let (pid, chan) = spawn::spawn(&opts, |chan| init::container_init(chan, &ctx))?;
        drop(ctx);
        rec.pid = Some(pid);
        rec.pid_start = state::pid_start_time(pid);
        sd.save(&rec)?;
        loop {
            match chan.expect("it was created")? {
                Msg::Hooks => {
                    let st = state_json(&rec, Status::Creating, Some(pid));
                    if let Some(h) = spec.hooks() {
                        hooks::run("prestart", h.prestart().as_deref().unwrap_or(&[]), &st)?;
                        hooks::run(
                            "createRuntime",
                            h.create_runtime().as_deref().unwrap_or(&[]),
                            &st,
                        )?;
                    }
                    chan.send(&Msg::HooksDone(st))?;
                }
                Msg::Ready => break,
                m => return Err(Error::Child(format!("unexpected sync message {m:?}"))),
            }
        }
        rec.status = Status::Created;
        sd.save(&rec)?;
        if let Some(pf) = &o.pid_file {
            state::write_atomic(pf, pid.to_string().as_bytes())?;
        }
        Ok(pid)
    })();
    match r {
        Ok(pid) => Ok(pid),
        Err(e) => {
            if let Some(pid) = rec.pid {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = cg.destroy();
            let _ = sd.remove();
            Err(e)
        }
    }
}

/// Loads the record and the spec copy of a locked container.
fn load(sd: &StateDir, id: &str) -> Result<(Record, Cgroup)> {
    let rec = sd.load()?.ok_or_else(|| Error::NotFound(id.into()))?;
    let cg = Cgroup::new(Layout::detect()?, rec.cgroup.clone());
    Ok((rec, cg))
}

fn load_spec(dir: &Path) -> Option<Spec> {
    let b = std::fs::read(dir.join(SPEC_COPY)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The live status of a container.
pub fn status(dir: &Path, rec: &Record, cg: &Cgroup) -> Status {
    let alive = rec.pid.is_some_and(|pid| state::alive(pid, rec.pid_start));
    match (rec.status, alive) {
        (Status::Creating, true) => Status::Creating,
        (_, false) => Status::Stopped,
        _ if dir.join(state::EXEC_FIFO).exists() => Status::Created,
        _ if cg.is_frozen().unwrap_or(false) => Status::Paused,
        _ => Status::Running,
    }
}

/// `start`: lets the init exec the user process.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let sd = StateDir::open(root, id)?;
    let (mut rec, cg) = load(&sd, id)?;
    let st = status(&sd.dir, &rec, &cg);
    if st != Status::Created {
        return Err(Error::State(format!(
            "cannot start container {id} in state {st}"
        )));
    }
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(sd.fifo())
        .ctx(|| "opening the exec fifo")?;
    let pid = rec.pid.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into a local buffer.
        let n = unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            break;
        }
        let gone = !state::alive(pid, rec.pid_start);
        // SAFETY: as above; a last read in case it wrote, then exited.
        if gone && unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr().cast(), 1) } == 1 {
            break;
        }
        if gone || Instant::now() > deadline {
            return Err(Error::State(format!(
                "container {id}'s init exited before it started"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // The init holds its end until it execs the user process (O_CLOEXEC):
    // end of file means exec'd (or died); poststart hooks run after that.
    loop {
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into a local buffer.
        let n = unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        let again = n < 0 && nix::Error::last() == nix::Error::EAGAIN;
        if !again || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = std::fs::remove_file(sd.fifo());
    rec.status = Status::Running;
    sd.save(&rec)?;
    if let Some(h) = load_spec(&sd.dir).and_then(|s| s.hooks().clone()) {
        let st = state_json(&rec, Status::Running, rec.pid);
        if let Err(e) = hooks::run("poststart", h.poststart().as_deref().unwrap_or(&[]), &st) {
            tracing::warn!("{}", e.chain());
        }
    }
    Ok(())
}

/// `state`: the OCI state JSON.
pub fn state(root: &Path, id: &str) -> Result<String> {
    state::check_id(id)?;
    let dir = root.join(id);
    let rec = state::read_record(&dir)?.ok_or_else(|| Error::NotFound(id.into()))?;
    let cg = Cgroup::new(Layout::detect()?, rec.cgroup.clone());
    let st = status(&dir, &rec, &cg);
    let pid = (st != Status::Stopped).then_some(rec.pid).flatten();
    Ok(state_json(&rec, st, pid))
}

/// `kill`: signals the init (or, with `all`, every process).
pub fn kill_container(root: &Path, id: &str, sig: Signal, all: bool) -> Result<()> {
    let sd = StateDir::open(root, id)?;
    let (rec, cg) = load(&sd, id)?;
    let st = status(&sd.dir, &rec, &cg);
    if st == Status::Stopped && !all {
        return Err(Error::State(format!("container {id} is not running")));
    }
    if all {
        for pid in cg.procs()? {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        return Ok(());
    }
    let pid = rec
        .pid
        .ok_or_else(|| Error::State(format!("container {id} has no process")))?;
    kill(Pid::from_raw(pid), sig).ctx(|| format!("sending {sig} to {pid}"))
}

/// `delete`: removes a stopped container (any container with `force`).
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let sd = match StateDir::open(root, id) {
        Ok(sd) => sd,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(rec) = sd.load()? else {
        // create was killed before it wrote anything else.
        return sd.remove();
    };
    let cg = Cgroup::new(Layout::detect()?, rec.cgroup.clone());
    let st = status(&sd.dir, &rec, &cg);
    if !force && !matches!(st, Status::Stopped | Status::Created) {
        return Err(Error::State(format!(
            "cannot delete container {id} that is {st}; stop it or use --force"
        )));
    }
    if let Some(pid) = rec.pid {
        if state::alive(pid, rec.pid_start) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    cg.destroy()?;
    if let Some(pid) = rec.pid {
        let deadline = Instant::now() + Duration::from_secs(5);
        while state::alive(pid, rec.pid_start) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if rec.status != Status::Creating {
        if let Some(h) = load_spec(&sd.dir).and_then(|s| s.hooks().clone()) {
            let stj = state_json(&rec, Status::Stopped, None);
            if let Err(e) = hooks::run("poststop", h.poststop().as_deref().unwrap_or(&[]), &stj) {
                tracing::warn!("{}", e.chain());
            }
        }
    }
    sd.remove()
}

/// The records of all containers, with their live status.
pub fn list(root: &Path) -> Result<Vec<(Record, Status)>> {
    let layout = Layout::detect()?;
    let mut out = Vec::new();
    for id in state::list_ids(root)? {
        let dir = root.join(&id);
        if let Some(rec) = state::read_record(&dir)? {
            let cg = Cgroup::new(layout.clone(), rec.cgroup.clone());
            let st = status(&dir, &rec, &cg);
            out.push((rec, st));
        }
    }
    Ok(out)
}

/// `pause` (`true`) and `resume`.
pub fn pause(root: &Path, id: &str, frozen: bool) -> Result<()> {
    let sd = StateDir::open(root, id)?;
    let (mut rec, cg) = load(&sd, id)?;
    let st = status(&sd.dir, &rec, &cg);
    match (frozen, st) {
        (true, Status::Running) | (true, Status::Created) | (false, Status::Paused) => {}
        _ => {
            return Err(Error::State(format!(
                "cannot {} container {id} that is {st}",
                if frozen { "pause" } else { "resume" }
            )))
        }
    }
    cg.set_frozen(frozen)?;
    rec.status = if frozen {
        Status::Paused
    } else {
        Status::Running
    };
    sd.save(&rec)
}

/// `update`: applies new resources.
pub fn update(root: &Path, id: &str, res: &LinuxResources) -> Result<()> {
    let sd = StateDir::open(root, id)?;
    let (rec, cg) = load(&sd, id)?;
    if status(&sd.dir, &rec, &cg) == Status::Stopped {
        return Err(Error::State(format!("container {id} is stopped")));
    }
    cg.apply(res)
}

/// `ps`: pids in the container's cgroup.
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let sd = StateDir::open(root, id)?;
    let (_, cg) = load(&sd, id)?;
    cg.procs()
}

/// Options of `exec`.
#[derive(Default, Debug, Clone)]
pub struct ExecOpts {
    /// Unix socket receiving the pty master.
    pub console_socket: Option<PathBuf>,
    /// Where to write the new process's pid.
    pub pid_file: Option<PathBuf>,
    /// Extra fds passed through.
    pub preserve_fds: i32,
}

/// `exec`: starts `proc_` in a running container; returns its host pid.
pub fn exec(root: &Path, id: &str, proc_: &Process, o: &ExecOpts) -> Result<i32> {
    config::validate_process(proc_, &config::Host::current())?;
    let (rec, cg, spec) = {
        let sd = StateDir::open(root, id)?;
        let (rec, cg) = load(&sd, id)?;
        let st = status(&sd.dir, &rec, &cg);
        if !matches!(st, Status::Running | Status::Created) {
            return Err(Error::State(format!(
                "cannot exec in container {id} that is {st}"
            )));
        }
        let spec = load_spec(&sd.dir)
            .ok_or_else(|| Error::State(format!("container {id} has no saved config")))?;
        (rec, cg, spec)
    };
    let pid = rec.pid.unwrap_or(0);
    let mut join = Vec::new();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("time", CloneFlags::from_bits_retain(0x80)),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let a = std::fs::metadata(&theirs);
        let b = std::fs::metadata(format!("/proc/self/ns/{name}"));
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (a, b) {
            if a.ino() != b.ino() || a.dev() != b.dev() {
                join.push((flag, theirs));
            }
        }
    }
    let terminal = proc_.terminal() == Some(true);
    let console = match (&o.console_socket, terminal) {
        (Some(s), true) => Some(OwnedFd::from(
            UnixStream::connect(s).ctx(|| format!("connecting to console socket {}", p(s)))?,
        )),
        (None, true) => return Err(Error::Config("--tty needs --console-socket".into())),
        _ => None,
    };
    let opts = spawn::Opts {
        join,
        new: CloneFlags::empty(),
        maps: None,
        cgroup: Some(&cg),
        timens_offsets: None,
        close: Vec::new(),
    };
    let preserve = o.preserve_fds;
    let (child, chan) = spawn::spawn(&opts, move |chan| {
        init::exec_init(chan, proc_, &spec, console, preserve)
    })?;
    match chan.expect("exec")? {
        Msg::Ready => {}
        m => return Err(Error::Child(format!("unexpected sync message {m:?}"))),
    }
    // EOF (close-on-exec) means execve succeeded.
    if let Some(Msg::Error(e)) = chan.recv()? {
        return Err(Error::Child(e));
    }
    if let Some(pf) = &o.pid_file {
        state::write_atomic(pf, child.to_string().as_bytes())?;
    }
    Ok(child)
}

/// Marks the calling process as a child subreaper, so that the container's
/// process (a grandchild) is reparented to it and can be waited for.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(nix::Error::last()).ctx(|| "PR_SET_CHILD_SUBREAPER");
    }
    Ok(())
}

/// Waits for `pid` (a child via the subreaper) and returns a shell-style
/// exit code.
pub fn wait_exit(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| format!("waiting for {pid}")),
        }
    }
}

/// The config saved at create time.
pub fn saved_spec(root: &Path, id: &str) -> Result<Spec> {
    state::check_id(id)?;
    let dir = root.join(id);
    if !dir.is_dir() {
        return Err(Error::NotFound(id.into()));
    }
    load_spec(&dir).ok_or_else(|| Error::State(format!("container {id} has no saved config")))
}
