//! OCI hooks: each gets the state JSON on stdin and may have a timeout.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{p, Error, Result};

/// Runs `hooks` in order; the first failure stops and is returned.
pub fn run(phase: &str, hooks: &[Hook], state: &str) -> Result<()> {
    for h in hooks {
        run_one(phase, h, state)?;
    }
    Ok(())
}

fn run_one(phase: &str, h: &Hook, state: &str) -> Result<()> {
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for kv in h.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let fail = |msg: String| Error::Child(format!("{phase} hook {}: {msg}", p(h.path())));
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = h
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(fail(format!("failed: {st}"))),
            Ok(None) => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {}s",
                h.timeout().unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hooks_get_state_on_stdin_and_args() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let h = hook(serde_json::json!({"path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}; echo \"$1 $X\" >> {}", out.display(), out.display()), "sh", "arg1"],
            "env": ["X=envval"]}));
        run("prestart", &[h], "{\"id\":\"c\"}").unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(got, "{\"id\":\"c\"}arg1 envval\n");
    }

    #[test]
    fn failing_and_slow_hooks_are_errors() {
        let h = hook(serde_json::json!({"path": "/bin/false"}));
        let e = run("poststart", &[h], "{}").unwrap_err();
        assert!(
            e.to_string().contains("poststart hook /bin/false: failed"),
            "{e}"
        );
        let h =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}));
        let t0 = Instant::now();
        let e = run("createRuntime", &[h], "{}").unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4));
    }
}
