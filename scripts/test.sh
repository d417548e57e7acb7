#!/usr/bin/env bash
# The test command: checks that the CPU-only build (`--no-default-features`) compiles without
# cudarc in its tree, makes NVRTC loadable (pinned PyPI wheel in target/nvrtc-venv, so the CUDA
# kernels compile for sm_80 / sm_90 even without a GPU), then runs every test of the workspace
# and says how many GPU tests passed without running (no GPU here).
set -euo pipefail
cd "$(dirname "$0")/.."
for spec in "spedec-eval --no-default-features" "spedec-speculative"; do
    # shellcheck disable=SC2086
    if cargo tree -p $spec -e normal --prefix none | grep -q '^cudarc '; then
        echo "error: cargo tree -p $spec -e normal lists cudarc" >&2
        exit 1
    fi
done
echo "CPU-only build: no cudarc in the trees of spedec-eval (no default features) and spedec-speculative"
cargo check -p spedec-eval --no-default-features --all-targets
# shellcheck source=crates/cuda/scripts/nvrtc-env.sh
source crates/cuda/scripts/nvrtc-env.sh "$PWD/target/nvrtc-venv"
mkdir -p target
cargo test --workspace "$@" 2>&1 | tee target/test-output.log
# GPU tests pass without running where there is no GPU; say how many did.
skipped=$(grep -c 'skipped: no CUDA device' target/test-output.log || true)
if [ "$skipped" -gt 0 ]; then
    echo "note: $skipped GPU test(s) passed without running (skipped: no CUDA device); scripts/gpu-check.sh runs them on a GPU"
fi
