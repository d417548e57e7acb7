#!/usr/bin/env bash
# gpu-check.sh OUTDIR: check and time the CUDA backend on a GPU machine, in one go.
#
#   bash scripts/gpu-check.sh [--dry-run] [--quick] [--cpu] OUTDIR
#
# Runs from the repository root with a prebuilt release binary (no Rust toolchain needed):
#   1. records the machine (nvidia-smi) and finds an NVRTC library the binary can use
#      (`spedec gpu-check --probe` opens the device and compiles every kernel);
#   2. `spedec gpu-check --only SECTION` for kernels, logits, consistency, speculative and
#      timing, each in its own process (a crash in one leaves the others' results);
#   3. scripts/hf_reference.py (python3 + torch + transformers, no network): random-weight
#      Pythia-70m / 2.8b HF folders in fp16, HF logits and HF decode / assisted timings;
#   4. logits, consistency and timing again with `--linear tc` (tensor-core linears) into
#      OUTDIR/tc;
#   5. `spedec gpu-check --only hf --hf-dir …`: spedec against HF on the same weights;
#   6. `spedec gpu-check --summarize`: OUTDIR/gpu-check.json (and OUTDIR/tc/gpu-check.json)
#      and the short tables, last; OUTDIR/gpu-check.md holds the table and the kernels
#      section's linears against cuBLAS (ours µs, cuBLAS µs, ratio, GB/s, TFLOP/s).
# Everything printed also goes to OUTDIR/log.txt. Exit status: non-zero when a check failed
# (or a step crashed / ran out of time); 0 with "skipped: no CUDA device" where there is none.
# With --cpu and no torch the hf section is left out rather than failed.
# --dry-run shows the plan (binary, NVRTC, python, steps and timeouts) and runs nothing;
# --quick uses fewer tokens and repeats; --cpu runs the whole pipeline on the CPU with tiny
# models (spedec's CPU model, HF --small): a test of this script and of the harness.
#
# Time: the whole run stays within SPEDEC_BUDGET_S (default 540 s): each step gets its own
# cap or what is left of the budget, whichever is less; a step that would start with less
# than 20 s left is skipped (and reported missing). Expected on an H200: ~7 minutes.
#
# Environment: SPEDEC_BIN (default target/release/spedec), PYTHON (default python3),
# SPEDEC_SCRATCH (HF model folders, ~6 GB; default ${TMPDIR:-/tmp}/spedec-gpu-check),
# SPEDEC_KEEP_SCRATCH=1 keeps them, SPEDEC_NVRTC_LIB_DIR tries that NVRTC folder first,
# SPEDEC_CUDA_GRAPHS=0 turns CUDA graphs off (to isolate a graph failure),
# SPEDEC_CUBLAS_LIB_DIR names a folder with libcublas.so.13 / .12 (the cuBLAS reference).

set -uo pipefail

DRY_RUN=0
QUICK=()
CPU_MODE=0
OUT=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --quick) QUICK=(--quick) ;;
        --cpu) CPU_MODE=1 ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        -*) echo "gpu-check.sh: unknown option $arg" >&2; exit 2 ;;
        *) OUT="$arg" ;;
    esac
done
if [ -z "$OUT" ]; then
    echo "usage: bash scripts/gpu-check.sh [--dry-run] [--quick] [--cpu] OUTDIR" >&2
    exit 2
fi

cd "$(dirname "$0")/.." || exit 2
REPO="$(pwd)"
BIN="${SPEDEC_BIN:-$REPO/target/release/spedec}"
PY="${PYTHON:-python3}"
SCRATCH="${SPEDEC_SCRATCH:-${TMPDIR:-/tmp}/spedec-gpu-check}"
BUDGET="${SPEDEC_BUDGET_S:-540}"
START=$(date +%s)
SECTIONS=(kernels logits consistency speculative timing)
MISSING=()
# Extra arguments of every `spedec gpu-check` / hf_reference.py run.
CHECK_ARGS=()
HF_ARGS=()
if [ "$CPU_MODE" = 1 ]; then
    QUICK=(--quick)
    CHECK_ARGS=(--device cpu --target synthetic:pythia-70m --draft synthetic:pythia-14m)
    HF_ARGS=(--device cpu --small)
fi

mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
exec > >(tee -a "$OUT/log.txt") 2>&1

say() { echo "[gpu-check.sh $(date +%H:%M:%S), $(( $(date +%s) - START )) s] $*"; }

# Seconds a step may take: min(cap, budget left − 10 s kept for the summary).
allowance() {
    local cap=$1 left
    left=$(( START + BUDGET - $(date +%s) - 10 ))
    if [ "$left" -lt "$cap" ]; then echo "$left"; else echo "$cap"; fi
}

# run_step NAME CAP CMD...: run CMD with a timeout; a skipped or killed step is "missing".
run_step() {
    local name=$1 cap=$2 t rc
    shift 2
    t=$(allowance "$cap")
    if [ "$t" -lt 20 ]; then
        say "SKIP $name: only ${t} s of the ${BUDGET} s budget left"
        MISSING+=("$name (out of time)")
        return 124
    fi
    say "start $name (timeout ${t} s): $*"
    if [ "$DRY_RUN" = 1 ]; then
        say "dry run: not started"
        return 0
    fi
    timeout -k 10 "$t" "$@"
    rc=$?
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        say "TIMEOUT $name after ${t} s"
        MISSING+=("$name (timed out)")
    elif [ "$rc" != 0 ]; then
        say "$name exited with status $rc"
    else
        say "done $name"
    fi
    return "$rc"
}

say "spedec gpu-check into $OUT (budget ${BUDGET} s${QUICK[*]:+, quick})"
say "repo $REPO at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
uname -a

# --- the machine -----------------------------------------------------------------------
GPU_LISTED=0
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory,power.limit \
        --format=csv 2>&1 | tee -a "$OUT/nvidia-smi.txt"
    if nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then GPU_LISTED=1; fi
else
    say "nvidia-smi not found"
fi
echo "cpu threads: $(nproc 2>/dev/null || echo '?')"
free -g 2>/dev/null | head -2

# --- the binary --------------------------------------------------------------------------
if [ ! -x "$BIN" ]; then
    say "ERROR: no spedec binary at $BIN (build it with: cargo build --release -p spedec-eval)"
    exit 2
fi
"$BIN" --version
echo "SPEDEC_CUDA_GRAPHS=${SPEDEC_CUDA_GRAPHS:-1 (default: on)}"

# --- NVRTC: the kernels are compiled at run time -----------------------------------------
# Candidates in order: SPEDEC_NVRTC_LIB_DIR, the system's (ldconfig), CUDA toolkits, the
# NVIDIA wheels next to torch. Each is tried with `spedec gpu-check --probe` until one works.
nvrtc_candidates() {
    local d
    if [ -n "${SPEDEC_NVRTC_LIB_DIR:-}" ]; then echo "$SPEDEC_NVRTC_LIB_DIR"; fi
    if ldconfig -p 2>/dev/null | grep -qE 'libnvrtc\.so\.1[23]'; then echo "system"; fi
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(ls -d /usr/local/cuda-1[23]*/lib64 2>/dev/null | sort -rV) /usr/lib/x86_64-linux-gnu; do
        if ls "$d"/libnvrtc.so.1[23]* >/dev/null 2>&1; then echo "$d"; fi
    done
    "$PY" -c '
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for pattern in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/*/lib"):
    for root in roots:
        for d in sorted(glob.glob(os.path.join(root, pattern))):
            if glob.glob(os.path.join(d, "libnvrtc.so.1[23]*")):
                print(d)
' 2>/dev/null
}
# The LD_LIBRARY_PATH that puts NVRTC folder $1 first ("system": unchanged).
with_dir() {
    if [ "$1" = system ]; then echo "${LD_LIBRARY_PATH:-}"; else echo "$1${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
}
mapfile -t NVRTC_DIRS < <(nvrtc_candidates | awk 'NF && !seen[$0]++')
say "NVRTC candidates: ${NVRTC_DIRS[*]:-none}"
if [ ${#NVRTC_DIRS[@]} -eq 0 ]; then NVRTC_DIRS=(system); fi

if [ "$DRY_RUN" = 1 ] || [ "$CPU_MODE" = 1 ]; then
    export LD_LIBRARY_PATH="$(with_dir "${NVRTC_DIRS[0]}")"
    say "dry run or --cpu: no device probe"
else
    CHOSEN=""
    for d in "${NVRTC_DIRS[@]}"; do
        ldp="$(with_dir "$d")"
        probe="$(LD_LIBRARY_PATH="$ldp" timeout 120 "$BIN" gpu-check --probe 2>&1)"
        rc=$?
        say "probe with NVRTC from $d (status $rc): $probe"
        if printf '%s' "$probe" | grep -q "skipped: no CUDA device"; then
            if [ "$GPU_LISTED" = 1 ]; then
                say "ERROR: nvidia-smi lists a GPU but spedec sees no CUDA device"
                exit 1
            fi
            say "skipped: no CUDA device — nothing to check here"
            exit 0
        fi
        if [ "$rc" = 0 ]; then
            CHOSEN="$d"
            export LD_LIBRARY_PATH="$ldp"
            break
        fi
    done
    if [ -z "$CHOSEN" ]; then
        export LD_LIBRARY_PATH="$(with_dir "${NVRTC_DIRS[0]}")"
        say "WARNING: no NVRTC candidate passed the probe; the sections will report why"
    else
        say "using NVRTC from $CHOSEN"
    fi
fi
# cuBLAS: the kernels section times our linears against it (a reference, loaded at run time;
# without it that check fails and reports our times only). Add the first folder holding
# libcublas.so.1[23] unless the loader already finds one.
if ! ldconfig -p 2>/dev/null | grep -qE 'libcublas\.so\.1[23]'; then
    CUBLAS_DIR=""
    for d in ${SPEDEC_CUBLAS_LIB_DIR:-} $(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' ' ') \
             /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
             $(ls -d /usr/local/cuda-1[23]*/lib64 2>/dev/null | sort -rV) \
             $("$PY" -c '
import glob, os, site
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for pattern in ("nvidia/cu13/lib", "nvidia/cublas/lib"):
        for d in sorted(glob.glob(os.path.join(root, pattern))):
            print(d)
' 2>/dev/null); do
        if ls "$d"/libcublas.so.1[23]* >/dev/null 2>&1; then CUBLAS_DIR="$d"; break; fi
    done
    if [ -n "$CUBLAS_DIR" ]; then
        export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$CUBLAS_DIR"
        say "cuBLAS from $CUBLAS_DIR"
    else
        say "WARNING: no libcublas.so.1[23] found: the linears-vs-cuBLAS check will fail"
    fi
fi
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"

# --- spedec sections, one process each -----------------------------------------------------
declare -A CAP=([kernels]=180 [logits]=90 [consistency]=120 [speculative]=150 [timing]=150)
for s in "${SECTIONS[@]}"; do
    run_step "$s" "${CAP[$s]}" "$BIN" gpu-check --only "$s" --out "$OUT" "${QUICK[@]}" "${CHECK_ARGS[@]}"
done

# --- the same model checks with the tensor-core linears (kernels/linear_tc.cu) ---------------
# Into OUTDIR/tc, summarized there: logits vs the fixtures' HF logits, the bit-identity checks
# and the step times, so one run measures both kernels on the same card.
TC_SECTIONS=(logits consistency timing)
if [ "$CPU_MODE" = 0 ]; then
    mkdir -p "$OUT/tc"
    for s in "${TC_SECTIONS[@]}"; do
        run_step "tc-$s" "${CAP[$s]}" "$BIN" gpu-check --only "$s" --linear tc --out "$OUT/tc" "${QUICK[@]}" "${CHECK_ARGS[@]}"
    done
fi

# --- HF transformers reference, then spedec against it -------------------------------------
HF_DIR="$SCRATCH/hf"
if [ ${#QUICK[@]} -gt 0 ] && [ "$CPU_MODE" = 0 ]; then HF_ARGS=(--repeats 1 --new-tokens 32); fi
SECTIONS+=(hf)
PY_VERSIONS="$("$PY" -c 'import torch, transformers, safetensors, tokenizers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())' 2>&1)"
if [ $? != 0 ]; then
    say "$PY lacks torch / transformers / safetensors / tokenizers: HF comparison skipped"
    echo "$PY_VERSIONS" | tail -3
    if [ "$CPU_MODE" = 1 ]; then
        # A test of the harness on a machine without torch: the HF step is optional here.
        say "--cpu: the hf section is left out (not a failure without torch)"
        unset 'SECTIONS[-1]'  # hf, added above
    else
        MISSING+=("hf (no torch + transformers)")
    fi
else
    say "$PY: $PY_VERSIONS"
    [ "$DRY_RUN" = 0 ] && rm -rf "$HF_DIR" && mkdir -p "$HF_DIR"
    if run_step hf_reference 210 "$PY" scripts/hf_reference.py "$HF_DIR" "${HF_ARGS[@]}"; then
        [ -f "$HF_DIR/reference.json" ] && cp "$HF_DIR/reference.json" "$OUT/hf-reference.json"
        run_step hf 120 "$BIN" gpu-check --only hf --hf-dir "$HF_DIR" --out "$OUT" "${QUICK[@]}" "${CHECK_ARGS[@]}"
    else
        [ -f "$HF_DIR/reference.json" ] && cp "$HF_DIR/reference.json" "$OUT/hf-reference.json"
        MISSING+=("hf (hf_reference.py failed)")
    fi
fi
if [ "${SPEDEC_KEEP_SCRATCH:-0}" != 1 ] && [ "$DRY_RUN" = 0 ]; then
    rm -rf "$HF_DIR"
fi

# --- summary, last --------------------------------------------------------------------------
ONLY="$(IFS=,; echo "${SECTIONS[*]}")"
if [ "$DRY_RUN" = 1 ]; then
    say "dry run done: would summarize sections $ONLY into $OUT/gpu-check.json"
    exit 0
fi
for m in "${MISSING[@]+"${MISSING[@]}"}"; do say "missing: $m"; done
say "total $(( $(date +%s) - START )) s"
"$BIN" gpu-check --summarize --only "$ONLY" --out "$OUT"
rc=$?
if [ "$CPU_MODE" = 0 ]; then
    say "tensor-core linears (OUTDIR/tc):"
    "$BIN" gpu-check --summarize --only "$(IFS=,; echo "${TC_SECTIONS[*]}")" --out "$OUT/tc" || rc=1
fi
if [ ${#MISSING[@]} -gt 0 ] && [ "$rc" = 0 ]; then
    rc=1
fi
exit "$rc"
