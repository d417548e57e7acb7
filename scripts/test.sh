#!/usr/bin/env bash
# The test command: checks that the CPU-only build (`--no-default-features`) compiles without
# cudarc in its tree, makes NVRTC loadable (pinned PyPI wheel in target/nvrtc-venv, so the CUDA
# kernels compile for sm_80 / sm_90 even without a GPU), then runs every test of the workspace.
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
cargo test --workspace "$@"
