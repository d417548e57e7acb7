#!/usr/bin/env bash
# CPU engine vs llama.cpp on the same machine, in alternating rounds (llama.cpp, spedec,
# llama.cpp, …) so that a shared host's drifting bandwidth hits both alike.
#
# usage: scripts/compare-llama-cpp.sh OUTDIR [ROUNDS]     (default 3 rounds)
# needs: LLAMA_BENCH   path of a built `llama-bench` (llama.cpp is not part of this repo), and/or
#        LLAMA_PERPLEXITY  path of a built `llama-perplexity`: adds (or, without LLAMA_BENCH,
#                      only runs) the perplexity comparison below
#        GGUF_DIR      folder with pythia-70m-f16.gguf / pythia-2.8b-f16.gguf from
#                      scripts/make_synthetic_gguf.py (default target/gguf)
#        SPEDEC        the spedec binary (default target/release/spedec)
#        MODELS        which shapes (default "2.8b 70m")
# Writes OUTDIR/llama-<model>-<round>.json (llama-bench -o json) and
# OUTDIR/k-<model>-f16-<round>.json (spedec bench-kernels --json), then prints a table of
# per-round tokens/s and the medians of the per-round ratios. Both time decode the same way:
# consecutive steps (llama-bench -n N, spedec bench-kernels --steps N), spedec's bandwidth
# probe running outside the timed steps.
#
# Perplexity (with LLAMA_PERPLEXITY): per round, `llama-perplexity -c 2048 -b 2048 --chunks C`
# on WikiText-2's test text, then `spedec ppl --method chunked --context 2048` over the same
# C × 2048 tokens (C = PPL_CHUNKS_70M, default 4, / PPL_CHUNKS_28B, default 2): both run
# 2,048-token windows computing every position's logits (llama.cpp scores the second half of
# each window, spedec all of it). llama.cpp's time is from its "calculating perplexity" log line
# to its "Final estimate" (model load and tokenisation excluded), spedec's is its report's
# `seconds` (the same exclusions). Writes OUTDIR/llama-ppl-<model>-<round>.log and
# OUTDIR/ppl-<model>-<round>.json.
set -euo pipefail
out=${1:?usage: scripts/compare-llama-cpp.sh OUTDIR [ROUNDS]}
rounds=${2:-3}
cd "$(dirname "$0")/.."
llama=${LLAMA_BENCH:-}
llama_ppl=${LLAMA_PERPLEXITY:-}
[[ -n $llama || -n $llama_ppl ]] || {
  echo "set LLAMA_BENCH to a built llama-bench and/or LLAMA_PERPLEXITY to a built llama-perplexity" >&2
  exit 2
}
gguf_dir=${GGUF_DIR:-target/gguf}
text=${PPL_TEXT:-data/fixtures/wikitext-2-raw/wiki.test.raw}
spedec=${SPEDEC:-target/release/spedec}
models=${MODELS:-"2.8b 70m"}
[[ -z $llama || -x $llama ]] || { echo "LLAMA_BENCH=$llama is not an executable" >&2; exit 2; }
[[ -z $llama_ppl || -x $llama_ppl ]] || {
  echo "LLAMA_PERPLEXITY=$llama_ppl is not an executable" >&2
  exit 2
}
[[ -x $spedec ]] || { echo "SPEDEC=$spedec is not an executable (cargo build --release)" >&2; exit 2; }
for m in $models; do
  [[ -f $gguf_dir/pythia-$m-f16.gguf ]] || {
    echo "missing $gguf_dir/pythia-$m-f16.gguf: run scripts/make_synthetic_gguf.py $m $gguf_dir" >&2
    exit 2
  }
done
mkdir -p "$out"

# Every write goes to a temporary name first, then is renamed.
for m in $models; do
  [[ -n $llama ]] || break
  tg=16; reps=3
  [[ $m == 70m ]] && { tg=64; reps=5; }
  for r in $(seq 1 "$rounds"); do
    echo "== $m round $r: llama.cpp" >&2
    "$llama" -m "$gguf_dir/pythia-$m-f16.gguf" -t 2 -p 128 -n "$tg" -r "$reps" -o json \
      > "$out/llama-$m-$r.json.tmp"
    mv "$out/llama-$m-$r.json.tmp" "$out/llama-$m-$r.json"
    echo "== $m round $r: spedec" >&2
    # Like for like: as many consecutive decode steps as llama-bench's tg, probe outside them.
    "$spedec" bench-kernels --model "synthetic:pythia-$m:f16" --steps "$tg" \
      --json "$out/k-$m-f16-$r.json" >&2
  done
done

if [[ -n $llama_ppl ]]; then
  for m in $models; do
    chunks=${PPL_CHUNKS_28B:-2}
    [[ $m == 70m ]] && chunks=${PPL_CHUNKS_70M:-4}
    for r in $(seq 1 "$rounds"); do
      echo "== $m round $r: llama.cpp perplexity ($chunks × 2048 tokens)" >&2
      "$llama_ppl" -m "$gguf_dir/pythia-$m-f16.gguf" -f "$text" -c 2048 -b 2048 \
        --chunks "$chunks" -t 2 > "$out/llama-ppl-$m-$r.log.tmp" 2>&1
      mv "$out/llama-ppl-$m-$r.log.tmp" "$out/llama-ppl-$m-$r.log"
      echo "== $m round $r: spedec ppl" >&2
      "$spedec" -t 2 ppl --model "synthetic:pythia-$m:f16" --text "$text" --device cpu \
        --method chunked --context 2048 --max-tokens $((chunks * 2048)) \
        --json "$out/ppl-$m-$r.json" >&2
    done
  done
fi

models_bench=$models
[[ -n $llama ]] || models_bench=""
python3 - "$out" "$rounds" "$models_bench" "${llama_ppl:+$models}" <<'EOF'
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
models, ppl_models = sys.argv[3].split(), sys.argv[4].split()
for m in models:
    print(f"\n### Pythia-{m} (f16)\n")
    print("| round | llama.cpp pp128 tok/s | spedec prefill-128 tok/s | llama.cpp tg tok/s "
          "| spedec decode tok/s | read GB/s | decode / floor | verify(5) / decode |")
    print("|---|---|---|---|---|---|---|---|")
    pre, dec = [], []
    for r in range(1, rounds + 1):
        ll = json.load(open(f"{out}/llama-{m}-{r}.json"))
        pp = next(x for x in ll if x["n_prompt"] > 0)
        tg = next(x for x in ll if x["n_gen"] > 0)
        k = json.load(open(f"{out}/k-{m}-f16-{r}.json"))
        pre.append(k["prefill_tok_s"] / pp["avg_ts"])
        dec.append(k["decode_tok_s"] / tg["avg_ts"])
        print(f"| {r} | {pp['avg_ts']:.2f} ± {pp['stddev_ts']:.2f} | {k['prefill_tok_s']:.2f} "
              f"| {tg['avg_ts']:.2f} ± {tg['stddev_ts']:.2f} (tg{tg['n_gen']}) "
              f"| {k['decode_tok_s']:.2f} | {k['read_bandwidth_gb_s']['median']:.1f} "
              f"| {k['decode_vs_floor']:.2f}× | {k['verify5_vs_decode']:.2f}× |")
    k = json.load(open(f"{out}/k-{m}-f16-1.json"))
    p = k["probe"]["setting"]
    print(f"\nspedec timing: {k['step_timing']}. Read bandwidth: best probe setting "
          f"{p['streams']} streams per thread, prefetch {p['prefetch_bytes']} B "
          f"(transparent huge pages: {k['probe']['transparent_huge_pages']}).")
    print(f"\nMedian of per-round ratios spedec / llama.cpp: prefill "
          f"{statistics.median(pre):.2f}×, decode {statistics.median(dec):.2f}×")

def log_seconds(line):
    # llama.cpp's log prefix: minutes.seconds.milliseconds.microseconds
    mi, se, ms, us = (int(x) for x in line.split()[0].split("."))
    return mi * 60 + se + ms / 1e3 + us / 1e6

for m in ppl_models:
    print(f"\n### Perplexity, Pythia-{m} (f16), 2,048-token windows\n")
    print("| round | windows | llama.cpp window tok/s | spedec window tok/s | ratio |")
    print("|---|---|---|---|---|")
    ratios = []
    for r in range(1, rounds + 1):
        log = open(f"{out}/llama-ppl-{m}-{r}.log").read().splitlines()
        start = next(l for l in log if "calculating perplexity over" in l)
        end = next(l for l in log if "Final estimate" in l)
        chunks = int(re.search(r"over (\d+) chunks", start).group(1))
        ll = chunks * 2048 / (log_seconds(end) - log_seconds(start))
        sp = json.load(open(f"{out}/ppl-{m}-{r}.json"))["tokens_per_second"]
        ratios.append(sp / ll)
        print(f"| {r} | {chunks} | {ll:.1f} | {sp:.1f} | {sp / ll:.2f}× |")
    print(f"\nMedian of per-round ratios spedec / llama.cpp, perplexity: "
          f"{statistics.median(ratios):.2f}×")
EOF
