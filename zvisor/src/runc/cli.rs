//! runc-compatible command line, parsed by hand.
//!
//! clap was a fifth of the runtime's code and most of the pages its every
//! invocation touched before doing any work; runc's grammar is small:
//! `zvisor-runc [global flags] COMMAND [flags] [ID [ARGS...]]`.
//!
//! Flags are `--name value`, `--name=value`, runc's single-dash long form
//! `-name value`, short `-x value`, `-x=value`, `-xvalue`, and clusters of
//! short switches (`-dt`); switches also take `=true`/`=false`. Global
//! flags are accepted before and after the command. `--` ends the flags.
//! `exec` and `ps` take everything after the id verbatim (the command, the
//! ps arguments), like runc. Other commands accept their flags after the id
//! too (a token that is not one of their flags, such as `-9`, stays a
//! positional argument).

use std::path::PathBuf;

/// Global options and the command.
#[derive(Debug)]
pub struct Cli {
    /// Root directory of container state.
    pub root: PathBuf,
    /// Log file (default: stderr).
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    pub log_format: String,
    /// Debug logging.
    pub debug: bool,
    /// Use systemd for cgroups (not supported: rejected).
    pub systemd_cgroup: bool,
    /// Rootless mode (only "auto"/"false" work; with `spec` it asks for a
    /// rootless config). A bare `--rootless` means "true".
    pub rootless: Option<String>,
    /// The command.
    pub cmd: Cmd,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory.
    pub bundle: PathBuf,
    /// File to write the container process's pid to.
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    pub console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Pass N extra fds (from 3) to the container.
    pub preserve_fds: i32,
    /// Container id.
    pub id: String,
}

/// Commands.
#[derive(Debug)]
pub enum Cmd {
    /// Create a container (its process waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to the container's init (default SIGTERM).
    Kill {
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container.
    Delete { force: bool, id: String },
    /// Create and start a container.
    Run {
        create: CreateArgs,
        detach: bool,
        keep: bool,
    },
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        format: String,
        id: String,
        ps_args: Vec<String>,
    },
    /// List containers.
    List { format: String, quiet: bool },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Update a container's resource limits.
    Update(UpdateArgs),
    /// Print the runtime's features as JSON.
    Features,
    /// Write a default config.json.
    Spec { bundle: PathBuf },
}

/// `exec` flags.
#[derive(Debug, Default)]
pub struct ExecArgs {
    pub process: Option<PathBuf>,
    pub tty: bool,
    pub detach: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub cap: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: i32,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
    pub id: String,
    pub command: Vec<String>,
}

/// `update` flags.
#[derive(Debug, Default)]
pub struct UpdateArgs {
    pub resources: Option<PathBuf>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub id: String,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run a command.
    Cli(Box<Cli>),
    /// Print this text to stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

/// A flag: long name, short letter, what it takes.
#[derive(Clone, Copy)]
struct Flag(&'static str, Option<char>, Kind);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Switch,
    Value,
    /// `--rootless`: a value after `=` or one of true/false/auto after it;
    /// bare, it means "true".
    OptValue,
}

use Kind::{OptValue, Switch, Value};

const GLOBAL: &[Flag] = &[
    Flag("root", None, Value),
    Flag("log", None, Value),
    Flag("log-format", None, Value),
    Flag("debug", None, Switch),
    Flag("systemd-cgroup", None, Switch),
    Flag("rootless", None, OptValue),
    // Accepted for compatibility, unused.
    Flag("criu", None, Value),
];

const CREATE: &[Flag] = &[
    Flag("bundle", Some('b'), Value),
    Flag("pid-file", None, Value),
    Flag("console-socket", None, Value),
    Flag("no-pivot", None, Switch),
    // Accepted; no session keyring is created.
    Flag("no-new-keyring", None, Switch),
    Flag("preserve-fds", None, Value),
];

const RUN: &[Flag] = &[
    Flag("bundle", Some('b'), Value),
    Flag("pid-file", None, Value),
    Flag("console-socket", None, Value),
    Flag("no-pivot", None, Switch),
    Flag("no-new-keyring", None, Switch),
    Flag("preserve-fds", None, Value),
    Flag("detach", Some('d'), Switch),
    Flag("keep", None, Switch),
];

const EXEC: &[Flag] = &[
    Flag("process", Some('p'), Value),
    Flag("tty", Some('t'), Switch),
    Flag("detach", Some('d'), Switch),
    Flag("console-socket", None, Value),
    Flag("pid-file", None, Value),
    Flag("cwd", None, Value),
    Flag("env", Some('e'), Value),
    Flag("user", Some('u'), Value),
    Flag("additional-gids", Some('g'), Value),
    Flag("cap", Some('c'), Value),
    Flag("no-new-privs", None, Switch),
    Flag("preserve-fds", None, Value),
    Flag("apparmor", None, Value),
    Flag("process-label", None, Value),
];

const UPDATE: &[Flag] = &[
    Flag("resources", Some('r'), Value),
    Flag("memory", None, Value),
    Flag("memory-swap", None, Value),
    Flag("memory-reservation", None, Value),
    Flag("cpu-shares", None, Value),
    Flag("cpu-quota", None, Value),
    Flag("cpu-period", None, Value),
    Flag("cpuset-cpus", None, Value),
    Flag("cpuset-mems", None, Value),
    Flag("pids-limit", None, Value),
    Flag("blkio-weight", None, Value),
];

/// Command name, its flags, positionals (min, max; `None`: the rest after
/// the id is taken verbatim), help line.
type CmdDef = (
    &'static str,
    &'static [Flag],
    usize,
    Option<usize>,
    &'static str,
);

const CMDS: &[CmdDef] = &[
    ("create", CREATE, 1, Some(1), "create a container: [--bundle D] [--pid-file F] [--console-socket S] [--no-pivot] [--no-new-keyring] [--preserve-fds N] ID"),
    ("start", &[], 1, Some(1), "start a created container: ID"),
    ("state", &[], 1, Some(1), "print a container's state as JSON: ID"),
    ("kill", &[Flag("all", Some('a'), Switch)], 1, Some(2), "signal a container's init (default SIGTERM): [--all] ID [SIGNAL]"),
    ("delete", &[Flag("force", Some('f'), Switch)], 1, Some(1), "delete a container: [--force] ID"),
    ("run", RUN, 1, Some(1), "create and start a container: create's flags, [--detach] [--keep] ID"),
    ("exec", EXEC, 1, None, "run a process in a container: [--process F] [--tty] [--detach] [--console-socket S] [--pid-file F] [--cwd D] [--env K=V] [--user U[:G]] [--additional-gids G] [--cap C] [--no-new-privs] [--preserve-fds N] ID [COMMAND...]"),
    ("ps", &[Flag("format", Some('f'), Value)], 1, None, "list a container's processes: [--format table|json] ID [PS ARGS...]"),
    ("list", &[Flag("format", Some('f'), Value), Flag("quiet", Some('q'), Switch)], 0, Some(0), "list containers: [--format table|json] [--quiet]"),
    ("pause", &[], 1, Some(1), "freeze a container: ID"),
    ("resume", &[], 1, Some(1), "thaw a paused container: ID"),
    ("update", UPDATE, 1, Some(1), "update resource limits: [--resources F|-] [--memory N] [--memory-swap N] [--memory-reservation N] [--cpu-shares N] [--cpu-quota N] [--cpu-period N] [--cpuset-cpus L] [--cpuset-mems L] [--pids-limit N] [--blkio-weight N] ID"),
    ("features", &[], 0, Some(0), "print the runtime's features as JSON"),
    ("spec", &[Flag("bundle", Some('b'), Value)], 0, Some(0), "write a default config.json: [--bundle D] (with the global --rootless: a rootless one)"),
];

const USAGE: &str =
    "usage: zvisor-runc [--root DIR] [--log FILE] [--log-format text|json] [--debug] \
[--systemd-cgroup] [--rootless[=VALUE]] [--criu PATH] COMMAND [FLAGS] [ID [ARGS...]]";

fn help(cmd: Option<&CmdDef>) -> String {
    match cmd {
        Some((name, _, _, _, text)) => format!("zvisor-runc {name}: {text}\n"),
        None => {
            let mut s = format!(
                "zvisor-runc: zvisor's runc-compatible OCI runtime\n\n{USAGE}\n\ncommands:\n"
            );
            for (name, _, _, _, text) in CMDS {
                s.push_str(&format!("  {name:<9} {text}\n"));
            }
            s
        }
    }
}

/// The flag values given, in order, and the positionals.
#[derive(Default)]
struct Seen {
    flags: Vec<(&'static str, String)>,
    pos: Vec<String>,
}

impl Seen {
    fn last(&mut self, name: &str) -> Option<String> {
        let v = self.flags.iter().rev().find(|(n, _)| *n == name)?.1.clone();
        Some(v)
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn path(&mut self, name: &str) -> Option<PathBuf> {
        self.last(name).map(PathBuf::from)
    }
    fn switch(&mut self, name: &str) -> bool {
        self.last(name).is_some_and(|v| v == "true")
    }
    fn num<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, String> {
        self.last(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("invalid value {v:?} for --{name}"))
            })
            .transpose()
    }
    fn nums<T: std::str::FromStr>(&self, name: &str) -> Result<Vec<T>, String> {
        self.all(name)
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("invalid value {v:?} for --{name}"))
            })
            .collect()
    }
    fn id(&mut self) -> String {
        if self.pos.is_empty() {
            String::new()
        } else {
            self.pos.remove(0)
        }
    }
}

/// Finds `tok`'s flag among `sets`; returns the flag and an inline value.
fn lookup(tok: &str, sets: &[&'static [Flag]]) -> Option<(Flag, Option<String>)> {
    let (name, inline) = match tok.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (tok, None),
    };
    let flags = || sets.iter().flat_map(|s| s.iter());
    if let Some(long) = name.strip_prefix("--") {
        return flags().find(|f| f.0 == long).map(|f| (*f, inline));
    }
    let body = name.strip_prefix('-')?;
    let mut chars = body.chars();
    let first = chars.next()?;
    if chars.as_str().is_empty() {
        return flags().find(|f| f.1 == Some(first)).map(|f| (*f, inline));
    }
    // runc's single-dash long flags.
    if let Some(f) = flags().find(|f| f.0 == body) {
        return Some((*f, inline));
    }
    // `-bvalue`.
    let f = flags().find(|f| f.1 == Some(first) && f.2 == Value)?;
    Some((*f, Some(tok[2..].to_string())))
}

/// Expands a cluster of short switches (`-dt`) into their names.
fn cluster(tok: &str, sets: &[&'static [Flag]]) -> Option<Vec<&'static str>> {
    let body = tok.strip_prefix('-').filter(|b| !b.starts_with('-'))?;
    body.chars()
        .map(|c| {
            sets.iter()
                .flat_map(|s| s.iter())
                .find(|f| f.1 == Some(c) && f.2 == Switch)
                .map(|f| f.0)
        })
        .collect()
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut args = args.into_iter().peekable();
    let mut seen = Seen::default();
    let mut cmd: Option<&CmdDef> = None;
    let mut verbatim = false;
    while let Some(tok) = args.next() {
        let sets: &[&'static [Flag]] = match cmd {
            Some(c) => &[GLOBAL, c.1],
            None => &[GLOBAL],
        };
        let trailing = cmd.is_some_and(|c| c.3.is_none()) && !seen.pos.is_empty();
        if verbatim || trailing || tok == "-" || !tok.starts_with('-') {
            if cmd.is_none() {
                if tok == "help" {
                    let c = args.next();
                    return Ok(Parsed::Print(help(
                        CMDS.iter().find(|d| Some(d.0) == c.as_deref()),
                    )));
                }
                cmd = Some(
                    CMDS.iter()
                        .find(|d| d.0 == tok)
                        .ok_or_else(|| format!("unknown command {tok:?}"))?,
                );
            } else {
                seen.pos.push(tok);
            }
            continue;
        }
        if tok == "--" {
            verbatim = true;
            continue;
        }
        match tok.as_str() {
            "-h" | "--help" | "-help" => return Ok(Parsed::Print(help(cmd))),
            "-v" | "-V" | "--version" | "-version" if cmd.is_none() => {
                return Ok(Parsed::Print(format!(
                    "zvisor-runc version {}\nspec: 1.0.2\n",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            _ => {}
        }
        let Some((flag, inline)) = lookup(&tok, sets) else {
            if let Some(names) = cluster(&tok, sets) {
                seen.flags
                    .extend(names.into_iter().map(|n| (n, "true".into())));
                continue;
            }
            // After the id, an unknown dash token (`kill ID -9`) is an argument.
            if !seen.pos.is_empty() {
                seen.pos.push(tok);
                continue;
            }
            return Err(format!("unknown flag {tok}"));
        };
        let value = match (flag.2, inline) {
            (Value, Some(v)) | (OptValue, Some(v)) => v,
            (Value, None) => args
                .next()
                .ok_or_else(|| format!("flag --{} needs a value", flag.0))?,
            (OptValue, None) => match args.peek().map(String::as_str) {
                Some("true" | "false" | "auto") => args.next().unwrap_or_default(),
                _ => "true".into(),
            },
            (Switch, None) => "true".into(),
            (Switch, Some(v)) if v == "true" || v == "false" => v,
            (Switch, Some(v)) => {
                return Err(format!("flag --{} takes no value (got {v:?})", flag.0))
            }
        };
        seen.flags.push((flag.0, value));
    }
    let Some(def) = cmd else {
        return Err("no command given".into());
    };
    let (name, _, min, max, _) = *def;
    let n = seen.pos.len();
    if n < min {
        return Err(format!("{name} needs a container id"));
    }
    if max.is_some_and(|m| n > m) {
        return Err(format!(
            "{name}: unexpected argument {:?}",
            seen.pos[max.unwrap_or(0)]
        ));
    }
    build(name, seen).map(|c| Parsed::Cli(Box::new(c)))
}

fn create_args(s: &mut Seen) -> Result<CreateArgs, String> {
    Ok(CreateArgs {
        bundle: s.path("bundle").unwrap_or_else(|| ".".into()),
        pid_file: s.path("pid-file"),
        console_socket: s.path("console-socket"),
        no_pivot: s.switch("no-pivot"),
        preserve_fds: s.num("preserve-fds")?.unwrap_or(0),
        id: s.id(),
    })
}

fn build(name: &str, mut s: Seen) -> Result<Cli, String> {
    let format = |s: &mut Seen| s.last("format").unwrap_or_else(|| "table".into());
    let cmd = match name {
        "create" => Cmd::Create(create_args(&mut s)?),
        "run" => Cmd::Run {
            detach: s.switch("detach"),
            keep: s.switch("keep"),
            create: create_args(&mut s)?,
        },
        "start" => Cmd::Start { id: s.id() },
        "state" => Cmd::State { id: s.id() },
        "pause" => Cmd::Pause { id: s.id() },
        "resume" => Cmd::Resume { id: s.id() },
        "kill" => Cmd::Kill {
            all: s.switch("all"),
            id: s.id(),
            signal: s.pos.pop(),
        },
        "delete" => Cmd::Delete {
            force: s.switch("force"),
            id: s.id(),
        },
        "exec" => Cmd::Exec(ExecArgs {
            process: s.path("process"),
            tty: s.switch("tty"),
            detach: s.switch("detach"),
            console_socket: s.path("console-socket"),
            pid_file: s.path("pid-file"),
            cwd: s.path("cwd"),
            env: s.all("env"),
            user: s.last("user"),
            additional_gids: s.nums("additional-gids")?,
            cap: s.all("cap"),
            no_new_privs: s.switch("no-new-privs"),
            preserve_fds: s.num("preserve-fds")?.unwrap_or(0),
            apparmor: s.last("apparmor"),
            process_label: s.last("process-label"),
            id: s.id(),
            command: std::mem::take(&mut s.pos),
        }),
        "ps" => Cmd::Ps {
            format: format(&mut s),
            id: s.id(),
            ps_args: std::mem::take(&mut s.pos),
        },
        "list" => Cmd::List {
            format: format(&mut s),
            quiet: s.switch("quiet"),
        },
        "update" => Cmd::Update(UpdateArgs {
            resources: s.path("resources"),
            memory: s.num("memory")?,
            memory_swap: s.num("memory-swap")?,
            memory_reservation: s.num("memory-reservation")?,
            cpu_shares: s.num("cpu-shares")?,
            cpu_quota: s.num("cpu-quota")?,
            cpu_period: s.num("cpu-period")?,
            cpuset_cpus: s.last("cpuset-cpus"),
            cpuset_mems: s.last("cpuset-mems"),
            pids_limit: s.num("pids-limit")?,
            blkio_weight: s.num("blkio-weight")?,
            id: s.id(),
        }),
        "features" => Cmd::Features,
        _ => Cmd::Spec {
            bundle: s.path("bundle").unwrap_or_else(|| ".".into()),
        },
    };
    Ok(Cli {
        root: s.path("root").unwrap_or_else(|| "/run/zvisor-runc".into()),
        log: s.path("log"),
        log_format: s.last("log-format").unwrap_or_else(|| "text".into()),
        debug: s.switch("debug"),
        systemd_cgroup: s.switch("systemd-cgroup"),
        rootless: s.last("rootless"),
        cmd,
    })
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
