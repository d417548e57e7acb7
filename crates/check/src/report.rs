//! Results of `spedec gpu-check`: one [`Check`] per line (PASS / FAIL / INFO), grouped by
//! section, written as JSON after every check (so a crash or timeout keeps what was done),
//! merged into `gpu-check.json` and printed as a short table at the end.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spedec_report::{write_atomic, Summary};

/// Where progress lines go, one call per line: the CLI prints them; a test may collect them.
pub type Lines = Arc<dyn Fn(&str) + Send + Sync>;

/// Median and range of measurements (an error for none).
pub fn summarize(values: &[f64]) -> Result<Summary> {
    Summary::of(values).ok_or_else(|| anyhow::anyhow!("no measurements"))
}

/// "1.234 ms [1.200–1.300, n=20]" of a summary in milliseconds.
pub fn ms(s: &Summary) -> String {
    format!("{:.3} ms [{:.3}–{:.3}, n={}]", s.median, s.min, s.max, s.n)
}

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Correct within its criterion.
    Pass,
    /// Wrong, or it could not run.
    Fail,
    /// A measurement (timing) or a skipped item: no verdict.
    Info,
}

impl Status {
    /// `PASS`, `FAIL` or `INFO`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Info => "INFO",
        }
    }

    /// PASS when `ok`, else FAIL.
    pub fn of(ok: bool) -> Status {
        if ok {
            Status::Pass
        } else {
            Status::Fail
        }
    }
}

/// What a check function returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// One line for the log and the table.
    pub detail: String,
    /// Numbers for the JSON file.
    pub data: Value,
}

impl Outcome {
    /// An outcome with `status`, `detail` and `data`.
    pub fn new(status: Status, detail: impl Into<String>, data: Value) -> Self {
        Outcome {
            status,
            detail: detail.into(),
            data,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub section: String,
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(default)]
    pub data: Value,
    /// Wall time of the check in seconds.
    #[serde(default)]
    pub seconds: f64,
}

/// Everything one section produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SectionReport {
    pub section: String,
    /// Device description (or "cpu (dry run)").
    pub device: String,
    /// False while running (a file left with `false` means the process died mid-section).
    pub complete: bool,
    pub seconds: f64,
    pub checks: Vec<Check>,
}

/// The JSON file of one section.
pub fn section_path(out: &Path, section: &str) -> PathBuf {
    out.join(format!("gpu-check-{section}.json"))
}

/// Collects the checks of one section, passing each line on as it comes and rewriting the
/// section's JSON file after each.
pub struct Recorder {
    path: PathBuf,
    start: Instant,
    report: SectionReport,
    lines: Lines,
}

impl Recorder {
    /// Start `section`, writing to `out/gpu-check-<section>.json`.
    pub fn new(out: &Path, section: &str, device: &str, lines: Lines) -> Result<Self> {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
        let rec = Recorder {
            path: section_path(out, section),
            start: Instant::now(),
            report: SectionReport {
                section: section.to_string(),
                device: device.to_string(),
                complete: false,
                seconds: 0.0,
                checks: Vec::new(),
            },
            lines,
        };
        (rec.lines)(&format!("== {section} ({device})"));
        rec.save()?;
        Ok(rec)
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.report)?;
        write_atomic(&self.path, text.as_bytes())
    }

    /// Run one check: errors and panics become FAIL lines; the rest of the section goes on.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Result<Outcome>) -> Status {
        let t0 = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let outcome = match run {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::new(Status::Fail, format!("error: {e:#}"), Value::Null),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Outcome::new(Status::Fail, format!("panic: {msg}"), Value::Null)
            }
        };
        let check = Check {
            section: self.report.section.clone(),
            name: name.to_string(),
            status: outcome.status,
            detail: outcome.detail,
            data: outcome.data,
            seconds: t0.elapsed().as_secs_f64(),
        };
        (self.lines)(&format!(
            "[{}] {}: {} — {} ({:.1} s)",
            check.status.label(),
            check.section,
            check.name,
            check.detail,
            check.seconds
        ));
        let status = check.status;
        self.report.checks.push(check);
        self.report.seconds = self.start.elapsed().as_secs_f64();
        if let Err(e) = self.save() {
            log::warn!("cannot write {}: {e:#}", self.path.display());
        }
        status
    }

    /// Mark the section complete and write it; returns the report.
    pub fn finish(mut self) -> Result<SectionReport> {
        self.report.complete = true;
        self.report.seconds = self.start.elapsed().as_secs_f64();
        self.save()?;
        Ok(self.report)
    }
}

/// The merged result file.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    pub sections: Vec<SectionReport>,
    /// Sections expected but without a file, or left incomplete.
    pub missing: Vec<String>,
    pub passed: usize,
    pub failed: usize,
    pub info: usize,
    pub all_passed: bool,
}

/// Read the section files of `sections` from `out`, write `out/gpu-check.json`, and return
/// the merge. A missing or incomplete section counts as a failure.
pub fn merge(out: &Path, sections: &[String]) -> Result<Merged> {
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for s in sections {
        let path = section_path(out, s);
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<SectionReport>(&t).ok())
        {
            Some(r) => {
                if !r.complete {
                    missing.push(format!("{s} (incomplete: crashed or timed out)"));
                }
                reports.push(r);
            }
            None => missing.push(format!("{s} (no result file: crashed or timed out)")),
        }
    }
    let all: Vec<&Check> = reports.iter().flat_map(|r| &r.checks).collect();
    let count = |st: Status| all.iter().filter(|c| c.status == st).count();
    let (passed, failed, info) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Info),
    );
    let merged = Merged {
        all_passed: failed == 0 && missing.is_empty(),
        sections: reports,
        missing,
        passed,
        failed,
        info,
    };
    let text = serde_json::to_string_pretty(&merged)?;
    write_atomic(&out.join("gpu-check.json"), text.as_bytes())?;
    Ok(merged)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The short table printed last: one line per check, then the totals.
pub fn summary_table(m: &Merged) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n===== spedec gpu-check summary =====");
    for r in &m.sections {
        let _ = writeln!(s, "-- {} on {} ({:.0} s)", r.section, r.device, r.seconds);
        for c in &r.checks {
            let _ = writeln!(
                s,
                "{:<4}  {:<60}  {}",
                c.status.label(),
                clip(&c.name, 60),
                clip(&c.detail, 120)
            );
        }
    }
    for miss in &m.missing {
        let _ = writeln!(s, "FAIL  section {miss}");
    }
    let _ = writeln!(
        s,
        "{} passed, {} failed, {} info{}",
        m.passed,
        m.failed + m.missing.len(),
        m.info,
        if m.all_passed {
            " — ALL PASSED"
        } else {
            " — SOME FAILED"
        }
    );
    s
}

/// The Markdown summary `gpu-check.md`: the short table, then the linears-against-cuBLAS
/// table of any section that carries its rows (`data.rows` of
/// [`spedec_report::kernels::LinearVsCublas`]) and the bandwidth lines of the timing section.
pub fn markdown(m: &Merged) -> String {
    let mut s = String::from("# spedec gpu-check\n\n```\n");
    s.push_str(summary_table(m).trim());
    s.push_str("\n```\n");
    for r in &m.sections {
        for c in &r.checks {
            if c.name.contains("bandwidth") {
                let _ = write!(s, "\n- {} ({}): {}\n", c.name, r.section, c.detail);
            }
            let rows: Option<Vec<spedec_report::kernels::LinearVsCublas>> = c
                .data
                .get("rows")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if let Some(rows) = rows.filter(|r| !r.is_empty()) {
                let _ = write!(s, "\n## {} ({})\n\n", c.name, r.device);
                if let Some(call) = c.data.get("cublas_call").and_then(|v| v.as_str()) {
                    let _ = writeln!(s, "cuBLAS: {call}.\n");
                }
                s.push_str(&spedec_report::kernels::linear_table_md(&rows));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_measurements() {
        let s = summarize(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        assert_eq!(ms(&s), "2.500 ms [1.000–10.000, n=4]");
        assert!(summarize(&[]).is_err());
    }

    #[test]
    fn markdown_carries_the_linear_rows() {
        let row = spedec_report::kernels::LinearVsCublas::new(
            "70m",
            "qkv",
            (1, 1536, 512),
            "simt",
            4.0,
            Some(3.0),
            (2, false),
            171,
        );
        let check = |name: &str, data: Value| Check {
            section: "kernels".into(),
            name: name.into(),
            status: Status::Info,
            detail: "d".into(),
            data,
            seconds: 0.0,
        };
        let merged = Merged {
            sections: vec![SectionReport {
                section: "kernels".into(),
                device: "H200".into(),
                complete: true,
                seconds: 1.0,
                checks: vec![
                    check(
                        "linears vs cuBLAS",
                        serde_json::json!({ "rows": [row], "cublas_call": "gemm" }),
                    ),
                    check("read bandwidth", Value::Null),
                ],
            }],
            missing: vec![],
            passed: 0,
            failed: 0,
            info: 2,
            all_passed: true,
        };
        let md = markdown(&merged);
        assert!(md.contains("## linears vs cuBLAS (H200)"), "{md}");
        assert!(
            md.contains("| 70m qkv [1536×512] | 1 | simt | 4.0 | 3.0 | 1.33 |"),
            "{md}"
        );
        assert!(md.contains("- read bandwidth (kernels): d"), "{md}");
    }
}
