#!/usr/bin/env python3
"""Generate HF transformers "golden" logits for tiny random GPT-NeoX models.

Usage (from the repository root):

    /work/venv-golden/bin/python scripts/make_golden.py [--out data/fixtures/golden]

Needs torch, transformers, safetensors and numpy.  The Rust tests only read the
files this script writes; they never need torch.

For every model in MODELS and every weight dtype in {f32, f16, bf16} it writes
<out>/<model>-<dtype>/ with

  config.json        written by `save_pretrained` of the installed transformers
                     (for parallel-f16 rewritten in the on-hub Pythia key style)
  model.safetensors  the weights in that dtype, HF tensor names
                     (parallel-f32 also carries the per-layer non-parameter
                     buffers old Pythia checkpoints hold: attention.bias,
                     attention.masked_bias, attention.rotary_emb.inv_freq)
  golden.safetensors input_ids (I64, [T]) and logits (F32, [T, vocab]) from an
                     HF eager-attention float32 forward on exactly the stored
                     weights (f16/bf16 weights are loaded back and upcast)

plus <out>/manifest.json.  Each folder is also checked against an independent
numpy (float64) forward that reads the safetensors and config.json directly.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

SEED = 20240611
SEQ_LEN = 24
VOCAB = 1000
ZERO_ID_POS = 9  # position where token id 0 is forced into the input

# Random-init scales (see the module docstring / README).
INIT_RANGE = 0.12  # std of all weight matrices and the embeddings
LN_WEIGHT_STD = 0.1  # LayerNorm weight = 1 + LN_WEIGHT_STD * N(0, 1)
LN_BIAS_STD = 0.1  # LayerNorm bias = LN_BIAS_STD * N(0, 1)
LINEAR_BIAS_STD = 0.05  # every nn.Linear bias = LINEAR_BIAS_STD * N(0, 1)

MODELS = {
    # Pythia-like: parallel residual, partial rotary (16 of 64 head dims).
    "parallel": dict(
        hidden_size=128,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=512,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        use_parallel_residual=True,
        tie_word_embeddings=False,
    ),
    # Sequential residual, full rotary, odd head count (3 heads of 32).
    "sequential": dict(
        hidden_size=96,
        num_attention_heads=3,
        num_hidden_layers=3,
        intermediate_size=384,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        rotary_pct=1.0,
        rotary_emb_base=10000,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        use_parallel_residual=False,
        tie_word_embeddings=False,
    ),
}

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TORCH_DTYPE_NAME = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}

# Folders that get extra treatment.
PYTHIA_STYLE_CONFIG = "parallel-f16"
LEGACY_BUFFERS = "parallel-f32"


# --------------------------------------------------------------------------
# Model construction
# --------------------------------------------------------------------------


def make_config(spec: dict) -> GPTNeoXConfig:
    spec = dict(spec)
    rotary_pct = spec.pop("rotary_pct")
    base = spec.pop("rotary_emb_base")
    cfg = GPTNeoXConfig(
        **spec,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": base,
            "partial_rotary_factor": rotary_pct,
        },
        initializer_range=INIT_RANGE,
        bos_token_id=0,
        eos_token_id=0,  # as in the Pythia configs
    )
    return cfg


def build_model(cfg: GPTNeoXConfig, seed: int) -> GPTNeoXForCausalLM:
    """A float32 model whose every parameter is drawn from a seeded generator."""
    model = GPTNeoXForCausalLM._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Iterate in the (deterministic) registration order.
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "layernorm" in name or "layer_norm" in name:
                if name.endswith(".weight"):
                    p.copy_(1.0 + LN_WEIGHT_STD * noise)
                else:
                    p.copy_(LN_BIAS_STD * noise)
            elif name.endswith(".bias"):
                p.copy_(LINEAR_BIAS_STD * noise)
            else:
                p.copy_(INIT_RANGE * noise)
    model.eval()
    return model


def make_input_ids(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (SEQ_LEN,), generator=gen, dtype=torch.int64)
    ids[ZERO_ID_POS] = 0  # token 0 (Pythia's bos/eos) somewhere in the middle
    ids[-1] = VOCAB - 1  # and the largest id at the end
    return ids


# --------------------------------------------------------------------------
# Writing a folder
# --------------------------------------------------------------------------


def pythia_style_config(cfg: GPTNeoXConfig, dtype_key: str) -> dict:
    """The key set of EleutherAI/pythia-* config.json on the hub."""
    rope = cfg.rope_parameters
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": cfg.hidden_act,
        "hidden_size": cfg.hidden_size,
        "initializer_range": cfg.initializer_range,
        "intermediate_size": cfg.intermediate_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "model_type": "gpt_neox",
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "rotary_emb_base": rope["rope_theta"],
        "rotary_pct": rope["partial_rotary_factor"],
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": TORCH_DTYPE_NAME[dtype_key],
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_parallel_residual": cfg.use_parallel_residual,
        "vocab_size": cfg.vocab_size,
    }


def legacy_buffers(cfg: GPTNeoXConfig) -> dict[str, torch.Tensor]:
    """Non-parameter buffers found in real (older) Pythia checkpoints."""
    n = cfg.max_position_embeddings
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    rot = int(head_dim * cfg.rope_parameters["partial_rotary_factor"])
    base = cfg.rope_parameters["rope_theta"]
    inv_freq = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    out = {}
    for i in range(cfg.num_hidden_layers):
        pre = f"gpt_neox.layers.{i}.attention."
        out[pre + "bias"] = torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n)
        out[pre + "masked_bias"] = torch.tensor(-1e9, dtype=torch.float32)
        out[pre + "rotary_emb.inv_freq"] = inv_freq.clone()
    return out


def write_folder(model32, cfg, dtype_key, folder) -> dict[str, torch.Tensor]:
    """Write config.json + model.safetensors; return the stored tensors."""
    os.makedirs(folder, exist_ok=True)
    cast = copy.deepcopy(model32).to(DTYPES[dtype_key])
    with tempfile.TemporaryDirectory() as tmp:
        cast.save_pretrained(tmp)
        shutil.copyfile(os.path.join(tmp, "config.json"), os.path.join(folder, "config.json"))
        from safetensors.torch import load_file

        hf_saved = load_file(os.path.join(tmp, "model.safetensors"))

    name = os.path.basename(folder)
    if name == PYTHIA_STYLE_CONFIG:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(pythia_style_config(cfg, dtype_key), f, indent=2)
            f.write("\n")

    # The HF-saved names must be the classic checkpoint names.
    expected = {"gpt_neox.embed_in.weight", "gpt_neox.final_layer_norm.weight",
                "gpt_neox.final_layer_norm.bias", "embed_out.weight"}
    missing = expected - set(hf_saved)
    assert not missing, f"save_pretrained did not write {missing}: {sorted(hf_saved)}"
    for t in hf_saved.values():
        assert t.dtype == DTYPES[dtype_key], t.dtype

    tensors = {k: v.contiguous() for k, v in sorted(hf_saved.items())}
    if name == LEGACY_BUFFERS:
        tensors.update(legacy_buffers(cfg))
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    for fn in ("config.json", "model.safetensors"):
        os.chmod(os.path.join(folder, fn), 0o644)
    return hf_saved


# --------------------------------------------------------------------------
# HF forward passes
# --------------------------------------------------------------------------


def load_back_f32(folder, hf_saved) -> GPTNeoXForCausalLM:
    """Load the folder with HF, upcast to float32, and check nothing was re-initialised."""
    model, info = GPTNeoXForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    assert not info["missing_keys"], info
    assert not info["mismatched_keys"], info
    sd = model.state_dict()
    for k, v in hf_saved.items():
        kk = "lm_head.weight" if k == "embed_out.weight" else k
        assert torch.equal(sd[kk], v.to(torch.float32)), f"{folder}: {k} differs after reload"
    return model, info


def hf_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids[None, :], use_cache=False).logits[0].float()


def hf_incremental_logits(model, ids) -> torch.Tensor:
    rows = []
    cache = None
    with torch.no_grad():
        for t in range(ids.shape[0]):
            step = ids[None, t : t + 1]
            try:
                out = model(step, cache=cache, use_cache=True)
            except TypeError:  # transformers < 5.x keyword name
                out = model(step, past_key_values=cache, use_cache=True)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = out.past_key_values
            rows.append(out.logits[0, -1].float())
    return torch.stack(rows)


# --------------------------------------------------------------------------
# Independent numpy reference (reads the files, not the torch model)
# --------------------------------------------------------------------------


def read_safetensors_np(path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader; widens f16/bf16 to float64."""
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    body = raw[8 + hlen :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        buf = body[lo:hi]
        shape = meta["shape"]
        dt = meta["dtype"]
        if dt == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2")
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt == "I64":
            a = np.frombuffer(buf, dtype="<i8")
        elif dt == "BOOL":
            a = np.frombuffer(buf, dtype=np.uint8).astype(bool)
        else:
            raise ValueError(f"unhandled dtype {dt}")
        a = a.reshape(shape)
        out[name] = a.astype(np.float64) if a.dtype.kind == "f" else a
    return out


def read_config_np(path) -> dict:
    """Accept both the transformers-5 and the on-hub Pythia key styles."""
    with open(path) as f:
        c = json.load(f)
    if "rope_parameters" in c:
        rotary_pct = c["rope_parameters"].get("partial_rotary_factor", 1.0)
        base = c["rope_parameters"]["rope_theta"]
    else:
        rotary_pct = c["rotary_pct"]
        base = c["rotary_emb_base"]
    return dict(
        hidden=c["hidden_size"],
        heads=c["num_attention_heads"],
        layers=c["num_hidden_layers"],
        eps=c["layer_norm_eps"],
        parallel=c["use_parallel_residual"],
        rotary_pct=rotary_pct,
        base=float(base),
    )


_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_forward(folder, ids: np.ndarray) -> np.ndarray:
    c = read_config_np(os.path.join(folder, "config.json"))
    W = read_safetensors_np(os.path.join(folder, "model.safetensors"))
    T = ids.shape[0]
    H = c["heads"]
    hd = c["hidden"] // H
    rot = int(hd * c["rotary_pct"])
    eps = c["eps"]

    # Rotary tables: inv_freq_i = base^(-2i/rot), angle = pos * inv_freq,
    # duplicated to [f0..f_{rot/2-1}, f0..f_{rot/2-1}] (rotate-half pairing i <-> i + rot/2).
    inv_freq = c["base"] ** (-np.arange(0, rot, 2, dtype=np.float64) / rot)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]  # [T, 1, rot]
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]

    def rope(x):  # x: [T, H, hd]
        xr, xp = x[..., :rot], x[..., rot:]
        half = rot // 2
        rh = np.concatenate([-xr[..., half:], xr[..., :half]], -1)
        return np.concatenate([xr * cos + rh * sin, xp], -1)

    causal = np.tril(np.ones((T, T), dtype=bool))

    def attention(x, p):
        qkv = x @ W[p + "query_key_value.weight"].T + W[p + "query_key_value.bias"]
        qkv = qkv.reshape(T, H, 3, hd)  # per head: [q | k | v], each hd wide
        q, k, v = rope(qkv[:, :, 0]), rope(qkv[:, :, 1]), qkv[:, :, 2]
        s = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        s = np.where(causal[None], s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", s, v).reshape(T, H * hd)
        return o @ W[p + "dense.weight"].T + W[p + "dense.bias"]

    def mlp(x, p):
        h = np_gelu(x @ W[p + "dense_h_to_4h.weight"].T + W[p + "dense_h_to_4h.bias"])
        return h @ W[p + "dense_4h_to_h.weight"].T + W[p + "dense_4h_to_h.bias"]

    x = W["gpt_neox.embed_in.weight"][ids]
    for i in range(c["layers"]):
        p = f"gpt_neox.layers.{i}."
        ln1 = np_layer_norm(x, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
        a = attention(ln1, p + "attention.")
        if c["parallel"]:
            ln2 = np_layer_norm(x, W[p + "post_attention_layernorm.weight"],
                                W[p + "post_attention_layernorm.bias"], eps)
            x = x + a + mlp(ln2, p + "mlp.")
        else:
            x = x + a
            ln2 = np_layer_norm(x, W[p + "post_attention_layernorm.weight"],
                                W[p + "post_attention_layernorm.bias"], eps)
            x = x + mlp(ln2, p + "mlp.")
    x = np_layer_norm(x, W["gpt_neox.final_layer_norm.weight"], W["gpt_neox.final_layer_norm.bias"], eps)
    return x @ W["embed_out.weight"].T


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/fixtures/golden")
    args = ap.parse_args()

    torch.manual_seed(SEED)  # nothing should depend on it, but be safe
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    manifest = {
        "description": "HF transformers golden logits for tiny random GPT-NeoX models "
                       "(eager attention, float32 forward on the stored weights)",
        "command": "python scripts/make_golden.py",
        "seed": SEED,
        "seq_len": SEQ_LEN,
        "init": {
            "initializer_range": INIT_RANGE,
            "layernorm_weight": f"1 + {LN_WEIGHT_STD} * N(0,1)",
            "layernorm_bias": f"{LN_BIAS_STD} * N(0,1)",
            "linear_bias": f"{LINEAR_BIAS_STD} * N(0,1)",
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "folders": {},
    }

    ok = True
    for mi, (mname, spec) in enumerate(MODELS.items()):
        cfg = make_config(spec)
        model32 = build_model(cfg, SEED + 1 + mi)
        ids = make_input_ids(SEED + 100 + mi)
        for dkey in DTYPES:
            name = f"{mname}-{dkey}"
            folder = os.path.join(args.out, name)
            hf_saved = write_folder(model32, cfg, dkey, folder)
            model, info = load_back_f32(folder, hf_saved)

            logits = hf_logits(model, ids)
            assert logits.shape == (SEQ_LEN, VOCAB)
            inc = hf_incremental_logits(model, ids)
            inc_diff = (inc - logits).abs().max().item()

            golden = {"input_ids": ids.clone().contiguous(), "logits": logits.contiguous()}
            gpath = os.path.join(folder, "golden.safetensors")
            save_file(golden, gpath, metadata={"format": "pt"})
            os.chmod(gpath, 0o644)

            ref = np_forward(folder, ids.numpy())
            np_diff = float(np.abs(ref - logits.double().numpy()).max())
            # Same HF code in float64: isolates semantic mismatches from f32
            # rounding (HF still does softmax and the cos/sin tables in f32).
            model64 = model.to(torch.float64)
            with torch.no_grad():
                l64 = model64(ids[None, :], use_cache=False).logits[0]
            np_diff64 = float(np.abs(ref - l64.numpy()).max())
            del model64, model
            std = logits.std().item()
            sizes = {fn: os.path.getsize(os.path.join(folder, fn))
                     for fn in ("config.json", "model.safetensors", "golden.safetensors")}
            with open(os.path.join(folder, "config.json")) as f:
                cfg_keys = sorted(json.load(f))
            print(f"{name:16s} logits std {std:.4f}  absmax {logits.abs().max().item():7.3f}  "
                  f"numpy-vs-HF {np_diff:.2e} (HF f64: {np_diff64:.1e})  prefill-vs-incremental {inc_diff:.2e}  "
                  f"unexpected-on-load {len(info['unexpected_keys'])}")
            if np_diff > 1e-4 or std < 0.1:
                ok = False
            manifest["folders"][name] = {
                "model": mname,
                "weight_dtype": dkey,
                "config_style": "pythia-hub" if name == PYTHIA_STYLE_CONFIG else "save_pretrained",
                "config_keys": cfg_keys,
                "legacy_buffers": name == LEGACY_BUFFERS,
                "T": SEQ_LEN,
                "vocab_size": VOCAB,
                "input_seed": SEED + 100 + mi,
                "weight_seed": SEED + 1 + mi,
                "logits_std": round(std, 6),
                "logits_absmax": round(logits.abs().max().item(), 6),
                "numpy_f64_vs_hf_max_abs_diff": np_diff,
                "numpy_f64_vs_hf_f64_max_abs_diff": np_diff64,
                "hf_prefill_vs_incremental_max_abs_diff": inc_diff,
                "bytes": sizes,
            }
        print(f"{mname}: input_ids {ids.tolist()}")

    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    if not ok:
        print("FAILED: numpy reference disagrees with HF or logits too flat", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
