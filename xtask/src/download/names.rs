//! Which Pythia models and training-checkpoint revisions exist, and checks of
//! the names a user types.

use anyhow::{bail, Result};

/// The Hugging Face organisation that publishes the Pythia suite.
pub const ORG: &str = "EleutherAI";

/// Pythia sizes; each also exists as `<name>-deduped`.
pub const SIZES: &[&str] = &[
    "14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b",
];

/// The last training step (`main` points at the same weights).
pub const LAST_STEP: u32 = 143_000;

/// Human-readable description of the valid revision names, for error messages
/// and `--help`.
pub const REVISION_FORM: &str = "main, step0, step1, step2, step4, ... step512 (powers of two), \
     or step1000 ... step143000 (multiples of 1000)";

/// All valid model names, comma-separated, for error messages.
pub fn model_list() -> String {
    let mut names: Vec<String> = SIZES.iter().map(|s| format!("pythia-{s}")).collect();
    names.extend(SIZES.iter().map(|s| format!("pythia-{s}-deduped")));
    names.join(", ")
}

/// Checks a model name and returns its canonical short form (`pythia-70m`).
/// Accepts the `EleutherAI/` prefix and any letter case.
pub fn parse_model(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let lower = trimmed.to_ascii_lowercase();
    let name = lower.strip_prefix("eleutherai/").unwrap_or(&lower);
    let size = name
        .strip_prefix("pythia-")
        .map(|rest| rest.strip_suffix("-deduped").unwrap_or(rest));
    match size {
        Some(size) if SIZES.contains(&size) => Ok(name.to_string()),
        _ => bail!("unknown model `{trimmed}`; valid models: {}", model_list()),
    }
}

/// Checks a revision name: `main` or one of the 154 published checkpoints
/// (`step0`, `step1`, `step2`, `step4` ... `step512`, `step1000` ... `step143000`).
pub fn parse_revision(input: &str) -> Result<String> {
    let rev = input.trim();
    if rev == "main" {
        return Ok(rev.to_string());
    }
    let digits = rev
        .strip_prefix("step")
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
    let canonical = digits.filter(|digits| digits.len() == 1 || !digits.starts_with('0'));
    match canonical.and_then(|digits| digits.parse::<u32>().ok()) {
        Some(n) if is_checkpoint(n) => Ok(rev.to_string()),
        _ => {
            // A step number, even with leading zeros or beyond the last step, has neighbours.
            let nearest = match digits.map(|d| d.parse::<u64>().unwrap_or(u64::MAX)) {
                Some(n) => format!(
                    "nearest: {}; ",
                    nearest_checkpoints(n)
                        .iter()
                        .map(|s| format!("step{s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            bail!("unknown revision `{rev}`; {nearest}valid revisions: {REVISION_FORM}")
        }
    }
}

/// The published checkpoints nearest to step `n`: `n` itself if it is one, else the one
/// below and the one above (only one beyond either end).
pub fn nearest_checkpoints(n: u64) -> Vec<u32> {
    if let Ok(n32) = u32::try_from(n) {
        if is_checkpoint(n32) {
            return vec![n32];
        }
    }
    let below = (0..=LAST_STEP)
        .rev()
        .find(|&s| u64::from(s) < n && is_checkpoint(s));
    let above = (0..=LAST_STEP).find(|&s| u64::from(s) > n && is_checkpoint(s));
    below.into_iter().chain(above).collect()
}

/// Whether `step{n}` is one of the published Pythia checkpoints.
pub fn is_checkpoint(n: u32) -> bool {
    let early = n == 0 || (n <= 512 && n.is_power_of_two());
    let regular = (1000..=LAST_STEP).contains(&n) && n % 1000 == 0;
    early || regular
}

/// The directory name under `data/models/`: `pythia-70m` for `main`,
/// `pythia-70m@step1000` for a checkpoint.
pub fn model_dir_name(model: &str, revision: &str) -> String {
    if revision == "main" {
        model.to_string()
    } else {
        format!("{model}@{revision}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_154_checkpoints() {
        let count = (0..=LAST_STEP).filter(|&n| is_checkpoint(n)).count();
        assert_eq!(count, 154);
    }

    #[test]
    fn revisions_are_validated() {
        for ok in [
            "main",
            "step0",
            "step1",
            "step2",
            "step4",
            "step512",
            "step1000",
            "step143000",
        ] {
            assert_eq!(parse_revision(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "Main",
            "step",
            "step3",
            "step600",
            "step1500",
            "step144000",
            "step01",
            "stepx",
            "step-1",
            "v0",
            "refs/pr/1",
        ] {
            let err = parse_revision(bad).unwrap_err().to_string();
            assert!(err.contains("step1000 ... step143000"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_step_names_its_nearest_checkpoints() {
        for (bad, nearest) in [
            ("step1500", "nearest: step1000, step2000; "),
            ("step600", "nearest: step512, step1000; "),
            ("step144000", "nearest: step143000; "),
            ("step3", "nearest: step2, step4; "),
            ("step999", "nearest: step512, step1000; "),
            ("step01", "nearest: step1; "),
            ("step99999999999999999999999", "nearest: step143000; "),
        ] {
            let err = parse_revision(bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("unknown revision `{bad}`; {nearest}valid revisions: {REVISION_FORM}")
            );
        }
        // Not a step number: only the valid form.
        let err = parse_revision("v0").unwrap_err().to_string();
        assert_eq!(
            err,
            format!("unknown revision `v0`; valid revisions: {REVISION_FORM}")
        );
        assert_eq!(nearest_checkpoints(0), [0]);
        assert_eq!(nearest_checkpoints(142_999), [142_000, 143_000]);
    }

    #[test]
    fn models_are_validated() {
        assert_eq!(parse_model("pythia-70m").unwrap(), "pythia-70m");
        assert_eq!(
            parse_model("EleutherAI/Pythia-1.4B-deduped").unwrap(),
            "pythia-1.4b-deduped"
        );
        assert_eq!(parse_model(" pythia-12b ").unwrap(), "pythia-12b");
        for bad in [
            "pythia-7m",
            "gpt2",
            "pythia-70m-dedup",
            "EleutherAI/",
            "pythia-",
        ] {
            let err = parse_model(bad).unwrap_err().to_string();
            assert!(err.contains("pythia-2.8b-deduped"), "{bad}: {err}");
        }
    }

    #[test]
    fn model_dirs_carry_the_revision() {
        assert_eq!(model_dir_name("pythia-70m", "main"), "pythia-70m");
        assert_eq!(
            model_dir_name("pythia-70m", "step1000"),
            "pythia-70m@step1000"
        );
    }
}
