//! Speculative perplexity equals the target's.

use spedec_sampling::Rng;
use spedec_speculative::{token_nll, Lm, NllTotals, Sampler};

use crate::common::{models, random};

fn rel_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 + 1e-6 * b.abs()
}

#[test]
fn spec_nll_equals_target_nll_on_random_distributions() {
    let mut rng = Rng::new(77);
    let samplers = [
        random(1.0, 0, 1.0),
        random(0.7, 20, 1.0),
        random(1.2, 0, 0.9),
        random(0.5, 5, 0.5),
    ];
    let mut checked = 0;
    for case in 0..400 {
        let vocab = 2 + (rng.next_u64() % 3000) as usize;
        let scale = [0.5, 3.0, 12.0][case % 3];
        let row = |rng: &mut Rng| -> Vec<f32> {
            (0..vocab)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * scale) as f32)
                .collect()
        };
        let t = row(&mut rng);
        let d = row(&mut rng);
        let token = (rng.next_u64() % vocab as u64) as u32;
        for s in &samplers {
            let nll = token_nll(&t, &d, token, s).unwrap();
            assert!(
                rel_close(nll.spec, nll.target),
                "case {case}: spec {} target {}",
                nll.spec,
                nll.target
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 1600);
}

#[test]
fn spec_perplexity_of_a_text_matches_the_target() {
    let mut m = models(50, 3.0);
    let text: Vec<u32> = (0..200u32).map(|i| (i * 7 + i * i) % 50).collect();
    let t = m.target.forward(&text).unwrap();
    let d = m.unrelated.forward(&text).unwrap();
    let mut tot = NllTotals::default();
    for i in 0..text.len() - 1 {
        let s = Sampler::Random(Default::default());
        tot.add(token_nll(t.row(i), d.row(i), text[i + 1], &s).unwrap());
    }
    let ppl = tot.perplexities().unwrap();
    println!(
        "text ppl: target {:.6} draft {:.6} spec {:.6}",
        ppl.target, ppl.draft, ppl.spec
    );
    assert!(rel_close(ppl.spec, ppl.target));
    assert!((ppl.draft - ppl.target).abs() > 1.0);
}
