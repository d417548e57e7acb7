//! User errors come back as clear `Err`s, never panics.

use spedec_speculative::{
    generate_autoregressive, generate_speculative, GenConfig, Lm, Logits, Sampler, SamplingParams,
};

use crate::common::{models, HashLm};

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn draft_with_a_different_vocabulary_is_refused() {
    let mut target = HashLm::new(1, 6, 2.0);
    let mut draft = HashLm::new(2, 7, 2.0);
    let e = err_text(generate_speculative(
        &mut target,
        &mut draft,
        &[1, 2],
        &GenConfig::default(),
    ));
    assert!(
        e.contains("vocabulary") && e.contains('7') && e.contains('6'),
        "{e}"
    );
}

#[test]
fn bad_prompts_and_configs_are_refused() {
    let m = models(5, 2.0);
    let (mut t, mut d) = (m.target.clone(), m.same.clone());
    let cfg = GenConfig::default();
    let e = err_text(generate_speculative(&mut t, &mut d, &[], &cfg));
    assert!(e.contains("empty"), "{e}");
    let e = err_text(generate_autoregressive(&mut t, &[], &cfg));
    assert!(e.contains("empty"), "{e}");
    let e = err_text(generate_speculative(&mut t, &mut d, &[1, 9], &cfg));
    assert!(e.contains("id 9"), "{e}");
    let e = err_text(generate_speculative(
        &mut t,
        &mut d,
        &[1],
        &GenConfig { gamma: 0, ..cfg },
    ));
    assert!(e.contains("gamma"), "{e}");
    let bad = Sampler::Random(SamplingParams {
        temperature: -1.0,
        top_k: 0,
        top_p: 1.0,
    });
    let e = err_text(generate_speculative(
        &mut t,
        &mut d,
        &[1],
        &GenConfig {
            sampler: bad,
            ..cfg
        },
    ));
    assert!(e.contains("temperature"), "{e}");
    let bad = Sampler::Random(SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.0,
    });
    let e = err_text(generate_autoregressive(
        &mut t,
        &[1],
        &GenConfig {
            sampler: bad,
            ..cfg
        },
    ));
    assert!(e.contains("top_p"), "{e}");
    let mut short = m.target.clone().with_max_len(3);
    let e = err_text(generate_autoregressive(&mut short, &[1, 2, 3, 4], &cfg));
    assert!(e.contains("context"), "{e}");
    let mut short_draft = m.same.clone().with_max_len(2);
    let e = err_text(generate_speculative(
        &mut t,
        &mut short_draft,
        &[1, 2, 3],
        &cfg,
    ));
    assert!(e.contains("draft") && e.contains("context"), "{e}");
}

/// A model that fails on its n-th forward call, or returns logits of the wrong shape.
struct Broken {
    inner: HashLm,
    fail_at: usize,
    wrong_shape: bool,
    calls: usize,
}

impl Lm for Broken {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_len(&self) -> usize {
        self.inner.max_len()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn forward(&mut self, tokens: &[u32]) -> anyhow::Result<Logits> {
        self.calls += 1;
        anyhow::ensure!(self.calls != self.fail_at, "device lost");
        let l = self.inner.forward(tokens)?;
        if self.wrong_shape {
            return Ok(Logits::new(
                l.as_slice()[..l.vocab()].to_vec(),
                1,
                l.vocab(),
            ));
        }
        Ok(l)
    }
    fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        self.inner.truncate(len)
    }
}

#[test]
fn model_failures_propagate_with_context() {
    let m = models(5, 2.0);
    for fail_at in 1..4 {
        let mut target = Broken {
            inner: m.target.clone(),
            fail_at,
            wrong_shape: false,
            calls: 0,
        };
        let mut draft = m.unrelated.clone();
        let e = err_text(generate_speculative(
            &mut target,
            &mut draft,
            &[1, 2],
            &GenConfig::default(),
        ));
        assert!(
            e.contains("device lost") && e.contains("target forward"),
            "{e}"
        );
        let mut draft = Broken {
            inner: m.unrelated.clone(),
            fail_at,
            wrong_shape: false,
            calls: 0,
        };
        let mut target = m.target.clone();
        let e = err_text(generate_speculative(
            &mut target,
            &mut draft,
            &[1, 2],
            &GenConfig::default(),
        ));
        assert!(
            e.contains("device lost") && e.contains("draft forward"),
            "{e}"
        );
    }
    let mut target = Broken {
        inner: m.target.clone(),
        fail_at: 0,
        wrong_shape: true,
        calls: 0,
    };
    let e = err_text(generate_autoregressive(
        &mut target,
        &[1, 2],
        &GenConfig::default(),
    ));
    assert!(e.contains("shape"), "{e}");
}
