//! A small `tracing` subscriber writing runc's log formats.
//!
//! tracing-subscriber's formatter and EnvFilter (with regex) were a quarter
//! of the runtime binary. runc (logrus) writes `time="…" level=warning
//! msg="…"` in text and `{"level":"warning","msg":"…","time":"…"}` in JSON;
//! so does this, to the `--log` file or else to stderr. Spans are ignored.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Where and how log lines go.
pub struct Logger {
    file: Option<File>,
    json: bool,
    max: LevelFilter,
}

impl Logger {
    /// `log`: the `--log` file (stderr if `None` or it cannot be opened).
    pub fn new(log: Option<&std::path::Path>, format: &str, max: LevelFilter) -> Logger {
        let file = log.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Logger {
            file,
            json: format == "json",
            max,
        }
    }

    /// Writes one line.
    pub fn write(&self, level: Level, msg: &str) {
        let name = match level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let time = zvisor_containers::state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": name, "msg": msg, "time": time}).to_string() + "\n"
        } else {
            format!("time={time:?} level={name} msg={msg:?}\n")
        };
        // One write(2) per line, so lines of several processes do not mix.
        let _ = match self.file.as_ref() {
            Some(f) => (&*f).write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    /// Whether a log file is set.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }
}

/// The level from `ZVISOR_LOG` (a level name), else `--debug`'s.
pub fn level(debug: bool, env: Option<&str>) -> LevelFilter {
    match env.map(str::trim) {
        Some(s) if !s.is_empty() => s.parse().unwrap_or(LevelFilter::WARN),
        _ if debug => LevelFilter::DEBUG,
        _ => LevelFilter::WARN,
    }
}

/// Collects an event's message and fields into one string.
struct Msg(String);

impl Visit for Msg {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for &'static Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut m = Msg(String::new());
        event.record(&mut m);
        self.write(*event.metadata().level(), &m.0);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level(false, None), LevelFilter::WARN);
        assert_eq!(level(true, None), LevelFilter::DEBUG);
        assert_eq!(level(false, Some("trace")), LevelFilter::TRACE);
        assert_eq!(level(true, Some("error")), LevelFilter::ERROR);
        assert_eq!(level(false, Some("nonsense")), LevelFilter::WARN);
        assert_eq!(level(true, Some(" ")), LevelFilter::DEBUG);
    }

    #[test]
    fn lines_in_both_formats() {
        let d = std::env::temp_dir().join(format!("zvisor-runc-log-{}", std::process::id()));
        for (fmt, check) in [
            (
                "json",
                "{\"level\":\"warning\",\"msg\":\"a \\\"b\\\" x=1\",\"time\":\"",
            ),
            ("text", "level=warning msg=\"a \\\"b\\\" x=1\""),
        ] {
            let _ = std::fs::remove_file(&d);
            let l: &'static Logger =
                Box::leak(Box::new(Logger::new(Some(&d), fmt, LevelFilter::WARN)));
            assert!(l.has_file());
            tracing::subscriber::with_default(l, || {
                tracing::warn!(x = 1, "a \"b\"");
                tracing::debug!("filtered out");
            });
            let text = std::fs::read_to_string(&d).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.contains(check), "{fmt}: {text}");
            if fmt == "json" {
                let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
                assert!(v["time"].as_str().unwrap().ends_with('Z'));
            } else {
                assert!(text.starts_with("time=\""), "{text}");
            }
        }
        let _ = std::fs::remove_file(&d);
    }
}
