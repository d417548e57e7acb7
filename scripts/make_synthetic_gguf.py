#!/usr/bin/env python3
"""Write GPT-NeoX (Pythia-shaped) GGUF files with RANDOM f16 weights for llama.cpp benchmarking.

Mirrors what llama.cpp's convert_hf_to_gguf.py (GPTNeoXModel, commit c392e509) would write for
EleutherAI/pythia-{70m,2.8b}, except that tensor values are random (std 0.02 normal, biases 0,
norm weights 1). Tensors are streamed to disk one at a time to keep memory low.

usage: scripts/make_synthetic_gguf.py {70m|2.8b|all} [outdir]   (default outdir target/gguf)
needs: pip install gguf numpy   (used for the llama.cpp comparison in results/, see
results/cpu-vs-llama-cpp-2026-11-28-amd-epyc.md and scripts/compare-llama-cpp.sh; none of
llama.cpp's code is in this repo)
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import gguf

TOKENIZER_JSON = Path(__file__).resolve().parent.parent / "data/fixtures/tokenizer/tokenizer.json"

CONFIGS = {
    "70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                intermediate_size=2048, size_label="70M", seed=70),
    "2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32,
                 intermediate_size=10240, size_label="2.8B", seed=2800),
}
COMMON = dict(rotary_pct=0.25, rotary_emb_base=10000, vocab_size=50304,
              max_position_embeddings=2048, layer_norm_eps=1e-5, use_parallel_residual=True,
              bos_token_id=0, eos_token_id=0)

# tokenizer.ggml.pre: convert_hf_to_gguf.get_vocab_base_pre() hashes the token ids of `chktxt`.
# For the Pythia / GPT-NeoX-20B tokenizer this gives
# b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166, which appears twice in the
# table ("mpt", then "olmo"); both are separate `if`s so the last one wins -> "olmo".
# (llama.cpp handles LLAMA_VOCAB_PRE_TYPE_MPT and _OLMO with the same regex.)
TOKENIZER_PRE = "olmo"


def build_vocab(tok: dict, vocab_size: int):
    """Equivalent of Model.get_vocab_base() without transformers."""
    id2tok = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok["added_tokens"]}
    for i, a in added.items():
        id2tok[i] = a["content"]
    assert max(id2tok) < vocab_size
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in id2tok:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
            continue
        t = id2tok[i]
        if i in added:
            a = added[i]
            looks_special = t.startswith("<|") and t.endswith("|>")
            if a["special"] or looks_special:
                toktypes.append(gguf.TokenType.CONTROL)
            else:
                t = t.replace("\u2581", " ")
                toktypes.append(gguf.TokenType.USER_DEFINED)
        else:
            toktypes.append(gguf.TokenType.NORMAL)
        tokens.append(t)
    return tokens, toktypes


def tensor_plan(hp):
    """(name, numpy shape, kind) in the order the HF checkpoint / converter emits them."""
    E, F, V, L = hp["hidden_size"], hp["intermediate_size"], hp["vocab_size"], hp["num_hidden_layers"]
    plan = [("token_embd.weight", (V, E), "w")]
    for b in range(L):
        p = f"blk.{b}."
        plan += [
            (p + "attn_norm.weight", (E,), "one"),
            (p + "attn_norm.bias", (E,), "zero"),
            (p + "ffn_norm.weight", (E,), "one"),
            (p + "ffn_norm.bias", (E,), "zero"),
            # converter re-orders HF's per-head interleaved qkv into [Q;K;V]; shape unchanged
            (p + "attn_qkv.weight", (3 * E, E), "w"),
            (p + "attn_qkv.bias", (3 * E,), "zero"),
            (p + "attn_output.weight", (E, E), "w"),
            (p + "attn_output.bias", (E,), "zero"),
            (p + "ffn_up.weight", (F, E), "w"),
            (p + "ffn_up.bias", (F,), "zero"),
            (p + "ffn_down.weight", (E, F), "w"),
            (p + "ffn_down.bias", (E,), "zero"),
        ]
    plan += [
        ("output_norm.weight", (E,), "one"),
        ("output_norm.bias", (E,), "zero"),
        ("output.weight", (V, E), "w"),
    ]
    return plan


def make_tensor(rng, shape, kind):
    if kind == "one":
        return np.ones(shape, dtype=np.float32)
    if kind == "zero":
        return np.zeros(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.float16)
    flat = out.reshape(shape[0], -1)
    rows = max(1, (1 << 24) // flat.shape[1])  # ~16M floats per chunk
    for r in range(0, flat.shape[0], rows):
        chunk = rng.standard_normal((min(rows, flat.shape[0] - r), flat.shape[1]), dtype=np.float32)
        chunk *= 0.02
        flat[r:r + chunk.shape[0]] = chunk
    return out


def write_model(which: str, outdir: Path):
    hp = dict(COMMON, **CONFIGS[which])
    E, H = hp["hidden_size"], hp["num_attention_heads"]
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / f"pythia-{which}-f16.gguf"
    path = final.with_name(final.name + ".tmp")  # renamed when complete
    tok = json.loads(TOKENIZER_JSON.read_text(encoding="utf-8"))

    w = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPTNEOX])

    # --- general metadata (Model.prepare_metadata) ---
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(f"Pythia {hp['size_label']} (random weights)")
    w.add_basename("pythia")
    w.add_size_label(hp["size_label"])
    # --- GPTNeoXModel.set_gguf_parameters ---
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(E)
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_rope_dimension_count(int(hp["rotary_pct"] * (E // H)))
    w.add_head_count(H)
    w.add_parallel_residual(hp["use_parallel_residual"])
    w.add_layer_norm_eps(hp["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # (rotary_emb_base=10000 is llama.cpp's default rope freq base; the converter does not write it)

    # --- Model._set_vocab_gpt2 ---
    tokens, toktypes = build_vocab(tok, hp["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(TOKENIZER_PRE)
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    # SpecialVocab reads merges from tokenizer.json and bos/eos/unk from tokenizer_config.json /
    # config.json. Recreate Pythia's (tiny) HF config files in a temp dir next to tokenizer.json.
    with tempfile.TemporaryDirectory() as td:
        shutil.copy(TOKENIZER_JSON, Path(td) / "tokenizer.json")
        (Path(td) / "tokenizer_config.json").write_text(json.dumps({
            "add_prefix_space": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "tokenizer_class": "GPTNeoXTokenizer"}))
        (Path(td) / "config.json").write_text(json.dumps(
            {"bos_token_id": hp["bos_token_id"], "eos_token_id": hp["eos_token_id"]}))
        sv = gguf.SpecialVocab(td, load_merges=True, n_vocab=len(tokens))
        print(sv)
        sv.add_to_gguf(w)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # --- tensors, streamed ---
    plan = tensor_plan(hp)
    nparams = 0
    for name, shape, kind in plan:
        dt = np.float16 if kind == "w" else np.float32
        nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
        w.add_tensor_info(name, shape, np.dtype(dt), nbytes)
        nparams += int(np.prod(shape))
    print(f"{path}: {len(plan)} tensors, {nparams/1e6:.1f}M params")

    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(hp["seed"])
    t0 = time.time()
    for name, shape, kind in plan:
        w.write_tensor_data(make_tensor(rng, shape, kind))
    w.close()
    os.replace(path, final)
    print(f"wrote {final} ({final.stat().st_size/2**30:.3f} GiB) in {time.time()-t0:.1f}s")


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    outdir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("target/gguf")
    for m in (["70m", "2.8b"] if which == "all" else [which]):
        write_model(m, outdir)
