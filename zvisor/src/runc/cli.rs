//! runc-compatible command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// zvisor's OCI runtime.
#[derive(Parser, Debug)]
#[command(
    name = "zvisor-runc",
    version,
    about = "zvisor's runc-compatible OCI runtime"
)]
pub struct Cli {
    /// Root directory of container state.
    #[arg(long, global = true, default_value = "/run/zvisor-runc")]
    pub root: PathBuf,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text")]
    pub log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (not supported: rejected).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode (accepted for compatibility; only "auto"/"false" work;
    /// with `spec` it asks for a rootless config).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Path to criu (accepted for compatibility, unused).
    #[arg(long, global = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Flags shared by `create` and `run`.
#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container process's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a session keyring (accepted; no keyring is created).
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N extra fds (from 3) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// Container id.
    pub id: String,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print a container's state as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to the container's init (default SIGTERM).
    Kill {
        /// Send to every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        /// Container id.
        id: String,
        /// Signal name or number.
        signal: Option<String>,
    },
    /// Delete a container.
    Delete {
        /// Kill a running container first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Container id.
        id: String,
    },
    /// Create and start a container.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Do not wait for the container.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// Container id.
        id: String,
        /// Arguments for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// Only ids.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Freeze all processes of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Update a container's resource limits.
    Update(UpdateArgs),
    /// Print the runtime's features as JSON.
    Features,
    /// Write a default config.json.
    Spec {
        /// Bundle directory.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
    },
}

/// `exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// process.json describing the process.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Allocate a pty (needs --console-socket).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Do not wait for the process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// File to write the process's pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment, KEY=VALUE.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// uid[:gid].
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Extra group ids.
    #[arg(long, short = 'g')]
    pub additional_gids: Vec<u32>,
    /// Extra capabilities.
    #[arg(long, short = 'c')]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass N extra fds (from 3).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// AppArmor profile (rejected: not available).
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (rejected: not available).
    #[arg(long)]
    pub process_label: Option<String>,
    /// Container id.
    pub id: String,
    /// Command and arguments (when no --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `update` flags.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Resources as JSON (OCI linux.resources); `-` for stdin.
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub memory: Option<i64>,
    /// Memory plus swap limit in bytes.
    #[arg(long)]
    pub memory_swap: Option<i64>,
    /// Memory soft limit in bytes.
    #[arg(long)]
    pub memory_reservation: Option<i64>,
    /// CPU shares.
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds.
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPUs allowed.
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Maximum number of pids.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Block IO weight.
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// Container id.
    pub id: String,
}

/// Long flag names runc also accepts with a single dash (`-root`).
pub const LONG_NAMES: &[&str] = &[
    "root",
    "log",
    "log-format",
    "debug",
    "systemd-cgroup",
    "rootless",
    "criu",
    "bundle",
    "pid-file",
    "console-socket",
    "no-pivot",
    "no-new-keyring",
    "preserve-fds",
    "detach",
    "keep",
    "force",
    "all",
    "format",
    "quiet",
    "process",
    "tty",
    "cwd",
    "env",
    "user",
    "additional-gids",
    "cap",
    "no-new-privs",
    "resources",
    "memory",
    "memory-swap",
    "memory-reservation",
    "cpu-shares",
    "cpu-quota",
    "cpu-period",
    "cpuset-cpus",
    "cpuset-mems",
    "pids-limit",
    "blkio-weight",
    "apparmor",
    "process-label",
];

/// Long flags that take a value (as a separate argument).
const VALUE_FLAGS: &[&str] = &[
    "root",
    "log",
    "log-format",
    "rootless",
    "criu",
    "bundle",
    "pid-file",
    "console-socket",
    "preserve-fds",
    "format",
    "process",
    "cwd",
    "env",
    "user",
    "additional-gids",
    "cap",
    "resources",
    "memory",
    "memory-swap",
    "memory-reservation",
    "cpu-shares",
    "cpu-quota",
    "cpu-period",
    "cpuset-cpus",
    "cpuset-mems",
    "pids-limit",
    "blkio-weight",
    "apparmor",
    "process-label",
    "b",
    "p",
    "f",
    "e",
    "u",
    "g",
    "c",
    "r",
];

/// Rewrites `-root` to `--root` for runc's single-dash long flags, up to
/// the container id (the command after it is left alone).
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut positionals = 0;
    let mut takes_value = false;
    let mut done = false;
    for (i, a) in args.into_iter().enumerate() {
        if i == 0 || done {
            out.push(a);
            continue;
        }
        if takes_value {
            takes_value = false;
            out.push(a);
            continue;
        }
        if a == "--" {
            done = true;
            out.push(a);
            continue;
        }
        if let Some(flag) = a.strip_prefix('-') {
            let name = flag.trim_start_matches('-');
            let base = name.split('=').next().unwrap_or("");
            takes_value = !name.contains('=') && VALUE_FLAGS.contains(&base);
            if !flag.starts_with('-') && base.len() > 1 && LONG_NAMES.contains(&base) {
                out.push(format!("-{a}"));
            } else {
                out.push(a);
            }
            continue;
        }
        positionals += 1;
        out.push(a);
        // The subcommand, then the id: anything after the id is the command.
        if positionals >= 2 {
            done = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn single_dash_long_flags_until_the_id() {
        assert_eq!(
            normalize_args(v(
                "r -root /x -log-format json create -bundle /b -pid-file p c1"
            )),
            v("r --root /x --log-format json create --bundle /b --pid-file p c1")
        );
        assert_eq!(
            normalize_args(v("r exec -t c1 ls -all")),
            v("r exec -t c1 ls -all")
        );
    }

    #[test]
    fn runc_command_lines_parse() {
        use clap::Parser;
        let c = Cli::try_parse_from(v(
            "zvisor-runc --root /r --log /l --log-format json create --bundle /b --pid-file /p --console-socket /s c1",
        ))
        .unwrap();
        assert!(matches!(c.cmd, Cmd::Create(ref a) if a.id == "c1" && a.console_socket.is_some()));
        let c =
            Cli::try_parse_from(v("zvisor-runc exec -d --pid-file /p --process /j c1")).unwrap();
        assert!(matches!(c.cmd, Cmd::Exec(ref e) if e.detach && e.process.is_some()));
        let c = Cli::try_parse_from(v("zvisor-runc exec c1 sh -c true")).unwrap();
        assert!(matches!(c.cmd, Cmd::Exec(ref e) if e.command == v("sh -c true")));
        let c = Cli::try_parse_from(v("zvisor-runc kill c1 KILL")).unwrap();
        assert!(matches!(c.cmd, Cmd::Kill { ref signal, .. } if signal.as_deref() == Some("KILL")));
        let c = Cli::try_parse_from(v("zvisor-runc delete --force c1")).unwrap();
        assert!(matches!(c.cmd, Cmd::Delete { force: true, .. }));
    }
}
