use super::*;

fn v(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

fn cli(s: &str) -> Cli {
    match parse(v(s)) {
        Ok(Parsed::Cli(c)) => *c,
        other => panic!("{s}: {other:?}"),
    }
}

fn err(s: &str) -> String {
    match parse(v(s)) {
        Err(e) => e,
        other => panic!("{s} parsed: {other:?}"),
    }
}

#[test]
fn runc_command_lines_parse() {
    let c = cli("--root /r --log /l --log-format json create --bundle /b --pid-file /p --console-socket /s c1");
    assert_eq!(c.root, PathBuf::from("/r"));
    assert_eq!(c.log, Some(PathBuf::from("/l")));
    assert_eq!(c.log_format, "json");
    let Cmd::Create(a) = c.cmd else { panic!() };
    assert_eq!(
        (
            a.id.as_str(),
            a.bundle.to_str(),
            a.pid_file,
            a.console_socket
        ),
        (
            "c1",
            Some("/b"),
            Some("/p".into()),
            Some(PathBuf::from("/s"))
        )
    );
    let c = cli("exec -d --pid-file /p --process /j c1");
    assert!(
        matches!(c.cmd, Cmd::Exec(ref e) if e.detach && e.process.is_some() && e.command.is_empty())
    );
    let c = cli("exec c1 sh -c true");
    assert!(matches!(c.cmd, Cmd::Exec(ref e) if e.command == v("sh -c true")));
    let c = cli("kill c1 KILL");
    assert!(
        matches!(c.cmd, Cmd::Kill { ref signal, all: false, ref id } if signal.as_deref() == Some("KILL") && id == "c1")
    );
    let c = cli("delete --force c1");
    assert!(matches!(c.cmd, Cmd::Delete { force: true, .. }));
    let c = cli("state c1");
    assert_eq!(c.root, PathBuf::from("/run/zvisor-runc"));
    assert_eq!(c.log_format, "text");
    assert!(c.log.is_none() && !c.debug);
}

#[test]
fn defaults() {
    let Cmd::Run {
        create,
        detach,
        keep,
    } = cli("run c1").cmd
    else {
        panic!()
    };
    assert_eq!(create.bundle, PathBuf::from("."));
    assert!(!detach && !keep && !create.no_pivot && create.preserve_fds == 0);
    assert!(matches!(cli("list").cmd, Cmd::List { ref format, quiet: false } if format == "table"));
    assert!(matches!(cli("spec").cmd, Cmd::Spec { ref bundle } if bundle.as_os_str() == "."));
    assert!(matches!(cli("features").cmd, Cmd::Features));
}

#[test]
fn single_dash_long_flags_until_the_id() {
    let c = cli("-root /x -log-format json create -bundle /b -pid-file p c1");
    assert_eq!(c.root, PathBuf::from("/x"));
    assert_eq!(c.log_format, "json");
    assert!(matches!(c.cmd, Cmd::Create(ref a) if a.bundle.as_os_str() == "/b" && a.id == "c1"));
    // After exec's id everything belongs to the command.
    let c = cli("exec -t c1 ls -all --env X");
    assert!(
        matches!(c.cmd, Cmd::Exec(ref e) if e.tty && e.id == "c1" && e.command == v("ls -all --env X"))
    );
    let c = cli("ps -f json c1 -o pid");
    assert!(
        matches!(c.cmd, Cmd::Ps { ref format, ref id, ref ps_args } if format == "json" && id == "c1" && *ps_args == v("-o pid"))
    );
}

#[test]
fn flag_forms() {
    let c = cli("--root=/r run -b=/b --preserve-fds=2 -d c1");
    assert!(c.root.as_os_str() == "/r");
    // -dt: no -t on run.
    assert!(err("run -dt c1").contains("-dt"));
    let c2 = cli("run -b/b -d --keep=true --no-pivot=false c1");
    for c in [c, c2] {
        let Cmd::Run { create, .. } = &c.cmd else {
            panic!()
        };
        assert_eq!(create.bundle, PathBuf::from("/b"));
    }
    let c = cli("run -b/b -d --keep=true --no-pivot=false c1");
    assert!(matches!(c.cmd, Cmd::Run { detach: true, keep: true, ref create } if !create.no_pivot));
    let c = cli("exec -dt -e A=1 --env B=2 -g 5 -g 6 -c CAP_KILL -u 1:2 c1 true");
    let Cmd::Exec(e) = c.cmd else { panic!() };
    assert!(e.detach && e.tty);
    assert_eq!(e.env, v("A=1 B=2"));
    assert_eq!(e.additional_gids, vec![5, 6]);
    assert_eq!(e.cap, v("CAP_KILL"));
    assert_eq!(e.user.as_deref(), Some("1:2"));
    // Globals after the command, switches after the id, `-9` as a signal.
    let c = cli("delete c1 --force --root /x");
    assert!(matches!(c.cmd, Cmd::Delete { force: true, .. }) && c.root.as_os_str() == "/x");
    let c = cli("kill --all c1 -9");
    assert!(
        matches!(c.cmd, Cmd::Kill { all: true, ref signal, .. } if signal.as_deref() == Some("-9"))
    );
    // `--` ends the flags.
    let c = cli("kill -- c1 -KILL");
    assert!(matches!(c.cmd, Cmd::Kill { ref signal, .. } if signal.as_deref() == Some("-KILL")));
    let c = cli("update --memory -1 --cpu-shares 512 --cpuset-cpus 0-1 -r - c1");
    let Cmd::Update(u) = c.cmd else { panic!() };
    assert_eq!(
        (u.memory, u.cpu_shares, u.cpuset_cpus.as_deref()),
        (Some(-1), Some(512), Some("0-1"))
    );
    assert_eq!(u.resources, Some(PathBuf::from("-")));
}

#[test]
fn rootless_forms() {
    assert_eq!(cli("--rootless spec").rootless.as_deref(), Some("true"));
    assert_eq!(
        cli("--rootless false state c1").rootless.as_deref(),
        Some("false")
    );
    assert_eq!(
        cli("--rootless=auto state c1").rootless.as_deref(),
        Some("auto")
    );
    assert_eq!(cli("state c1").rootless, None);
    assert!(cli("--systemd-cgroup --debug state c1").systemd_cgroup);
}

#[test]
fn errors() {
    assert!(err("create").contains("needs a container id"));
    assert!(err("create --bogus c1").contains("unknown flag --bogus"));
    assert!(err("frobnicate c1").contains("unknown command"));
    assert!(err("create c1 c2").contains("unexpected argument \"c2\""));
    assert!(err("create --pid-file").contains("needs a value"));
    assert!(err("run --preserve-fds x c1").contains("invalid value \"x\""));
    assert!(err("exec -g x c1 true").contains("--additional-gids"));
    assert!(err("update --blkio-weight 70000 c1").contains("--blkio-weight"));
    assert!(err("delete --force=yes c1").contains("takes no value"));
    assert!(err("--root /r").contains("no command"));
    assert!(err("list extra").contains("unexpected argument"));
}

#[test]
fn help_and_version() {
    for s in [
        "--help",
        "-h",
        "help",
        "create --help",
        "help create",
        "--version",
        "-v",
    ] {
        assert!(
            matches!(parse(v(s)), Ok(Parsed::Print(_))),
            "{s} prints something"
        );
    }
    let Ok(Parsed::Print(h)) = parse(v("--help")) else {
        panic!()
    };
    for c in CMDS {
        assert!(h.contains(c.0), "help lists {}", c.0);
    }
    let Ok(Parsed::Print(h)) = parse(v("exec --help")) else {
        panic!()
    };
    assert!(h.contains("--process"));
    let Ok(Parsed::Print(h)) = parse(v("--version")) else {
        panic!()
    };
    assert!(h.starts_with("zvisor-runc version "));
}
