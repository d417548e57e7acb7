#!/usr/bin/env bash
# nvrtc-env.sh: make NVRTC (the CUDA runtime compiler) loadable without a CUDA toolkit or GPU.
#
#   source crates/cuda/scripts/nvrtc-env.sh [VENV_DIR]
#
# Installs the pinned PyPI wheel nvidia-cuda-nvrtc-cu12 into a Python virtual environment
# (VENV_DIR, default <repo>/target/nvrtc-venv; reused when already there) and prepends its
# lib/ directory (libnvrtc.so.12 + libnvrtc-builtins.so.12.9) to LD_LIBRARY_PATH, so that
# `cargo test -p spedec-cuda` compiles every kernel for sm_80 and sm_90.
#
# Why 12.9.86: the cubins it emits load on any CUDA 12.x or 13.x driver (the GPU machines run
# CUDA 13.0, driver 580), its PTX is ISA 8.8 (loads on drivers >= 12.9, 580 included), and a
# cudarc `cuda-13000` build finds libnvrtc.so.12. A 13.x wheel would emit code that a 12.x
# driver cannot load.
# Executed instead of sourced, it installs and prints the export line to use.

SPEDEC_NVRTC_WHEEL="nvidia-cuda-nvrtc-cu12==12.9.86"

_spedec_nvrtc_env() {
    local here repo venv py libdir
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" || return 1
    repo="$(cd "$here/../../.." && pwd)" || return 1
    venv="${1:-$repo/target/nvrtc-venv}"
    py="${PYTHON:-python3}"

    libdir="$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null | head -n 1 || true)"
    if [ -z "$libdir" ] || [ ! -e "$libdir/libnvrtc.so.12" ]; then
        echo "nvrtc-env: installing $SPEDEC_NVRTC_WHEEL into $venv" >&2
        if [ ! -x "$venv/bin/python" ]; then
            "$py" -m venv "$venv" || { echo "nvrtc-env: '$py -m venv' failed" >&2; return 1; }
        fi
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "$SPEDEC_NVRTC_WHEEL" || { echo "nvrtc-env: pip install failed" >&2; return 1; }
        libdir="$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cuda_nvrtc/lib 2>/dev/null | head -n 1 || true)"
    fi
    if [ -z "$libdir" ] || [ ! -e "$libdir/libnvrtc.so.12" ]; then
        echo "nvrtc-env: libnvrtc.so.12 not found under $venv" >&2
        return 1
    fi
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$libdir:"*) ;;
        *) export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    export SPEDEC_NVRTC_LIB_DIR="$libdir"
    echo "nvrtc-env: NVRTC from $libdir" >&2
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    _spedec_nvrtc_env "$@"
    _spedec_nvrtc_rc=$?
    unset -f _spedec_nvrtc_env
    return $_spedec_nvrtc_rc
else
    _spedec_nvrtc_env "$@" || exit 1
    echo "export LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH\""
fi
