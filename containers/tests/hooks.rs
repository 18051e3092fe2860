//! Hooks run in order and receive the state (needs root).

mod common;

use common::*;
use serde_json::json;

#[test]
fn hooks_run_in_order_with_the_state() {
    require_root!();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("log");
    let mut b = Bundle::new(&["sh", "-c", "echo user-process >> /hooks/log"]);
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/hooks", "type": "bind", "source": logdir.path(), "options": ["rbind"]}));
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo \"{name} $(cat)\" >> {}", log.display())]});
    // startContainer runs inside the container (after pivot_root). It is
    // slow on purpose: poststart must still wait until the user process is
    // executed, which comes after it.
    let inner = json!({"path": "/bin/sh", "args": ["sh", "-c", "s=$(cat); sleep 0.3; echo \"startContainer $s\" >> /hooks/log"]});
    b.config["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [inner],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")]
    });
    let id = id("hooks");
    b.ok(&["create", &id]);
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    b.ok(&["start", &id]);
    assert!(wait_for(|| b.state(&id)["status"] == "stopped"));
    b.ok(&["delete", &id]);
    let text = std::fs::read_to_string(&log).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let hooks: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "user-process")
        .collect();
    assert_eq!(
        hooks,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("startContainer") < pos("user-process"), "{text}");
    for l in text.lines().filter(|l| !l.starts_with("user-process")) {
        let json_part = &l[l.find(' ').unwrap() + 1..];
        let st: serde_json::Value = serde_json::from_str(json_part).unwrap();
        assert_eq!(st["id"], id.as_str(), "{l}");
        assert_eq!(st["bundle"], b.dir.path().to_str().unwrap());
        if !l.starts_with("poststop") {
            assert_eq!(st["pid"], pid, "{l}");
        }
    }
    assert!(text.lines().last().unwrap().contains("\"stopped\""));
    assert_no_leaks(&b, &id);
}

#[test]
fn a_failing_hook_fails_create_and_cleans_up() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    let id = id("hookfail");
    let out = b.runc(&["create", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("createRuntime hook /bin/false: failed"));
    assert_no_leaks(&b, &id);
}
