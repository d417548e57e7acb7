//! The CLI's logger for the `log` facade the libraries write their warnings to.
//!
//! Records go to stderr as `warning: …`, `error: …` (and `info: …`, `debug: …`, `trace: …` when
//! enabled). The level is `warn` unless `RUST_LOG` names another one (`off`, `error`, `warn`,
//! `info`, `debug`, `trace`); in an env_logger-style list such as `spedec=debug,warn`, the bare
//! level is used and per-module directives are ignored.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // One write per record, so lines from threads do not interleave; a closed stderr is
        // not worth failing over.
        let line = format!("{prefix}: {}\n", record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The level `RUST_LOG` asks for (`spec`), or `warn`.
fn level(spec: Option<&str>) -> LevelFilter {
    spec.and_then(|s| {
        s.split(',')
            .rev()
            .find_map(|part| part.trim().parse::<LevelFilter>().ok())
    })
    .unwrap_or(LevelFilter::Warn)
}

/// Installs the logger (once; a second call changes nothing).
pub fn init() {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level(std::env::var("RUST_LOG").ok().as_deref()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_levels() {
        assert_eq!(level(None), LevelFilter::Warn);
        assert_eq!(level(Some("")), LevelFilter::Warn);
        assert_eq!(level(Some("debug")), LevelFilter::Debug);
        assert_eq!(level(Some("OFF")), LevelFilter::Off);
        assert_eq!(level(Some("spedec=trace,info")), LevelFilter::Info);
        assert_eq!(level(Some("spedec=trace")), LevelFilter::Warn);
    }
}
