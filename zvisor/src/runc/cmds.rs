//! Command implementations on top of `zvisor_containers::container`.

use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{self, SigHandler, Signal};
use oci_spec::runtime::{LinuxResources, Process};
use zvisor_containers::container::{self, CreateOpts, ExecOpts};
use zvisor_containers::state::Status;

use super::cli::{Cli, Cmd, CreateArgs, ExecArgs, UpdateArgs};
use super::templates;

pub fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup is not supported: zvisor-runc manages cgroupfs directly (use the cgroupfs manager, e.g. podman --cgroup-manager=cgroupfs)");
    }
    let rootless = cli.rootless.as_deref().is_some_and(|r| r == "true");
    if rootless && !matches!(cli.cmd, Cmd::Spec { .. }) {
        bail!("--rootless=true is not supported yet");
    }
    let root = cli.root.as_path();
    match &cli.cmd {
        Cmd::Create(a) => {
            container::create(root, &a.id, &create_opts(a))?;
            Ok(0)
        }
        Cmd::Start { id } => {
            container::start(root, id)?;
            Ok(0)
        }
        Cmd::State { id } => {
            let s = container::state(root, id)?;
            let v: serde_json::Value = serde_json::from_str(&s)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            let sig = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill_container(root, id, sig, *all)?;
            Ok(0)
        }
        Cmd::Delete { force, id } => {
            container::delete(root, id, *force)?;
            Ok(0)
        }
        Cmd::Run {
            create,
            detach,
            keep,
        } => run(root, create, *detach, *keep),
        Cmd::Exec(e) => exec(root, e),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => ps(root, id, format, ps_args),
        Cmd::List { format, quiet } => list(root, format, *quiet),
        Cmd::Pause { id } => {
            container::pause(root, id, true)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            container::pause(root, id, false)?;
            Ok(0)
        }
        Cmd::Update(u) => {
            container::update(root, &u.id, &resources(u)?)?;
            Ok(0)
        }
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&templates::features())?);
            Ok(0)
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists", path.display());
            }
            let s = serde_json::to_string_pretty(&templates::default_spec(rootless))?;
            std::fs::write(&path, s).with_context(|| format!("writing {}", path.display()))?;
            Ok(0)
        }
    }
}

fn create_opts(a: &CreateArgs) -> CreateOpts {
    CreateOpts {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    }
}

/// Parses `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("invalid signal {s}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>()
        .with_context(|| format!("invalid signal {s}"))
}

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Forwards signals to `pid` while waiting for it; returns its exit code.
fn wait_forwarding(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    let fwd = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ];
    let act = signal::SigAction::new(
        SigHandler::Handler(on_signal),
        signal::SaFlags::empty(),
        signal::SigSet::empty(),
    );
    for s in fwd {
        // SAFETY: the handler only stores into an atomic.
        unsafe { signal::sigaction(s, &act) }.context("installing a signal handler")?;
    }
    let target = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(target, None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) => {}
            Err(nix::Error::EINTR) => {
                let s = PENDING.swap(0, Ordering::SeqCst);
                if let Ok(sig) = Signal::try_from(s) {
                    let _ = signal::kill(target, sig);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("waiting for {pid}")),
        }
    }
}

fn run(root: &Path, a: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    if !detach {
        container::become_subreaper()?;
    }
    let pid = container::create(root, &a.id, &create_opts(a))?;
    if let Err(e) = container::start(root, &a.id) {
        let _ = container::delete(root, &a.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(pid)?;
    if !keep {
        container::delete(root, &a.id, true)?;
    }
    Ok(code)
}

fn exec(root: &Path, e: &ExecArgs) -> Result<i32> {
    if e.apparmor.is_some() {
        bail!("--apparmor: AppArmor is not enabled on this host");
    }
    if e.process_label.is_some() {
        bail!("--process-label: SELinux is not enabled on this host");
    }
    let mut proc_: Process = match &e.process {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("invalid process file {}", p.display()))?
        }
        None => {
            if e.command.is_empty() {
                bail!("exec needs a command or --process");
            }
            let spec = container::saved_spec(root, &e.id)?;
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(e.command.clone()));
            p.set_terminal(Some(e.tty));
            if let Some(c) = &e.cwd {
                p.set_cwd(c.clone());
            }
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(e.env.iter().cloned());
            p.set_env(Some(env));
            if let Some(u) = &e.user {
                let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
                let mut user = p.user().clone();
                user.set_uid(uid.parse().context("--user uid")?);
                user.set_gid(gid.parse().context("--user gid")?);
                if !e.additional_gids.is_empty() {
                    user.set_additional_gids(Some(e.additional_gids.clone()));
                }
                p.set_user(user);
            }
            if e.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            if !e.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                let extra: Vec<oci_spec::runtime::Capability> = e
                    .cap
                    .iter()
                    .map(|c| serde_json::from_value(serde_json::Value::String(c.clone())))
                    .collect::<std::result::Result<_, _>>()
                    .context("--cap")?;
                let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                    let mut s = s.clone().unwrap_or_default();
                    s.extend(extra.iter().cloned());
                    Some(s)
                };
                caps.set_bounding(add(caps.bounding()));
                caps.set_effective(add(caps.effective()));
                caps.set_permitted(add(caps.permitted()));
                p.set_capabilities(Some(caps));
            }
            p
        }
    };
    if e.tty {
        proc_.set_terminal(Some(true));
    }
    if !e.detach {
        container::become_subreaper()?;
    }
    let pid = container::exec(
        root,
        &e.id,
        &proc_,
        &ExecOpts {
            console_socket: e.console_socket.clone(),
            pid_file: e.pid_file.clone(),
            preserve_fds: e.preserve_fds,
        },
    )?;
    if e.detach {
        return Ok(0);
    }
    wait_forwarding(pid)
}

fn ps(root: &Path, id: &str, format: &str, ps_args: &[String]) -> Result<i32> {
    let pids = container::pids(root, id)?;
    match format {
        "json" => {
            println!("{}", serde_json::to_string(&pids)?);
            Ok(0)
        }
        "table" => {
            let args: Vec<String> = if ps_args.is_empty() {
                vec!["-ef".into()]
            } else {
                ps_args.to_vec()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("running ps")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .context("ps output has no PID column")?;
            println!("{header}");
            for l in lines {
                let pid: Option<i32> = l.split_whitespace().nth(col).and_then(|s| s.parse().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{l}");
                }
            }
            Ok(0)
        }
        f => bail!("invalid format {f:?} (table or json)"),
    }
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<i32> {
    let all = container::list(root)?;
    if quiet {
        for (r, _) in &all {
            println!("{}", r.id);
        }
        return Ok(0);
    }
    match format {
        "json" => {
            let v: Vec<serde_json::Value> = all
                .iter()
                .map(|(r, st)| {
                    let pid = if *st == Status::Stopped {
                        0
                    } else {
                        r.pid.unwrap_or(0)
                    };
                    serde_json::json!({
                        "ociVersion": "1.0.2", "id": r.id, "pid": pid, "status": st.to_string(),
                        "bundle": r.bundle, "rootfs": r.rootfs, "created": r.created,
                        "annotations": r.annotations, "owner": "root"
                    })
                })
                .collect();
            println!("{}", serde_json::to_string(&v)?);
        }
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for (r, st) in &all {
                let pid = if *st == Status::Stopped {
                    0
                } else {
                    r.pid.unwrap_or(0)
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} root",
                    r.id,
                    pid,
                    st,
                    r.bundle.display(),
                    r.created
                );
            }
        }
        f => bail!("invalid format {f:?} (table or json)"),
    }
    Ok(0)
}

fn resources(u: &UpdateArgs) -> Result<LinuxResources> {
    let mut v = match &u.resources {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            };
            serde_json::from_str(&text).context("invalid resources JSON")?
        }
        None => serde_json::json!({}),
    };
    let mut set = |section: &str, key: &str, val: serde_json::Value| {
        if v.get(section).is_none() {
            v[section] = serde_json::json!({});
        }
        v[section][key] = val;
    };
    if let Some(m) = u.memory {
        set("memory", "limit", m.into());
    }
    if let Some(m) = u.memory_swap {
        set("memory", "swap", m.into());
    }
    if let Some(m) = u.memory_reservation {
        set("memory", "reservation", m.into());
    }
    if let Some(c) = u.cpu_shares {
        set("cpu", "shares", c.into());
    }
    if let Some(c) = u.cpu_quota {
        set("cpu", "quota", c.into());
    }
    if let Some(c) = u.cpu_period {
        set("cpu", "period", c.into());
    }
    if let Some(c) = &u.cpuset_cpus {
        set("cpu", "cpus", c.clone().into());
    }
    if let Some(c) = &u.cpuset_mems {
        set("cpu", "mems", c.clone().into());
    }
    if let Some(p) = u.pids_limit {
        set("pids", "limit", p.into());
    }
    if let Some(w) = u.blkio_weight {
        set("blockIO", "weight", w.into());
    }
    serde_json::from_value(v).context("invalid resources")
}
