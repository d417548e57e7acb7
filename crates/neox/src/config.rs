//! Model hyper-parameters read from a Hugging Face `config.json` (GPT-NeoX / Pythia).
//!
//! Both the on-hub Pythia keys (`rotary_pct`, `rotary_emb_base`, `torch_dtype`) and the
//! transformers-5 keys (`rope_parameters {partial_rotary_factor, rope_theta}`, `dtype`) are
//! accepted. Every value is validated so the forward pass can index without checks.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// GPT-NeoX hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Width of the residual stream `d`.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Attention heads; `head_dim = hidden_size / num_heads`.
    pub num_heads: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Rows of `embed_in` / `embed_out` (padded vocabulary, 50304 for Pythia).
    pub vocab_size: usize,
    /// Longest sequence the model was trained for (2048 for Pythia).
    pub max_position_embeddings: usize,
    /// Fraction of each head's dims that get rotary embeddings (0.25 for Pythia).
    pub rotary_pct: f64,
    /// Rotary base θ (10000 for Pythia).
    pub rotary_base: f64,
    /// `x + attn(ln1(x)) + mlp(ln2(x))` when true, sequential residual otherwise.
    pub use_parallel_residual: bool,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Whether the QKV and dense projections carry biases (transformers-5 `attention_bias`;
    /// Pythia checkpoints always do).
    pub attention_bias: bool,
}

impl Config {
    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Number of leading dims of each head that are rotated (even).
    pub fn rotary_dims(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json_str(&text)
            .with_context(|| format!("invalid model config {}", path.display()))
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text).context("config is not valid JSON")?;
        let obj = json.as_object().context("config must be a JSON object")?;
        if let Some(model_type) = obj.get("model_type").and_then(Value::as_str) {
            if model_type != "gpt_neox" {
                bail!("model_type is {model_type:?}, expected \"gpt_neox\" (a GPT-NeoX / Pythia model)");
            }
        }
        let rope = obj.get("rope_parameters").and_then(Value::as_object);
        let rope_value = |key: &str| rope.and_then(|r| r.get(key)).and_then(Value::as_f64);
        let rotary_pct = match obj.get("rotary_pct").and_then(Value::as_f64) {
            Some(v) => v,
            None => rope_value("partial_rotary_factor").context(
                "missing key \"rotary_pct\" (or \"rope_parameters.partial_rotary_factor\")",
            )?,
        };
        let rotary_base = match obj.get("rotary_emb_base").and_then(Value::as_f64) {
            Some(v) => v,
            None => rope_value("rope_theta").unwrap_or(10000.0),
        };
        let config = Config {
            hidden_size: usize_key(obj, "hidden_size")?,
            num_layers: usize_key(obj, "num_hidden_layers")?,
            num_heads: usize_key(obj, "num_attention_heads")?,
            intermediate_size: usize_key(obj, "intermediate_size")?,
            vocab_size: usize_key(obj, "vocab_size")?,
            max_position_embeddings: usize_key(obj, "max_position_embeddings")?,
            rotary_pct,
            rotary_base,
            use_parallel_residual: obj
                .get("use_parallel_residual")
                .map(|v| {
                    v.as_bool()
                        .context("\"use_parallel_residual\" must be true or false")
                })
                .transpose()?
                .unwrap_or(true),
            layer_norm_eps: obj
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
            attention_bias: obj
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        };
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "gelu" {
                bail!(
                    "hidden_act is {act:?}; only \"gelu\" (exact erf, as Pythia uses) is supported"
                );
            }
        }
        if obj.get("tie_word_embeddings").and_then(Value::as_bool) == Some(true) {
            bail!("tie_word_embeddings = true is not supported (Pythia has a separate embed_out)");
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            bail!(
                "num_attention_heads ({}) must divide hidden_size ({})",
                self.num_heads,
                self.hidden_size
            );
        }
        if !(self.rotary_pct > 0.0 && self.rotary_pct <= 1.0) {
            bail!("rotary_pct must be in (0, 1], got {}", self.rotary_pct);
        }
        let rot = self.rotary_dims();
        if rot == 0 || !rot.is_multiple_of(2) {
            bail!(
                "rotary dims = head_dim {} × rotary_pct {} = {rot} must be even and positive",
                self.head_dim(),
                self.rotary_pct
            );
        }
        if !(self.rotary_base.is_finite() && self.rotary_base > 1.0) {
            bail!(
                "rotary base must be a finite number > 1, got {}",
                self.rotary_base
            );
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            bail!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            );
        }
        if self.vocab_size > u32::MAX as usize {
            bail!("vocab_size {} does not fit token ids", self.vocab_size);
        }
        // Every buffer the weights need is sized from these numbers: their total must be
        // addressable (as f32) before anything is allocated from them. The KV cache, sized
        // from the asked-for context, is checked where it is allocated.
        let parameters = self.num_parameters_u128();
        if parameters.saturating_mul(4) > isize::MAX as u128 {
            bail!(
                "the config describes {parameters} parameters (hidden_size {}, \
                 intermediate_size {}, num_hidden_layers {}, vocab_size {}): more than this \
                 machine can address",
                self.hidden_size,
                self.intermediate_size,
                self.num_layers,
                self.vocab_size
            );
        }
        Ok(())
    }

    /// The exact hyper-parameters of a released Pythia model (`pythia-70m`, `pythia-2.8b`, …;
    /// a `-deduped` suffix is accepted and has the same shapes).
    pub fn pythia(name: &str) -> Result<Self> {
        let base = name.strip_suffix("-deduped").unwrap_or(name);
        let (hidden_size, num_layers, num_heads) = match base {
            "pythia-14m" => (128, 6, 4),
            "pythia-31m" => (256, 6, 8),
            "pythia-70m" => (512, 6, 8),
            "pythia-160m" => (768, 12, 12),
            "pythia-410m" => (1024, 24, 16),
            "pythia-1b" => (2048, 16, 8),
            "pythia-1.4b" => (2048, 24, 16),
            "pythia-2.8b" => (2560, 32, 32),
            "pythia-6.9b" => (4096, 32, 32),
            "pythia-12b" => (5120, 36, 40),
            _ => bail!(
                "unknown Pythia model {name:?}; expected one of pythia-14m, -31m, -70m, -160m, \
                 -410m, -1b, -1.4b, -2.8b, -6.9b, -12b (optionally with -deduped)"
            ),
        };
        Ok(Config {
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size: 4 * hidden_size,
            vocab_size: 50304,
            max_position_embeddings: 2048,
            rotary_pct: 0.25,
            rotary_base: 10000.0,
            use_parallel_residual: true,
            layer_norm_eps: 1e-5,
            attention_bias: true,
        })
    }

    /// A `config.json` in the on-hub Pythia style, for writing a model folder.
    pub fn to_json(&self, torch_dtype: &str) -> Value {
        serde_json::json!({
            "architectures": ["GPTNeoXForCausalLM"],
            "model_type": "gpt_neox",
            "bos_token_id": 0,
            "eos_token_id": 0,
            "hidden_act": "gelu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": self.layer_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "num_attention_heads": self.num_heads,
            "num_hidden_layers": self.num_layers,
            "rotary_emb_base": self.rotary_base,
            "rotary_pct": self.rotary_pct,
            "tie_word_embeddings": false,
            "torch_dtype": torch_dtype,
            "use_cache": true,
            "use_parallel_residual": self.use_parallel_residual,
            "vocab_size": self.vocab_size,
        })
    }

    /// [`num_parameters`](Self::num_parameters) without overflow (saturating at `u128::MAX`).
    fn num_parameters_u128(&self) -> u128 {
        let (d, i) = (self.hidden_size as u128, self.intermediate_size as u128);
        let attn_bias = if self.attention_bias { 4 * d } else { 0 };
        let per_layer = (4 * d)
            .saturating_add(d.saturating_mul(d).saturating_mul(4))
            .saturating_add(attn_bias)
            .saturating_add(d.saturating_mul(i).saturating_mul(2))
            .saturating_add(i + d);
        (2 * self.vocab_size as u128)
            .saturating_mul(d)
            .saturating_add((self.num_layers as u128).saturating_mul(per_layer))
            .saturating_add(2 * d)
    }

    /// Number of parameters, counting `embed_in` and `embed_out`.
    pub fn num_parameters(&self) -> usize {
        let d = self.hidden_size;
        let i = self.intermediate_size;
        let attn_bias = if self.attention_bias { 4 * d } else { 0 };
        let per_layer = 4 * d // two LayerNorms
            + 3 * d * d + d * d + attn_bias // fused QKV and dense
            + d * i + i + i * d + d; // MLP
        2 * self.vocab_size * d + self.num_layers * per_layer + 2 * d
    }
}

fn usize_key(obj: &serde_json::Map<String, Value>, key: &str) -> Result<usize> {
    let value = obj
        .get(key)
        .with_context(|| format!("missing key {key:?}"))?;
    let n = value
        .as_u64()
        .with_context(|| format!("key {key:?} must be a non-negative integer, got {value}"))?;
    usize::try_from(n).with_context(|| format!("key {key:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB_70M: &str = r#"{"architectures":["GPTNeoXForCausalLM"],"bos_token_id":0,"eos_token_id":0,
      "hidden_act":"gelu","hidden_size":512,"initializer_range":0.02,"intermediate_size":2048,
      "layer_norm_eps":1e-05,"max_position_embeddings":2048,"model_type":"gpt_neox",
      "num_attention_heads":8,"num_hidden_layers":6,"rotary_emb_base":10000,"rotary_pct":0.25,
      "tie_word_embeddings":false,"torch_dtype":"float16","use_cache":true,
      "use_parallel_residual":true,"vocab_size":50304}"#;

    #[test]
    fn hub_keys_match_the_pythia_preset() {
        let parsed = Config::from_json_str(HUB_70M).unwrap();
        assert_eq!(parsed, Config::pythia("pythia-70m").unwrap());
        assert_eq!(parsed.head_dim(), 64);
        assert_eq!(parsed.rotary_dims(), 16);
    }

    #[test]
    fn transformers5_keys_are_accepted() {
        let text = HUB_70M
            .replace(r#""rotary_emb_base":10000,"rotary_pct":0.25,"#, "")
            .replace(
                r#""torch_dtype":"float16""#,
                r#""dtype":"float16","rope_parameters":{"partial_rotary_factor":0.25,"rope_theta":10000.0,"rope_type":"default"}"#,
            );
        assert_eq!(
            Config::from_json_str(&text).unwrap(),
            Config::pythia("pythia-70m").unwrap()
        );
    }

    #[test]
    fn missing_key_is_named() {
        let text = HUB_70M.replace(r#""hidden_size":512,"#, "");
        let err = format!("{:#}", Config::from_json_str(&text).unwrap_err());
        assert!(err.contains("hidden_size"), "{err}");
    }

    #[test]
    fn heads_must_divide_hidden() {
        let text = HUB_70M.replace(r#""num_attention_heads":8"#, r#""num_attention_heads":7"#);
        let err = format!("{:#}", Config::from_json_str(&text).unwrap_err());
        assert!(err.contains("must divide hidden_size"), "{err}");
    }

    #[test]
    fn odd_rotary_dims_are_refused() {
        let text = HUB_70M.replace(r#""rotary_pct":0.25"#, r#""rotary_pct":0.3"#);
        let err = format!("{:#}", Config::from_json_str(&text).unwrap_err());
        assert!(err.contains("rotary dims"), "{err}");
    }

    #[test]
    fn sizes_are_checked_before_anything_is_allocated() {
        // A huge max_position_embeddings is a valid config: the KV cache is sized from the
        // context asked for (capped by default), not from this number.
        let text = HUB_70M.replace(
            r#""max_position_embeddings":2048"#,
            r#""max_position_embeddings":1000000000000"#,
        );
        let c = Config::from_json_str(&text).unwrap();
        assert_eq!(c.max_position_embeddings, 1_000_000_000_000);
        // Shapes whose weights could never be addressed are refused with the numbers.
        let text = HUB_70M.replace(r#""vocab_size":50304"#, r#""vocab_size":4000000000"#);
        let text = text.replace(r#""hidden_size":512"#, r#""hidden_size":4000000000"#);
        let text = text.replace(r#""num_attention_heads":8"#, r#""num_attention_heads":1"#);
        let err = format!("{:#}", Config::from_json_str(&text).unwrap_err());
        assert!(err.contains("more than this machine can address"), "{err}");
        assert!(err.contains("hidden_size 4000000000"), "{err}");
    }

    #[test]
    fn pythia_2_8b_parameter_count() {
        let c = Config::pythia("pythia-2.8b").unwrap();
        // 2,775,208,960 parameters in the released checkpoint.
        assert_eq!(c.num_parameters(), 2_775_208_960);
        assert_eq!(c.num_parameters_u128(), 2_775_208_960);
        assert!(Config::pythia("pythia-3b").is_err());
    }
}
