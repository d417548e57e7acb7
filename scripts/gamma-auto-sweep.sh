#!/usr/bin/env bash
# γ sweep on the CPU: `--gamma auto` against fixed γ ∈ {1,2,3,4,6,8} for three near drafts of
# different acceptance, on synthetic shapes (no downloads). The target is Pythia-160m's shape
# in f32 with layer decay 0.6; each draft is its first N layers in f16 (N = 3, 4, 6), so
# acceptance rises with N while the draft's cost rises too.
#
# usage: scripts/gamma-auto-sweep.sh OUTDIR       (SPEDEC: the binary, default target/release/spedec;
#        RUNS: measured runs per prompt, default 2)
# Writes OUTDIR/layers<N>.{json,md}; each table ends with "TPOT vs best fixed γ". Spec runs of
# every γ are interleaved per (run, prompt) so a drifting machine hits them alike; run it on an
# otherwise idle machine all the same (about 10 minutes on 2 cores with RUNS=2).
set -euo pipefail
out=${1:?usage: scripts/gamma-auto-sweep.sh OUTDIR}
cd "$(dirname "$0")/.."
spedec=${SPEDEC:-target/release/spedec}
[[ -x $spedec ]] || { echo "SPEDEC=$spedec is not an executable (cargo build --release -p spedec-eval)" >&2; exit 2; }
mkdir -p "$out"
target="synthetic:pythia-160m:f32:seed=1:layer-decay=0.6"
for n in 3 4 6; do
  draft="synthetic:pythia-160m:f16:seed=1:layer-decay=0.6:layers=$n"
  echo "== draft: first $n layers" >&2
  "$spedec" bench -m "$target" --draft "$draft" --gamma 1,2,3,4,6,8,auto \
    -n 96 --runs "${RUNS:-2}" --warmup 1 --device cpu \
    --json "$out/layers$n.json" --markdown "$out/layers$n.md" >&2
done
grep -h -A12 "^γ sweep" "$out"/layers*.md
