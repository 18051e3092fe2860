//! `zvisor-chan-client SOCKET SEND RECV`: the host end of the rung-2
//! `--channel socket=` test, run inside L1 (whose busybox `nc` has no Unix
//! sockets). Built statically into L1's initramfs.
//!
//! 1. connects (retrying while zvisor starts) and waits for the guest's
//!    hello line;
//! 2. sends the file SEND while reading the guest's echo of it into RECV,
//!    and compares;
//! 3. disconnects, connects again as a new client, sends `PING2` and
//!    expects `PONG2 PING2` back.
//!
//! `zvisor-chan-client agent SOCKET`: the host end of a named (multiport)
//! channel: connects, sends `AGENT-PING` and expects `AGENT-REPLY
//! AGENT-PING` from the guest.
//!
//! Prints one result line per step; exits non-zero on the first failure.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const HELLO: &str = "CHAN-HELLO-FROM-L2";

fn connect(path: &str) -> Result<UnixStream, String> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(300)))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if start.elapsed() < Duration::from_secs(120) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("connect {path}: {e}")),
        }
    }
}

/// Reads one line (without the newline), byte by byte so nothing after it
/// is consumed.
fn read_line(s: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Err(format!("EOF after {:?}", String::from_utf8_lossy(&line))),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() > 256 => return Err("line too long".into()),
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn agent(path: &str) -> Result<(), String> {
    let mut s = connect(path)?;
    s.write_all(b"AGENT-PING\n")
        .map_err(|e| format!("write: {e}"))?;
    let line = read_line(&mut s)?;
    if line != "AGENT-REPLY AGENT-PING" {
        return Err(format!("agent answer is {line:?}"));
    }
    println!("CLIENT-AGENT-OK");
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    if let [mode, path] = args {
        if mode == "agent" {
            return agent(path);
        }
    }
    let [path, send, recv] = args else {
        return Err("usage: zvisor-chan-client SOCKET SEND RECV".into());
    };
    let data = std::fs::read(send).map_err(|e| format!("{send}: {e}"))?;

    let mut s = connect(path)?;
    let hello = read_line(&mut s)?;
    if hello != HELLO {
        return Err(format!("hello line is {hello:?}"));
    }
    println!("CLIENT-HELLO-OK");

    let t = Instant::now();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let out = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&out));
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("echo read: {e}"))?;
    writer
        .join()
        .map_err(|_| "writer panicked".to_string())?
        .map_err(|e| format!("echo write: {e}"))?;
    std::fs::write(recv, &got).map_err(|e| format!("{recv}: {e}"))?;
    if got != data {
        let at = got.iter().zip(&data).position(|(a, b)| a != b);
        return Err(format!("echo differs (first at {at:?})"));
    }
    println!(
        "CLIENT-ECHO-OK bytes={} ms={}",
        data.len(),
        t.elapsed().as_millis()
    );
    drop(s);

    let mut s = connect(path)?;
    s.write_all(b"PING2\n").map_err(|e| format!("write: {e}"))?;
    let line = read_line(&mut s)?;
    if line != "PONG2 PING2" {
        return Err(format!("reconnect answer is {line:?}"));
    }
    println!("CLIENT-RECONNECT-OK");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("CLIENT-FAILED {e}");
            ExitCode::FAILURE
        }
    }
}
