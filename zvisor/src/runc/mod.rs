//! The runc-compatible OCI runtime command line (`zvisor-runc`).

mod cli;
mod cmds;
mod templates;

use std::io::Write;

use clap::Parser;

use cli::Cli;

/// Entry point when the binary is invoked as `zvisor-runc`.
pub fn main() -> i32 {
    let args = cli::normalize_args(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging(&cli);
    match cmds::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            report_error(&cli, &format!("{e:#}"));
            1
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ZVISOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

/// Writes the error to stderr and, when `--log` is set, to the log file in
/// the requested format (conmon and containerd read `msg` from JSON lines).
fn report_error(cli: &Cli, msg: &str) {
    eprintln!("zvisor-runc: {msg}");
    let Some(path) = &cli.log else {
        return;
    };
    let line = if cli.log_format == "json" {
        serde_json::json!({
            "level": "error",
            "msg": msg,
            "time": zvisor_containers::state::now_rfc3339(),
        })
        .to_string()
    } else {
        format!("level=error msg={msg:?}")
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
