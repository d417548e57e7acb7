#!/usr/bin/env bash
# The test command: makes NVRTC loadable (pinned PyPI wheel in target/nvrtc-venv, so the CUDA
# kernels compile for sm_80 / sm_90 even without a GPU), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=crates/cuda/scripts/nvrtc-env.sh
source crates/cuda/scripts/nvrtc-env.sh "$PWD/target/nvrtc-venv"
cargo test --workspace "$@"
