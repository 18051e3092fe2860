//! `zvisor-init vsock ...`: a small static echo client/server for the rung-2
//! vsock test, usable where busybox has no AF_VSOCK (the guest) and no Unix
//! socket client (L1, the host side of zvisor's Firecracker-style vsock).
//!
//! ```text
//! zvisor-init vsock serve-vsock PORT N          # guest: echo N connections
//! zvisor-init vsock serve-unix PATH N           # host: echo N connections
//! zvisor-init vsock connect-vsock CID PORT N BYTES
//! zvisor-init vsock connect-unix PATH PORT N BYTES   # "CONNECT PORT\n" first
//! ```
//! Clients open N connections at once, each sends BYTES of a per-connection
//! pattern while reading the echo back, and compare.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

fn pattern(conn: usize, i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(conn.wrapping_mul(7)) % 251) as u8
}

fn vsock_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vm_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is valid.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<File> {
    let fd = vsock_fd()?;
    let a = vm_addr(cid, port);
    // SAFETY: `a` is a valid sockaddr_vm of the given length.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(File::from(fd))
}

fn shutdown_write(f: &impl AsRawFd) {
    // SAFETY: shutdown(2) on a descriptor we hold.
    unsafe {
        libc::shutdown(f.as_raw_fd(), libc::SHUT_WR);
    }
}

/// Sends `bytes` of the pattern on one handle while reading the echo on a clone.
fn echo_check<S: Read + Write + AsRawFd + Send + 'static>(
    conn: usize,
    mut tx: S,
    mut rx: S,
    bytes: usize,
) -> Result<(), String> {
    let writer = thread::spawn(move || -> io::Result<()> {
        let buf: Vec<u8> = (0..bytes).map(|i| pattern(conn, i)).collect();
        for chunk in buf.chunks(4096) {
            tx.write_all(chunk)?;
        }
        shutdown_write(&tx);
        Ok(())
    });
    let mut got = 0usize;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = rx
            .read(&mut buf)
            .map_err(|e| format!("conn {conn}: read: {e}"))?;
        if n == 0 {
            break;
        }
        for (k, b) in buf[..n].iter().enumerate() {
            if *b != pattern(conn, got + k) {
                return Err(format!("conn {conn}: byte {} differs", got + k));
            }
        }
        got += n;
    }
    writer
        .join()
        .map_err(|_| format!("conn {conn}: writer panicked"))?
        .map_err(|e| format!("conn {conn}: write: {e}"))?;
    if got != bytes {
        return Err(format!("conn {conn}: echoed {got} of {bytes} bytes"));
    }
    Ok(())
}

fn serve<S: Read + Write + AsRawFd + Send + 'static>(mut s: S) -> io::Result<u64> {
    let mut total = 0u64;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            shutdown_write(&s);
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn retry<T>(what: &str, mut f: impl FnMut() -> io::Result<T>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                let _ = e;
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

fn unix_connect(path: &str, port: u32) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while b[0] != b'\n' {
        if s.read(&mut b)? == 0 || line.len() > 64 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "no OK line",
            ));
        }
        line.push(b[0]);
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::other(format!(
            "answer {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    Ok(s)
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    s.and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("vsock: bad or missing {what}"))
}

fn run(args: &[String]) -> Result<String, String> {
    let mode = args.first().map(String::as_str).unwrap_or("");
    match mode {
        "serve-vsock" | "serve-unix" => {
            let n: usize = num(args.get(2), "N")?;
            let mut handles = Vec::new();
            if mode == "serve-vsock" {
                let port: u32 = num(args.get(1), "PORT")?;
                let fd = vsock_fd().map_err(|e| format!("socket: {e}"))?;
                let a = vm_addr(libc::VMADDR_CID_ANY, port);
                // SAFETY: valid sockaddr_vm and length on our own fd.
                let r = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        (&a as *const libc::sockaddr_vm).cast(),
                        std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                    )
                };
                // SAFETY: listen(2) on our own fd.
                if r != 0 || unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
                    return Err(format!("bind/listen: {}", io::Error::last_os_error()));
                }
                for _ in 0..n {
                    // SAFETY: accept(2) without an address buffer.
                    let c = unsafe {
                        libc::accept4(
                            fd.as_raw_fd(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        return Err(format!("accept: {}", io::Error::last_os_error()));
                    }
                    // SAFETY: `c` is a fresh descriptor owned by nobody else.
                    let f = File::from(unsafe { OwnedFd::from_raw_fd(c) });
                    handles.push(thread::spawn(move || serve(f)));
                }
            } else {
                let path = args.get(1).ok_or("vsock: missing PATH")?;
                let l = UnixListener::bind(path).map_err(|e| format!("{path}: {e}"))?;
                for _ in 0..n {
                    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                    handles.push(thread::spawn(move || serve(s)));
                }
            }
            let mut total = 0;
            for h in handles {
                total += h
                    .join()
                    .map_err(|_| "server thread panicked".to_string())?
                    .map_err(|e| format!("echo: {e}"))?;
            }
            Ok(format!("VSOCK-SERVED conns={n} bytes={total}"))
        }
        "connect-vsock" | "connect-unix" => {
            let port: u32 = num(args.get(2), "PORT")?;
            let n: usize = num(args.get(3), "N")?;
            let bytes: usize = num(args.get(4), "BYTES")?;
            let mut handles = Vec::new();
            for conn in 0..n {
                let target = args.get(1).cloned().unwrap_or_default();
                let vsock = mode == "connect-vsock";
                handles.push(thread::spawn(move || -> Result<(), String> {
                    if vsock {
                        let cid: u32 = target.parse().map_err(|_| "bad CID".to_string())?;
                        let s = retry("connect", || vsock_connect(cid, port))?;
                        let r = s.try_clone().map_err(|e| e.to_string())?;
                        echo_check(conn, s, r, bytes)
                    } else {
                        let s = retry("connect", || unix_connect(&target, port))?;
                        let r = s.try_clone().map_err(|e| e.to_string())?;
                        echo_check(conn, s, r, bytes)
                    }
                }));
            }
            for h in handles {
                h.join()
                    .map_err(|_| "client thread panicked".to_string())??;
            }
            Ok(format!("VSOCK-ECHO-OK conns={n} bytes={bytes}"))
        }
        _ => Err(format!("vsock: unknown mode {mode:?}")),
    }
}

/// Entry point for `zvisor-init vsock ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("VSOCK-FAILED {e}");
            ExitCode::FAILURE
        }
    }
}
