//! The `zvisor` command line.
//!
//! `zvisor run ...` boots a microVM. Invoked as `zvisor-runc` (a symlink or
//! hard link), the same binary is the runc-compatible OCI runtime.

mod devices;
mod run;
mod runc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "zvisor",
    version,
    about = "KVM microVMs and OCI containers, IBM Z first"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `zvisor_vmm=trace`.
    #[arg(long, global = true, env = "ZVISOR_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot a Linux microVM and attach its console to this terminal.
    Run(run::RunArgs),
}

/// True when this executable was started under the runtime's name.
fn invoked_as_runc() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().starts_with("zvisor-runc"))
        })
        .unwrap_or(false)
}

fn main() -> ExitCode {
    if invoked_as_runc() {
        return ExitCode::from(u8::try_from(runc::main()).unwrap_or(1));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli.cmd {
        Cmd::Run(args) => run::main(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
