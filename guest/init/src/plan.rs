//! What init should do, parsed from the kernel command line and from an
//! optional config file. All pure logic, unit-tested on every target.
//!
//! Kernel command line parameters (read from `/proc/cmdline`):
//! - `zvisor.tag=NAME`: label put on every result line (default `guest`);
//! - `zvisor.conf=PATH`: config file (default `/etc/zvisor/init.conf`);
//! - `zvisor.report=0|1`: print the system report (default 1);
//! - `zvisor.exec="CMD ARGS..."`: run a command (repeatable), 60 s timeout;
//! - `zvisor.timeout=SECS`: timeout for `zvisor.exec` commands;
//! - `zvisor.halt=poweroff|reboot`: how to end (default poweroff; `reboot`
//!   suits VMMs without ACPI power-off, with `reboot=k` on x86).
//! - `zvisor.kvm_pin=0|1`: after loading modules, hold one idle KVM VM (an
//!   in-kernel irqchip and a vCPU that never runs) until init ends, so that
//!   the kernel's per-VM static keys never drop back to zero between the
//!   VMs the plan starts (rung 2's workaround for QEMU 7.2 TCG, see
//!   docs/testing.md).
//!
//! Config file lines (`#` starts a comment, words split like the command
//! line, double quotes group words):
//! - `report`
//! - `exec NAME TIMEOUT_SECS RETRIES CMD [ARGS...]`
//! - `tag NAME`

use std::fmt;

/// Default config file inside the image.
pub const DEFAULT_CONF: &str = "/etc/zvisor/init.conf";
/// Default timeout of `zvisor.exec=` commands.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Upper bound on timeouts and retries, against typos and hostile input.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
const MAX_RETRIES: u32 = 10;

/// One thing init does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Print nproc, MemTotal and friends as result lines.
    Report,
    /// Run a command with a timeout, retrying on failure.
    Exec(ExecSpec),
}

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Name used on result lines and as the output prefix.
    pub name: String,
    /// Kill the command after this many seconds.
    pub timeout_secs: u64,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Program and arguments.
    pub argv: Vec<String>,
}

/// Settings from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// Result-line label.
    pub tag: String,
    /// Config file to read.
    pub conf: String,
    /// Whether to print the report before anything else.
    pub report: bool,
    /// Commands from `zvisor.exec=`.
    pub execs: Vec<ExecSpec>,
    /// End with a reboot instead of a power-off.
    pub halt_reboot: bool,
    /// Hold an idle KVM VM for init's lifetime (`zvisor.kvm_pin=1`).
    pub kvm_pin: bool,
}

/// A parse error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits a line into words: whitespace separates, double quotes group
/// (and are removed), as the kernel does for its command line.
pub fn split_words(s: &str) -> Result<Vec<String>, PlanError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(PlanError("unterminated double quote".into()));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// A tag or exec name: short, and safe to print in `key=value` lines.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, PlanError> {
    match v {
        "1" | "y" | "yes" | "on" | "true" => Ok(true),
        "0" | "n" | "no" | "off" | "false" => Ok(false),
        _ => Err(PlanError(format!("{key}={v}: expected 0 or 1"))),
    }
}

fn parse_timeout(what: &str, v: &str) -> Result<u64, PlanError> {
    match v.parse::<u64>() {
        Ok(t) if (1..=MAX_TIMEOUT_SECS).contains(&t) => Ok(t),
        _ => Err(PlanError(format!(
            "{what}: timeout {v:?} is not a number of seconds in 1..={MAX_TIMEOUT_SECS}"
        ))),
    }
}

/// The parameters the kernel command line gives module `module`
/// (`module.param=value` words, `-` and `_` alike in the module name), as
/// the string `finit_module` takes: what modprobe does for loadable
/// modules, since the kernel applies such words only to built-in ones.
pub fn module_params(cmdline: &str, module: &str) -> String {
    let norm = |s: &str| s.replace('-', "_");
    let want = norm(module);
    split_words(cmdline)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|w| {
            let (m, p) = w.split_once('.')?;
            (norm(m) == want && !p.is_empty() && !p.starts_with('=')).then(|| p.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses the `zvisor.*` parameters of a kernel command line; everything
/// else is ignored.
pub fn parse_cmdline(cmdline: &str) -> Result<Boot, PlanError> {
    let mut boot = Boot {
        tag: "guest".into(),
        conf: DEFAULT_CONF.into(),
        report: true,
        execs: Vec::new(),
        halt_reboot: false,
        kvm_pin: false,
    };
    let mut timeout = DEFAULT_TIMEOUT_SECS;
    let mut raw_execs = Vec::new();
    for w in split_words(cmdline)? {
        let Some(rest) = w.strip_prefix("zvisor.") else {
            continue;
        };
        let (key, val) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "tag" if valid_name(val) => boot.tag = val.into(),
            "tag" => {
                return Err(PlanError(format!(
                    "zvisor.tag={val:?}: use 1-64 of [A-Za-z0-9-_.:]"
                )))
            }
            "conf" if val.starts_with('/') => boot.conf = val.into(),
            "conf" => {
                return Err(PlanError(format!(
                    "zvisor.conf={val:?}: must be an absolute path"
                )))
            }
            "report" => boot.report = parse_bool("zvisor.report", val)?,
            "kvm_pin" => boot.kvm_pin = parse_bool("zvisor.kvm_pin", val)?,
            "timeout" => timeout = parse_timeout("zvisor.timeout", val)?,
            "exec" => raw_execs.push(val.to_string()),
            "halt" => {
                boot.halt_reboot = match val {
                    "poweroff" => false,
                    "reboot" => true,
                    _ => {
                        return Err(PlanError(format!(
                            "zvisor.halt={val:?}: expected poweroff or reboot"
                        )))
                    }
                }
            }
            _ => return Err(PlanError(format!("unknown parameter zvisor.{key}"))),
        }
    }
    for (i, cmd) in raw_execs.iter().enumerate() {
        let argv = split_words(cmd)?;
        if argv.is_empty() {
            return Err(PlanError("zvisor.exec= needs a command".into()));
        }
        boot.execs.push(ExecSpec {
            name: format!("exec{}", i + 1),
            timeout_secs: timeout,
            retries: 0,
            argv,
        });
    }
    Ok(boot)
}

/// Parses a config file. `tag` lines update `tag`.
pub fn parse_conf(text: &str, tag: &mut String) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |msg: String| PlanError(format!("line {}: {msg}", n + 1));
        let line = line.split_once('#').map_or(line, |(a, _)| a);
        let words = split_words(line).map_err(|e| at(e.0))?;
        let Some((cmd, args)) = words.split_first() else {
            continue;
        };
        match cmd.as_str() {
            "report" if args.is_empty() => steps.push(Step::Report),
            "tag" if args.len() == 1 && valid_name(&args[0]) => tag.clone_from(&args[0]),
            "exec" if args.len() >= 4 => {
                if !valid_name(&args[0]) {
                    return Err(at(format!("exec name {:?}: use 1-64 of [A-Za-z0-9-_.:]", args[0])));
                }
                let timeout_secs = parse_timeout(&args[0], &args[1]).map_err(|e| at(e.0))?;
                let retries = match args[2].parse::<u32>() {
                    Ok(r) if r <= MAX_RETRIES => r,
                    _ => return Err(at(format!("retries {:?}: expected 0..={MAX_RETRIES}", args[2]))),
                };
                steps.push(Step::Exec(ExecSpec {
                    name: args[0].clone(),
                    timeout_secs,
                    retries,
                    argv: args[3..].to_vec(),
                }));
            }
            "report" | "tag" | "exec" => {
                return Err(at(format!(
                    "bad arguments to {cmd} (want: report | tag NAME | exec NAME TIMEOUT RETRIES CMD...)"
                )))
            }
            other => return Err(at(format!("unknown directive {other:?}"))),
        }
    }
    Ok(steps)
}

/// The final plan: the report (if enabled), the config file's steps, then
/// the command line's commands. A config without `report` still gets the
/// report when `zvisor.report` is on.
pub fn plan(boot: &Boot, conf_steps: Vec<Step>) -> Vec<Step> {
    let mut steps = Vec::new();
    if boot.report && !conf_steps.contains(&Step::Report) {
        steps.push(Step::Report);
    }
    steps.extend(conf_steps);
    steps.extend(boot.execs.iter().cloned().map(Step::Exec));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_params_come_from_the_command_line_like_modprobe() {
        let c = "quiet kvm_amd.vgif=0 kvm-amd.npt=1 kvm.halt_poll_ns=0 zvisor.tag=x kvm_amd.=1";
        assert_eq!(module_params(c, "kvm-amd"), "vgif=0 npt=1");
        assert_eq!(module_params(c, "kvm_amd"), "vgif=0 npt=1");
        assert_eq!(module_params(c, "kvm"), "halt_poll_ns=0");
        assert_eq!(module_params(c, "virtio_blk"), "");
    }

    #[test]
    fn words_split_like_the_kernel() {
        assert_eq!(
            split_words(
                r#"console=ttyS0  quiet zvisor.exec="/bin/zvisor run --cmdline x" a"b c"d"#
            )
            .unwrap(),
            [
                "console=ttyS0",
                "quiet",
                "zvisor.exec=/bin/zvisor run --cmdline x",
                "ab cd"
            ]
        );
        assert_eq!(split_words("  \n ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words(r#""""#).unwrap(), [""]);
        assert!(split_words(r#"a "b"#).is_err());
    }

    #[test]
    fn cmdline_defaults_and_overrides() {
        let b = parse_cmdline("console=ttyS0 panic=-1 quiet\n").unwrap();
        assert_eq!(b.tag, "guest");
        assert_eq!(b.conf, DEFAULT_CONF);
        assert!(b.report);
        assert!(b.execs.is_empty());
        assert!(!b.halt_reboot);
        assert!(parse_cmdline("zvisor.halt=reboot").unwrap().halt_reboot);
        assert!(!parse_cmdline("zvisor.halt=poweroff").unwrap().halt_reboot);
        assert!(!b.kvm_pin);
        assert!(parse_cmdline("zvisor.kvm_pin=1").unwrap().kvm_pin);
        assert!(parse_cmdline("zvisor.kvm_pin=maybe").is_err());

        let b = parse_cmdline(
            r#"zvisor.tag=c2m512 zvisor.report=0 zvisor.timeout=5 zvisor.exec="/bin/a -x" zvisor.exec=/bin/b"#,
        )
        .unwrap();
        assert_eq!(b.tag, "c2m512");
        assert!(!b.report);
        assert_eq!(b.execs.len(), 2);
        assert_eq!(b.execs[0].argv, ["/bin/a", "-x"]);
        assert_eq!(
            (b.execs[1].name.as_str(), b.execs[1].timeout_secs),
            ("exec2", 5)
        );
    }

    #[test]
    fn cmdline_rejects_bad_values() {
        for bad in [
            "zvisor.tag=",
            "zvisor.tag=a=b",
            "zvisor.tag=with/slash",
            "zvisor.report=maybe",
            "zvisor.timeout=0",
            "zvisor.timeout=-1",
            "zvisor.timeout=999999999",
            "zvisor.exec=",
            "zvisor.conf=relative",
            "zvisor.bogus=1",
            "zvisor.halt=explode",
            "zvisor.exec=\"unterminated",
        ] {
            assert!(parse_cmdline(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conf_file_directives() {
        let mut tag = "guest".to_string();
        let steps = parse_conf(
            "# L1 plan\n\ntag L1\nreport\nexec c1m256 120 1 /bin/zvisor run --cmdline \"console=ttyS0 quiet\" # trailing\n",
            &mut tag,
        )
        .unwrap();
        assert_eq!(tag, "L1");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0], Step::Report);
        let Step::Exec(e) = &steps[1] else {
            panic!("not an exec: {:?}", steps[1]);
        };
        assert_eq!(
            (e.name.as_str(), e.timeout_secs, e.retries),
            ("c1m256", 120, 1)
        );
        assert_eq!(
            e.argv,
            ["/bin/zvisor", "run", "--cmdline", "console=ttyS0 quiet"]
        );
    }

    #[test]
    fn conf_errors_name_the_line() {
        let mut tag = String::new();
        for (text, line) in [
            ("report\nfly away\n", "line 2"),
            ("exec x 10 1\n", "line 1"),
            ("\nexec bad/name 10 0 /bin/true\n", "line 2"),
            ("exec x 0 0 /bin/true\n", "line 1"),
            ("exec x 10 99 /bin/true\n", "line 1"),
            ("report extra\n", "line 1"),
            ("exec x 10 0 \"/bin/true\n", "line 1"),
        ] {
            let e = parse_conf(text, &mut tag).unwrap_err();
            assert!(e.0.starts_with(line), "{text:?}: {e}");
        }
    }

    #[test]
    fn plan_orders_report_conf_then_cmdline() {
        let boot = parse_cmdline("zvisor.exec=/bin/true").unwrap();
        let conf = vec![Step::Exec(ExecSpec {
            name: "a".into(),
            timeout_secs: 1,
            retries: 0,
            argv: vec!["/bin/a".into()],
        })];
        let p = plan(&boot, conf.clone());
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], Step::Report);
        assert_eq!(p[1], conf[0]);
        // No duplicate report when the config has one.
        let p = plan(&boot, vec![Step::Report]);
        assert_eq!(p.iter().filter(|s| **s == Step::Report).count(), 1);
        let quiet = parse_cmdline("zvisor.report=0").unwrap();
        assert!(plan(&quiet, vec![]).is_empty());
    }
}
