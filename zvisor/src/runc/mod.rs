//! The runc-compatible OCI runtime command line (`zvisor-runc`).

/// Entry point when the binary is invoked as `zvisor-runc`.
pub fn main() -> i32 {
    eprintln!("zvisor-runc: not implemented yet");
    1
}
