#!/usr/bin/env python3
"""HF transformers reference for `spedec gpu-check --hf-dir DIR` (runs with no network).

Makes random-weight GPT-NeoX models with the exact Pythia-70m and Pythia-2.8b configs in fp16
(seeded; created directly on the device, so the 2.8b model takes seconds, not minutes), saves
each as a Hugging Face folder (config.json in Pythia's hub style, model.safetensors with the
parameters only, and a copy of data/fixtures/tokenizer/tokenizer.json), and measures on the
same device:

- logits of a fixed token sequence: fp32 forward (the reference spedec must match) and fp16
  forward (HF's own f16 error, for scale), saved as raw little-endian f32 [T, vocab];
- fp16 greedy decode speed: `generate` with the KV cache, warm-up then the median of repeats,
  CUDA-synchronised, in ms per new token (prefill included), plus the greedy tokens;
- assisted generation (`assistant_model=` the 70m draft, 4 draft tokens per step, constant
  schedule) in ms per new token.

Everything is described in DIR/reference.json (format in crates/check/src/sections/hf.rs).

    python3 scripts/hf_reference.py DIR                 # GPU, real Pythia shapes
    python3 scripts/hf_reference.py DIR --device cpu --small   # tiny shapes, a smoke test
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(REPO, "data", "fixtures", "tokenizer", "tokenizer.json")
PROMPT = "The history of the city begins in the early nineteenth century, when"
LOGITS_TEXT = (
    "In machine learning, a language model is a probability distribution over sequences of "
    "words. Given any sequence of words of length m, a language model assigns a probability "
    "to the whole sequence, and the model can be used to continue a text."
)

# name -> (hidden, layers, heads, intermediate); vocab 50304, 2048 positions, rotary 25 %.
PYTHIA = {
    "pythia-70m": (512, 6, 8, 2048),
    "pythia-2.8b": (2560, 32, 32, 10240),
}
SMALL = {
    "tiny-draft": (64, 2, 4, 256),
    "tiny-target": (128, 3, 4, 512),
}


def log(msg):
    print(f"[hf_reference {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def hub_config(hidden, layers, heads, inter, max_pos):
    """config.json as the Pythia checkpoints on the hub write it."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "vocab_size": 50304,
        "max_position_embeddings": max_pos,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "initializer_range": 0.02,
        "torch_dtype": "float16",
        "use_cache": True,
    }


def make_model(torch, transformers, cfg_dict, device, seed):
    """A GPTNeoXForCausalLM in fp16 on `device` with seeded weights: matrices N(0, 0.02)
    (embed_out N(0, 0.05)), LayerNorm weight 1 + 0.1·N, LayerNorm and linear biases 0.02·N."""
    kw = {k: v for k, v in cfg_dict.items() if k not in ("architectures", "model_type", "torch_dtype")}
    cfg = transformers.GPTNeoXConfig(**kw)
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device(device):
            model = transformers.GPTNeoXForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model = model.to(device=device, dtype=torch.float16).eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
            if "layernorm" in name or "layer_norm" in name:
                value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.02 * noise
            elif name.endswith("bias"):
                value = 0.02 * noise
            elif "embed_out" in name or "lm_head" in name:
                value = 0.05 * noise  # logits of std ≈ 1–2.5, so comparisons are sensitive
            else:
                value = 0.02 * noise
            p.copy_(value.to(p.dtype))
    # Rotary sanity: the model must use 25 % of each head, base 10000, as Pythia does.
    rope = getattr(model.config, "rope_parameters", None) or {}
    pct = rope.get("partial_rotary_factor", getattr(model.config, "rotary_pct", None))
    if pct is not None and abs(pct - 0.25) > 1e-9:
        raise SystemExit(f"unexpected rotary fraction {pct}")
    gc = model.generation_config
    gc.eos_token_id = None  # random weights: never stop early
    gc.pad_token_id = 0
    gc.do_sample = False
    return model


def save_folder(torch, model, cfg_dict, folder):
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_dict, f, indent=2)
    tensors = {}
    for name, p in model.named_parameters():
        # transformers 5 calls the output projection lm_head in memory; files say embed_out.
        if name == "lm_head.weight":
            name = "embed_out.weight"
        tensors[name] = p.detach().to("cpu").contiguous()
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(TOKENIZER, os.path.join(folder, "tokenizer.json"))


def tokenize(text):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(TOKENIZER).encode(text).ids


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def logits_of(torch, model, tokens, device):
    with torch.no_grad():
        ids = torch.tensor([tokens], device=device)
        out = model(input_ids=ids).logits[0].float().cpu().numpy()
    return out.astype("<f4")


def time_generate(torch, model, prompt, device, new, warmup, repeats, **extra):
    """Median / min / max ms per new token of greedy generate (prefill included)."""
    ids = torch.tensor([prompt], device=device)
    per_token, tokens = [], []
    for i in range(warmup + repeats):
        sync(torch, device)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                do_sample=False,
                use_cache=True,
                **extra,
            )
        sync(torch, device)
        dt = time.perf_counter() - t0
        tokens = out[0, ids.shape[1]:].tolist()
        if i >= warmup:
            per_token.append(dt * 1e3 / max(len(tokens), 1))
    return {
        "median": statistics.median(per_token),
        "min": min(per_token),
        "max": max(per_token),
        "n": len(per_token),
    }, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output folder (HF model folders + reference.json)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes instead of Pythia's (smoke test)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens per timed generate [64; 8 with --small]")
    ap.add_argument("--repeats", type=int, default=None, help="timed generate runs [3; 1 with --small]")
    ap.add_argument("--logit-tokens", type=int, default=32, help="length of the logits sequence")
    ap.add_argument("--skip-assisted", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    import torch
    import transformers

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("hf_reference: CUDA requested but torch sees no GPU")
    shapes = SMALL if args.small else PYTHIA
    new = args.new_tokens or (8 if args.small else 64)
    repeats = args.repeats or (1 if args.small else 3)
    max_pos = 256 if args.small else 2048
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, device {dev_name}")

    os.makedirs(args.out, exist_ok=True)
    tokens = tokenize(LOGITS_TEXT)
    while len(tokens) < args.logit_tokens:
        tokens = tokens + tokens
    tokens = tokens[: args.logit_tokens]
    prompt = tokenize(PROMPT)

    reference = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": dev_name,
        "dtype": "float16",
        "seed": args.seed,
        "tokens": tokens,
        "prompt_tokens": prompt,
        "models": [],
        "assisted": None,
    }
    models = {}
    for role, (name, (hidden, layers, heads, inter)) in zip(("draft", "target"), shapes.items()):
        t0 = time.perf_counter()
        cfg = hub_config(hidden, layers, heads, inter, max_pos)
        model = make_model(torch, transformers, cfg, device, args.seed + len(models))
        log(f"{name}: created on {device} in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        save_folder(torch, model, cfg, os.path.join(args.out, name))
        log(f"{name}: saved in {time.perf_counter() - t0:.1f} s")

        l16 = logits_of(torch, model, tokens, device)
        model.float()
        l32 = logits_of(torch, model, tokens, device)
        model.half()
        f16_name, f32_name = f"{name}.fp16.bin", f"{name}.fp32.bin"
        l16.tofile(os.path.join(args.out, f16_name))
        l32.tofile(os.path.join(args.out, f32_name))
        log(f"{name}: logits [{l32.shape[0]}, {l32.shape[1]}], fp16 vs fp32 max |diff| "
            f"{float(abs(l16 - l32).max()):.3e}, |logits| max {float(abs(l32).max()):.2f}")

        timing, greedy = time_generate(torch, model, prompt, device, new, 1, repeats)
        log(f"{name}: HF fp16 greedy generate {timing['median']:.3f} ms/token "
            f"[{timing['min']:.3f}–{timing['max']:.3f}]")
        reference["models"].append({
            "role": role,
            "name": name,
            "dir": name,
            "vocab": int(l32.shape[1]),
            "rows": int(l32.shape[0]),
            "logits_fp32": f32_name,
            "logits_fp16": f16_name,
            "decode_ms_per_token": timing,
            "new_tokens": new,
            "greedy_tokens": greedy,
        })
        models[role] = model
        with open(os.path.join(args.out, "reference.json"), "w") as f:
            json.dump(reference, f, indent=1)

    if not args.skip_assisted:
        try:
            draft, target = models["draft"], models["target"]
            dgc = draft.generation_config
            dgc.num_assistant_tokens = 4
            dgc.num_assistant_tokens_schedule = "constant"
            dgc.assistant_confidence_threshold = 0.0
            timing, _ = time_generate(torch, target, prompt, device, new, 1, repeats, assistant_model=draft)
            reference["assisted"] = {
                "target": list(shapes)[1],
                "draft": list(shapes)[0],
                "ms_per_token": timing,
                "new_tokens": new,
                "num_assistant_tokens": 4,
            }
            log(f"assisted generation {timing['median']:.3f} ms/token")
        except Exception as e:  # reported, not fatal: the logits are the main product
            reference["assisted"] = {"error": f"{type(e).__name__}: {e}"}
            log(f"assisted generation failed: {e}")
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    log(f"done in {time.perf_counter() - t_start:.1f} s: {os.path.join(args.out, 'reference.json')}")


if __name__ == "__main__":
    sys.exit(main())
