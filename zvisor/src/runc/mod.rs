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
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    // A plain level filter unless ZVISOR_LOG asks for more: EnvFilter's
    // directive parsing costs about a megabyte of RSS per invocation.
    let level = if cli.debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let layer = tracing_subscriber::fmt::layer().with_ansi(false);
    let layer = match file {
        Some(f) => layer.with_writer(std::sync::Mutex::new(f)).boxed(),
        None => layer.with_writer(std::io::stderr).boxed(),
    };
    match std::env::var("ZVISOR_LOG") {
        Ok(spec) => {
            let filter = tracing_subscriber::EnvFilter::try_new(spec)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
        }
        Err(_) => tracing_subscriber::registry()
            .with(layer.with_filter(level))
            .init(),
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
