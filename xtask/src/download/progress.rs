//! Progress of one download on stderr: a progress bar (file, bytes, rate, eta) when stderr is
//! a terminal, otherwise plain lines — one when the transfer starts, one every
//! [`LINE_INTERVAL`] and one when it ends — so that logs show what is happening too.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use spedec_report::format_bytes;

/// How often a plain-text progress line is printed while bytes arrive.
pub const LINE_INTERVAL: Duration = Duration::from_secs(30);

/// Progress of one file.
pub struct Progress {
    bar: ProgressBar,
    /// Plain lines instead of the bar (stderr is not a terminal).
    plain: bool,
    label: String,
    total: Option<u64>,
    position: u64,
    /// Where this run started (bytes resumed from an earlier run are not counted in the rate).
    first: u64,
    start: Instant,
    last_line: Instant,
}

impl Progress {
    /// Starts showing the download of `label` (`total` bytes if known, `position` already on
    /// disk) from `host`.
    pub fn start(label: &str, host: &str, total: Option<u64>, position: u64) -> Progress {
        let bar = ProgressBar::new(total.unwrap_or(0));
        let template = if total.is_some() {
            "{msg:40!} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}"
        } else {
            "{msg:40!} {spinner} {binary_bytes:>10} {binary_bytes_per_sec:>12}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar.set_position(position);
        let plain = bar.is_hidden();
        if plain {
            let size = total.map_or(String::new(), |t| format!(" ({})", format_bytes(t)));
            if position > 0 {
                eprintln!(
                    "{label}: resuming at {} from {host}{size}",
                    format_bytes(position)
                );
            } else {
                eprintln!("{label}: downloading from {host}{size}");
            }
        }
        Progress::with(bar, plain, label, total, position)
    }

    /// Shows nothing at all (tests).
    #[cfg(test)]
    pub fn silent() -> Progress {
        Progress::with(ProgressBar::hidden(), false, "", None, 0)
    }

    fn with(bar: ProgressBar, plain: bool, label: &str, total: Option<u64>, pos: u64) -> Self {
        let now = Instant::now();
        Progress {
            bar,
            plain,
            label: label.to_string(),
            total,
            position: pos,
            first: pos,
            start: now,
            last_line: now,
        }
    }

    pub fn set_length(&mut self, total: u64) {
        self.total = Some(total);
        self.bar.set_length(total);
    }

    /// The bytes on disk now (also after starting over: then the rate restarts too).
    pub fn set_position(&mut self, position: u64) {
        if position < self.first {
            self.first = position;
            self.start = Instant::now();
        }
        self.position = position;
        self.bar.set_position(position);
        if self.plain && self.last_line.elapsed() >= LINE_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("{}", self.status());
        }
    }

    /// A line above the bar (or on its own when there is no bar).
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            if self.plain {
                eprintln!("{line}");
            }
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar and prints what was transferred, how fast.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if !self.label.is_empty() {
            eprintln!("{}", self.status());
        }
    }

    /// `label: 12.0 MiB of 40.0 MiB (30%), 5.1 MiB/s` or, complete, `label: 40.0 MiB in 7.9 s
    /// (5.1 MiB/s)`.
    fn status(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64();
        let moved = self.position - self.first;
        let rate = if secs > 0.0 {
            format!("{}/s", format_bytes((moved as f64 / secs) as u64))
        } else {
            "—".to_string()
        };
        match self.total {
            Some(t) if self.position < t => format!(
                "{}: {} of {} ({:.0}%), {rate}",
                self.label,
                format_bytes(self.position),
                format_bytes(t),
                100.0 * self.position as f64 / t.max(1) as f64
            ),
            _ => format!(
                "{}: {} in {secs:.1} s ({rate})",
                self.label,
                format_bytes(self.position)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_name_the_file_the_bytes_and_the_rate() {
        let mut p = Progress::with(ProgressBar::hidden(), false, "m/x.bin", Some(4 << 20), 0);
        p.set_position(1 << 20);
        let line = p.status();
        assert!(
            line.starts_with("m/x.bin: 1.0 MiB of 4.0 MiB (25%), "),
            "{line}"
        );
        assert!(line.ends_with("/s"), "{line}");
        p.set_position(4 << 20);
        let line = p.status();
        assert!(line.starts_with("m/x.bin: 4.0 MiB in "), "{line}");
        assert!(line.ends_with("/s)"), "{line}");
    }
}
