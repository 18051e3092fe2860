//! The runc-compatible OCI runtime command line (`zvisor-runc`).

mod cli;
mod cmds;
mod log;
mod templates;

use cli::Parsed;

/// Entry point of `zvisor-runc`.
pub fn main() -> i32 {
    let cli = match cli::parse(std::env::args().skip(1)) {
        Ok(Parsed::Cli(c)) => *c,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return 0;
        }
        Err(e) => {
            eprintln!("zvisor-runc: {e} (see zvisor-runc --help)");
            return 1;
        }
    };
    let env = std::env::var("ZVISOR_LOG").ok();
    let logger = log::Logger::new(
        cli.log.as_deref(),
        &cli.log_format,
        log::level(cli.debug, env.as_deref()),
    );
    // Leaked: it lives as long as the process; `tracing` wants 'static.
    let logger: &'static log::Logger = Box::leak(Box::new(logger));
    let _ = tracing::subscriber::set_global_default(logger);
    match cmds::dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            // On stderr for people, and in the `--log` file, where conmon and
            // containerd read it (`msg` of the JSON line).
            let msg = format!("{e:#}");
            eprintln!("zvisor-runc: {msg}");
            if logger.has_file() {
                logger.write(tracing::Level::ERROR, &msg);
            }
            1
        }
    }
}
