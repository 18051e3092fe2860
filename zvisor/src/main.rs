//! The `zvisor` command line.
//!
//! `zvisor run ...` boots a microVM. The runc-compatible OCI runtime is the
//! separate `zvisor-runc` binary (`src/runc_main.rs`): keeping it out of this
//! one keeps the VMM's start-up footprint small (2.1 instead of 2.5 MiB peak
//! RSS for a tiny-guest boot, docs/performance.md).

mod devices;
mod run;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match cli.cmd {
        Cmd::Run(args) => run::main(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
