//! `cargo xtask download`: Pythia models from the Hugging Face hub (through
//! the standard HF cache, linked into `data/models/`) and the evaluation
//! texts (WikiText-2 raw test split, PG-19 test books) into `data/datasets/`.

mod convert;
mod fetch;
mod files;
mod http;
mod hub;
mod names;
mod pg19;
mod progress;
mod weights;
mod wikitext;

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;

use http::Http;
use hub::{Hub, HubFile, RepoKind, Source};

#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Models, comma-separated: pythia-{14m,31m,70m,160m,410m,1b,1.4b,2.8b,6.9b,12b}, each also
    /// as -deduped; or `none`
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "pythia-70m,pythia-2.8b",
        value_name = "NAMES"
    )]
    pub model: Vec<String>,

    /// Training checkpoint: main (= step143000), step0, step1, step2, step4 ... step512,
    /// step1000 ... step143000 (multiples of 1000)
    #[arg(long, default_value = "main", value_name = "REV")]
    pub revision: String,

    /// Datasets, comma-separated
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "wikitext2,pg19",
        value_name = "SETS"
    )]
    pub data: Vec<Dataset>,

    /// How many PG-19 test books: 10146 and 10321 first, then the other test books by
    /// ascending id
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100))]
    pub pg19_books: u32,

    /// Output directory (models go to <DEST>/models, texts to <DEST>/datasets)
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub dest: PathBuf,

    /// Retries of a failed transfer (each resumes where the last one stopped)
    #[arg(long, default_value_t = 5, value_name = "N", hide_short_help = true)]
    pub retries: u32,

    /// Base URL of the PG-19 bucket host (default: $SPEDEC_PG19_ENDPOINT or
    /// https://storage.googleapis.com)
    #[arg(long, hide = true, value_name = "URL")]
    pub pg19_endpoint: Option<String>,

    /// Base URL of the hub that serves the WikiText-2 zip (default: $SPEDEC_WIKITEXT_ENDPOINT
    /// or the hub of HF_ENDPOINT)
    #[arg(long, hide = true, value_name = "URL")]
    pub wikitext_endpoint: Option<String>,
}

const AFTER_HELP: &str = "\
Models are stored in the Hugging Face cache and shared with other HF tools; <DEST>/models/<name>
(or <name>@<revision>) gets links to config.json, tokenizer.json and the weights, so that
`spedec --model data/models/pythia-70m` works.

Weight layouts, tried in this order (a 404 moves on to the next; the one found is printed):
  model.safetensors             linked
  model.safetensors.index.json  sharded: the index is checked, every shard it lists is
                                fetched and sha256-checked, index and shards are linked
  pytorch_model.bin             converted once (nothing in it is executed) to a real
                                model.safetensors in the model folder
  pytorch_model.bin.index.json  sharded .bin: each shard converted once to
                                model-0000k-of-0000n.safetensors, plus their index
A later run finds the converted files (.spedec-converted-from) and does not convert again.

Environment:
  HF_ENDPOINT     hub URL (default https://huggingface.co)
  HF_HUB_CACHE    cache directory (default $HF_HOME/hub, ~/.cache/huggingface/hub)
  HF_HOME         HF home (token file, cache)
  HF_TOKEN        access token for gated or private repositories
  HF_HUB_OFFLINE  1 = use the cache only
  SPEDEC_PG19_ENDPOINT      host of the PG-19 bucket (default https://storage.googleapis.com)
  SPEDEC_WIKITEXT_ENDPOINT  hub serving the WikiText-2 zip (default: HF_ENDPOINT)

Downloads resume after an interruption (also across runs), are checked against sha256 (the
hub's for LFS files, pinned ones for the datasets) and appear under their final name only once
complete.";

/// A dataset to download.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    /// WikiText-2 raw, test split (wiki.test.raw)
    Wikitext2,
    /// PG-19 test books
    Pg19,
    /// No datasets
    None,
}

/// Everything a run needs, resolved from the arguments and the environment.
pub struct Plan {
    pub models: Vec<String>,
    pub revision: String,
    pub wikitext: bool,
    pub pg19_books: Option<usize>,
    pub dest: PathBuf,
    pub hub: Hub,
    /// Hub serving the WikiText-2 zip (same cache as `hub`).
    pub wikitext_hub: Hub,
    pub wikitext_spec: wikitext::Spec<'static>,
    pub pg19_spec: pg19::Spec<'static>,
    pub http: Http,
}

impl Plan {
    /// Checks the arguments (before any network access) and reads the environment.
    pub fn new(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Plan> {
        let mut models = Vec::new();
        for name in args
            .model
            .iter()
            .filter(|m| !m.trim().is_empty() && m.trim() != "none")
        {
            let name = names::parse_model(name)?;
            if !models.contains(&name) {
                models.push(name);
            }
        }
        let revision = names::parse_revision(&args.revision)?;
        let hub = Hub::from_env(env)?;
        let mut wikitext_hub = hub.clone();
        if let Some(url) = args
            .wikitext_endpoint
            .clone()
            .or_else(|| env("SPEDEC_WIKITEXT_ENDPOINT"))
        {
            wikitext_hub.endpoint = base_url("SPEDEC_WIKITEXT_ENDPOINT", &url)?;
        }
        let pg19_endpoint = args
            .pg19_endpoint
            .clone()
            .or_else(|| env(pg19::ENDPOINT_ENV))
            .unwrap_or_else(|| pg19::DEFAULT_ENDPOINT.to_string());
        let pg19_endpoint = base_url(pg19::ENDPOINT_ENV, &pg19_endpoint)?;
        let has = |d: Dataset| args.data.contains(&d);
        Ok(Plan {
            models,
            revision,
            wikitext: has(Dataset::Wikitext2),
            pg19_books: has(Dataset::Pg19).then_some(args.pg19_books as usize),
            dest: args.dest.clone(),
            hub,
            wikitext_hub,
            wikitext_spec: wikitext::SPEC,
            pg19_spec: pg19::Spec::real(pg19_endpoint),
            http: Http::new(args.retries, Duration::from_secs(1)),
        })
    }
}

/// Checks a base URL override and drops its trailing slash.
fn base_url(setting: &str, url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("{setting} must start with http:// or https://, got `{url}`");
    }
    Ok(url.to_string())
}

/// Entry point of the subcommand.
pub fn run(args: &Args) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let plan = Plan::new(args, &env)?;
    for line in execute(&plan)? {
        println!("{line}");
    }
    Ok(())
}

/// Runs a plan; returns one summary line per result.
pub fn execute(plan: &Plan) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for model in &plan.models {
        let dir = download_model(plan, model)?;
        done.push(format!("model    {}", dir.display()));
    }
    if plan.wikitext {
        let path = wikitext::download(
            &plan.http,
            &plan.wikitext_hub,
            &plan.wikitext_spec,
            &plan.dest,
        )?;
        done.push(format!("dataset  {}", path.display()));
    }
    if let Some(count) = plan.pg19_books {
        let paths = pg19::download(&plan.http, &plan.pg19_spec, count, &plan.dest)?;
        done.push(format!(
            "dataset  {} ({} books)",
            pg19::output_dir(&plan.dest).display(),
            paths.len()
        ));
    }
    Ok(done)
}

/// The committed WikiText-2 test split (data/fixtures/wikitext-2-raw/wiki.test.raw), if it is
/// there and has the pinned sha256: the same bytes `download --data wikitext2` produces.
pub fn committed_wikitext() -> Result<Option<PathBuf>> {
    wikitext::committed_copy(&wikitext::SPEC)
}

/// Fetches one model's files into the HF cache (the weights in whichever layout the revision
/// has, see [`weights`]) and, once all are there, links them into
/// `<dest>/models/<name>[@<revision>]/`, converting PyTorch weights there once.
fn download_model(plan: &Plan, model: &str) -> Result<PathBuf> {
    let repo = format!("{}/{model}", names::ORG);
    let what = format!("{repo}@{}", plan.revision);
    let dir = plan
        .dest
        .join("models")
        .join(names::model_dir_name(model, &plan.revision));
    let hint = format!(
        "valid models: {}; valid revisions: {}",
        names::model_list(),
        names::REVISION_FORM
    );
    let get = |filename: &str, not_found_hint: &str| -> Result<hub::Got> {
        let file = HubFile {
            kind: RepoKind::Model,
            repo: &repo,
            revision: &plan.revision,
            filename,
            pinned_sha256: None,
            not_found_hint,
        };
        let got = hub::get(&plan.http, &plan.hub, &file)?;
        report_file(&what, filename, &got);
        Ok(got)
    };
    let config = get("config.json", &hint)?;
    let found = weights::fetch(&|f| get(f, ""), &what, &hint)?;
    eprintln!("{}", found.summary);
    let tokenizer = get("tokenizer.json", &hint)?;

    // Everything is in the cache: only now does the model folder change.
    if let Some(job) = &found.convert {
        let how = match convert::ensure(job, &found.source, &dir)? {
            convert::Outcome::Converted { tensors, seconds } => {
                format!("converted {tensors} tensors in {seconds:.1} s (nothing executed)")
            }
            convert::Outcome::AlreadyDone => {
                "already converted from the same files; not converting again".to_string()
            }
        };
        eprintln!(
            "{what}: {} in {}: {how}",
            convert::outputs(job).join(", "),
            dir.display()
        );
    }
    if found.layout == weights::Layout::Sharded {
        convert::clear_single(&dir)?;
    }
    let mut links = vec![
        ("config.json".to_string(), config.path),
        ("tokenizer.json".to_string(), tokenizer.path),
    ];
    links.extend(found.links);
    for (name, target) in links {
        let target = absolute(&target)?;
        if files::link_or_copy(&target, &dir.join(&name))? {
            eprintln!(
                "note: symlinks are not available; copied {name} into {}",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// One line on stderr for a file [`hub::get`] made present.
fn report_file(what: &str, filename: &str, got: &hub::Got) {
    let how = match got.source {
        Source::Downloaded { resumed_from: 0 } => "downloaded".to_string(),
        Source::Downloaded { resumed_from } => {
            format!("resumed at {}", spedec_report::format_bytes(resumed_from))
        }
        Source::Cached => "cached".to_string(),
        Source::CachedOffline => "cached, hub not asked".to_string(),
    };
    // Cached blobs are trusted, as the other HF tools do.
    let verified = got.sha256.is_some() && matches!(got.source, Source::Downloaded { .. });
    let check = if verified { ", sha256 ok" } else { "" };
    eprintln!(
        "{what} ({}): {filename} {} ({how}{check})",
        &got.commit[..got.commit.len().min(10)],
        spedec_report::format_bytes(got.size)
    );
}

/// Whether `dir` holds what a run loads: config.json, tokenizer.json and safetensors weights
/// (one `model.safetensors`, or a shard index whose shards the loader then checks).
pub fn has_model_files(dir: &Path) -> bool {
    ["config.json", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
        && (dir.join(weights::SINGLE).is_file() || dir.join(weights::SHARD_INDEX).is_file())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}
