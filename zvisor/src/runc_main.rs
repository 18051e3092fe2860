//! `zvisor-runc` as a binary of its own: the same runtime as `zvisor`
//! started under that name, without the VMM linked in, so that the many
//! short runtime invocations map fewer pages.

use std::process::ExitCode;

#[path = "runc/mod.rs"]
mod runc;

fn main() -> ExitCode {
    ExitCode::from(u8::try_from(runc::main()).unwrap_or(1))
}
