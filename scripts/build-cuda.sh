#!/usr/bin/env bash
# Builds the services with `--features cuda` on a machine with no GPU and no system CUDA:
#   scripts/build-cuda.sh [cargo build arguments]      (default: --release)
#
# - nvcc and the CUDA 13.0 libraries come from PyPI (`cuda-toolkit`) into a virtual environment
#   ($ARF_CUDA_VENV, default ~/.cache/arf/cuda-venv). mistralrs-quant knows CUDA up to 13.2; the
#   H100/H200 machines run driver 580 (CUDA 13.0), which may refuse PTX from a newer toolkit.
# - The wheels have versioned .so files only: unversioned links go in a folder on LIBRARY_PATH.
# - The driver library, libcuda.so, comes with the GPU driver, not the toolkit: the link uses a
#   stub exporting the cu* symbols cudarc declares; the GPU machine's real libcuda.so.1 is
#   loaded at run time.
# - Kernels are built for compute capability $CUDA_COMPUTE_CAP (default 90: H100/H200).
# On the GPU machine: LD_LIBRARY_PATH must reach the CUDA 13 runtime libraries (cudart, cublas,
# cublasLt, curand, nvrtc), e.g. those of a PyTorch install.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ARF_CUDA_VENV:-$HOME/.cache/arf/cuda-venv}"
if ! ls "$venv"/lib/python3*/site-packages/nvidia/cu13/bin/nvcc >/dev/null 2>&1; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "cuda-toolkit[nvcc,cudart,cublas,curand,nvrtc,cccl]==13.0.*"
fi
cuda_home="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
export CUDA_HOME="$cuda_home" CUDA_PATH="$cuda_home" CUDA_ROOT="$cuda_home"
export PATH="$cuda_home/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

links="$venv/link"
mkdir -p "$links"
for lib in cudart cublas cublasLt nvrtc curand; do
    versioned="$(ls "$cuda_home"/lib/lib$lib.so.* | sort | head -n 1)"
    ln -sf "$versioned" "$links/lib$lib.so"
done
if [ ! -f "$links/libcuda.so" ]; then
    registry="$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n 1)"
    cargo fetch --locked >/dev/null
    grep -oh "fn cu[A-Za-z0-9_]*" "$registry"/cudarc-*/src/driver/sys/mod.rs | sed 's/^fn //' | sort -u \
        | sed 's/.*/void &(void) {}/' > "$links/cuda_stub.c"
    # The soname the driver's real library has, so the binaries ask for libcuda.so.1 at run time.
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$links/libcuda.so" "$links/cuda_stub.c"
fi
export LIBRARY_PATH="$links:$cuda_home/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"

if [ $# -eq 0 ]; then set -- --release; fi
cargo build --locked --features cuda -p editor-svc -p trainer-svc -p arf "$@"
