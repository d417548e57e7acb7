#!/usr/bin/env bash
# CPU engine vs llama.cpp on the same machine, in alternating rounds (llama.cpp, spedec,
# llama.cpp, …) so that a shared host's drifting bandwidth hits both alike.
#
# usage: scripts/compare-llama-cpp.sh OUTDIR [ROUNDS]     (default 3 rounds)
# needs: LLAMA_BENCH   path of a built `llama-bench` (llama.cpp is not part of this repo)
#        GGUF_DIR      folder with pythia-70m-f16.gguf / pythia-2.8b-f16.gguf from
#                      scripts/make_synthetic_gguf.py (default target/gguf)
#        SPEDEC        the spedec binary (default target/release/spedec)
#        MODELS        which shapes (default "2.8b 70m")
# Writes OUTDIR/llama-<model>-<round>.json (llama-bench -o json) and
# OUTDIR/k-<model>-f16-<round>.json (spedec bench-kernels --json), then prints a table of
# per-round tokens/s and the medians of the per-round ratios. Both time decode the same way:
# consecutive steps (llama-bench -n N, spedec bench-kernels --steps N), spedec's bandwidth
# probe running outside the timed steps.
set -euo pipefail
out=${1:?usage: scripts/compare-llama-cpp.sh OUTDIR [ROUNDS]}
rounds=${2:-3}
cd "$(dirname "$0")/.."
llama=${LLAMA_BENCH:?set LLAMA_BENCH to a built llama-bench}
gguf_dir=${GGUF_DIR:-target/gguf}
spedec=${SPEDEC:-target/release/spedec}
models=${MODELS:-"2.8b 70m"}
[[ -x $llama ]] || { echo "LLAMA_BENCH=$llama is not an executable" >&2; exit 2; }
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

python3 - "$out" "$rounds" $models <<'EOF'
import json, statistics, sys
out, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
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
EOF
