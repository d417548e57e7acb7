//! Test models and helpers: a hash-of-prefix language model, call logging, exact enumeration.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use spedec_sampling::{Rng, Sampler, SamplingError, SamplingParams};
use spedec_speculative::testing::Decisions;
use spedec_speculative::{Lm, Logits};

/// One call made on a logged model.
#[derive(Debug, Clone)]
pub enum Event {
    Forward {
        model: &'static str,
        before: Vec<u32>,
        fed: Vec<u32>,
    },
    Truncate {
        model: &'static str,
        after: Vec<u32>,
    },
}

pub type Log = Rc<RefCell<Vec<Event>>>;

/// A language model whose next-token logits are a fixed pseudo-random function of the whole
/// context: `Σ_c weight_c · (2·hash(seed_c, prefix, v) − 1)`. Its "cache" is its token list, so
/// a wrong cache shows up as wrong logits. Rows are pure functions of their prefix, so the
/// model is batch-invariant by construction.
#[derive(Debug, Clone)]
pub struct HashLm {
    vocab: usize,
    max_len: usize,
    components: Vec<(u64, f32)>,
    tokens: Vec<u32>,
    /// `hashes[i]` = hash of `tokens[..=i]`.
    hashes: Vec<u64>,
    log: Option<(Log, &'static str)>,
    /// Extra hashing rounds per forward call, whatever its row count: a fixed per-call cost,
    /// like a memory-bound model's (for tests of the automatic γ).
    call_cost: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn extend_hash(h: u64, token: u32) -> u64 {
    mix(h ^ (u64::from(token) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl HashLm {
    /// A model with one component: logits in [−sharpness, sharpness].
    pub fn new(seed: u64, vocab: usize, sharpness: f32) -> Self {
        Self::mixture(&[(seed, sharpness)], vocab)
    }

    /// Logits = Σ weight · (component with that seed).
    pub fn mixture(components: &[(u64, f32)], vocab: usize) -> Self {
        Self {
            vocab,
            max_len: 1 << 20,
            components: components.to_vec(),
            tokens: vec![],
            hashes: vec![],
            log: None,
            call_cost: 0,
        }
    }

    pub fn with_call_cost(mut self, rounds: u64) -> Self {
        self.call_cost = rounds;
        self
    }

    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    pub fn logged(mut self, log: &Log, name: &'static str) -> Self {
        self.log = Some((log.clone(), name));
        self
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn row(&self, h: u64) -> Vec<f32> {
        (0..self.vocab)
            .map(|v| {
                self.components
                    .iter()
                    .map(|&(seed, w)| {
                        let u = mix(h ^ mix(seed.wrapping_add(v as u64 + 1)));
                        w * ((u >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
                    })
                    .sum()
            })
            .collect()
    }

    /// Next-token logits after `prefix` (non-empty), computed from scratch.
    pub fn logits_after(&self, prefix: &[u32]) -> Vec<f32> {
        let h = prefix.iter().fold(0u64, |h, &t| extend_hash(h, t));
        self.row(h)
    }
}

impl Lm for HashLm {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_len(&self) -> usize {
        self.max_len
    }
    fn len(&self) -> usize {
        self.tokens.len()
    }
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        anyhow::ensure!(!tokens.is_empty(), "empty forward");
        anyhow::ensure!(
            self.tokens.len() + tokens.len() <= self.max_len,
            "context overflow"
        );
        anyhow::ensure!(
            tokens.iter().all(|&t| (t as usize) < self.vocab),
            "token out of range"
        );
        if let Some((log, model)) = &self.log {
            log.borrow_mut().push(Event::Forward {
                model,
                before: self.tokens.clone(),
                fed: tokens.to_vec(),
            });
        }
        let burn = (0..self.call_cost).fold(tokens.len() as u64, |h, i| mix(h ^ i));
        std::hint::black_box(burn);
        let mut data = Vec::with_capacity(tokens.len() * self.vocab);
        for &t in tokens {
            let h = extend_hash(self.hashes.last().copied().unwrap_or(0), t);
            self.tokens.push(t);
            self.hashes.push(h);
            data.extend(self.row(h));
        }
        Ok(Logits::new(data, tokens.len(), self.vocab))
    }
    fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        anyhow::ensure!(len <= self.tokens.len(), "truncate beyond length");
        self.tokens.truncate(len);
        self.hashes.truncate(len);
        if let Some((log, model)) = &self.log {
            log.borrow_mut().push(Event::Truncate {
                model,
                after: self.tokens.clone(),
            });
        }
        Ok(())
    }
}

/// Target, a related draft (target + noise), an unrelated draft, all with vocabulary `vocab`.
pub struct Models {
    pub target: HashLm,
    pub same: HashLm,
    pub related: HashLm,
    pub unrelated: HashLm,
}

pub fn models(vocab: usize, sharpness: f32) -> Models {
    let target = HashLm::new(11, vocab, sharpness);
    Models {
        same: target.clone(),
        related: HashLm::mixture(&[(11, sharpness), (23, 0.4 * sharpness)], vocab),
        unrelated: HashLm::new(37, vocab, sharpness),
        target,
    }
}

/// `count` prompts of length 1..=max_len with ids below `vocab`, fixed by `seed`.
pub fn prompts(count: usize, vocab: usize, max_len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let len = 1 + (rng.next_u64() % max_len as u64) as usize;
            (0..len)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

pub fn random(temperature: f32, top_k: usize, top_p: f32) -> Sampler {
    Sampler::Random(SamplingParams::new(temperature, top_k, top_p).unwrap())
}

/// The target's exact joint distribution of the first `len` new tokens after `prompt`.
pub fn exact_joint(
    model: &HashLm,
    prompt: &[u32],
    len: usize,
    sampler: &Sampler,
) -> HashMap<Vec<u32>, f64> {
    let mut out = HashMap::new();
    let mut stack = vec![(Vec::<u32>::new(), 1.0f64)];
    while let Some((seq, prob)) = stack.pop() {
        if seq.len() == len {
            out.insert(seq, prob);
            continue;
        }
        let ctx: Vec<u32> = prompt.iter().chain(&seq).copied().collect();
        let dist = sampler.distribution(&model.logits_after(&ctx)).unwrap();
        for (t, &p) in dist.iter().enumerate() {
            if p > 0.0 {
                let mut next = seq.clone();
                next.push(t as u32);
                stack.push((next, prob * p));
            }
        }
    }
    out
}

/// Total variation distance between two distributions over sequences.
pub fn total_variation(a: &HashMap<Vec<u32>, f64>, b: &HashMap<Vec<u32>, f64>) -> f64 {
    let mut keys: Vec<&Vec<u32>> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    0.5 * keys
        .iter()
        .map(|k| (a.get(*k).unwrap_or(&0.0) - b.get(*k).unwrap_or(&0.0)).abs())
        .sum::<f64>()
}

/// Replays a script of choices, then takes the first option at each new decision, recording
/// how many options each decision had and the probability of the path taken.
struct Branch {
    script: Vec<usize>,
    taken: Vec<usize>,
    options: Vec<usize>,
    weight: f64,
}

impl Branch {
    fn pick(&mut self, n: usize) -> usize {
        let k = self.script.get(self.taken.len()).copied().unwrap_or(0);
        self.taken.push(k);
        self.options.push(n);
        k
    }
}

impl Decisions for Branch {
    fn categorical(&mut self, dist: &[f64]) -> Result<u32, SamplingError> {
        let total: f64 = dist.iter().sum();
        let opts: Vec<(u32, f64)> = dist
            .iter()
            .enumerate()
            .filter(|(_, &p)| p > 0.0)
            .map(|(i, &p)| (i as u32, p / total))
            .collect();
        let k = self.pick(opts.len());
        self.weight *= opts[k].1;
        Ok(opts[k].0)
    }
    fn bernoulli(&mut self, prob: f64) -> bool {
        let prob = prob.clamp(0.0, 1.0);
        let opts: Vec<(bool, f64)> = [(true, prob), (false, 1.0 - prob)]
            .into_iter()
            .filter(|o| o.1 > 0.0)
            .collect();
        let k = self.pick(opts.len());
        self.weight *= opts[k].1;
        opts[k].0
    }
}

/// The exact output distribution of `run` over all its random decisions: every path through
/// the decisions is run once and weighed by its probability. Returns (distribution, paths).
pub fn enumerate_outputs(
    mut run: impl FnMut(&mut dyn Decisions) -> Vec<u32>,
) -> (HashMap<Vec<u32>, f64>, usize) {
    let mut out: HashMap<Vec<u32>, f64> = HashMap::new();
    let mut stack = vec![Vec::new()];
    let mut paths = 0;
    while let Some(script) = stack.pop() {
        let mut b = Branch {
            script,
            taken: vec![],
            options: vec![],
            weight: 1.0,
        };
        let tokens = run(&mut b);
        paths += 1;
        for d in b.script.len()..b.taken.len() {
            for alt in 1..b.options[d] {
                let mut s = b.taken[..d].to_vec();
                s.push(alt);
                stack.push(s);
            }
        }
        *out.entry(tokens).or_default() += b.weight;
    }
    (out, paths)
}
