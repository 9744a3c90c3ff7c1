#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` and `llama-batched-bench` (the anchors of the editor's speed bench)
# and `llama-server` (an OpenAI-compatible server: the upstream of editor-svc --backend openai in
# its tests) from the source that the PyPI sdist of llama-cpp-python vendors, into a cache outside
# the repository, and prints the folder holding the binaries. Built once (about 6-8 min on 2
# cores); later calls only print the folder.
#   bash scripts/build-llama-bench.sh            -> ~/.cache/arf/llama.cpp/<version>/build-<isa>/bin
# Needs a Python with pip (ARF_BENCH_PYTHON, default python3) for the sdist, cmake and ninja.
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
# sha256 of llama_cpp_python-0.3.36.tar.gz as PyPI served it on 2026-12-01.
sha256="${LLAMA_CPP_PYTHON_SHA256:-832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e}"
cache="${ARF_CACHE:-$HOME/.cache/arf}/llama.cpp/$version"

# The instruction sets to build for, from this machine's CPUID (the cache outlives the machine:
# sessions move between Zen 5 and Xeon VMs, so each set gets its own build). Not GGML_NATIVE:
# these VMs list AMX in CPUID without granting its tile state, and -march=native's AMX code
# (tilezero) dies with SIGILL; AMX is never built.
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { [[ "$cpu_flags" == *" $1 "* ]]; }
isa=(-DGGML_NATIVE=OFF)
if has avx2; then isa+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON); fi
if has avx_vnni; then isa+=(-DGGML_AVX_VNNI=ON); fi
if has avx512f; then isa+=(-DGGML_AVX512=ON); fi
if has avx512vbmi; then isa+=(-DGGML_AVX512_VBMI=ON); fi
if has avx512_vnni; then isa+=(-DGGML_AVX512_VNNI=ON); fi
if has avx512_bf16; then isa+=(-DGGML_AVX512_BF16=ON); fi
key="$(printf '%s\n' "${isa[@]}" | sha256sum | cut -c1-12)"
build="$cache/build-$key"
bin="$build/bin"

if [[ -x "$bin/llama-bench" && -x "$bin/llama-batched-bench" && -x "$bin/llama-server" ]]; then
    echo "$bin"
    exit 0
fi

python="${ARF_BENCH_PYTHON:-python3}"
echo "llama.cpp's tools are missing: building llama.cpp from the llama-cpp-python $version sdist into $cache" >&2
mkdir -p "$cache"
sdist="$cache/llama_cpp_python-$version.tar.gz"
if [[ ! -f "$sdist" ]]; then
    "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$version" -d "$cache" >&2
fi
echo "$sha256  $sdist" | sha256sum --check --quiet >&2

tools="$cache/tools"
if [[ ! -x "$tools/bin/cmake" || ! -x "$tools/bin/ninja" ]]; then
    "$python" -m pip install --quiet --target "$tools/lib" cmake ninja >&2
    mkdir -p "$tools/bin"
    ln -sf "$tools/lib/bin/cmake" "$tools/bin/cmake"
    ln -sf "$tools/lib/bin/ninja" "$tools/bin/ninja"
fi
export PATH="$tools/bin:$PATH"
export PYTHONPATH="$tools/lib${PYTHONPATH:+:$PYTHONPATH}"

src="$cache/src"
if [[ ! -d "$src/vendor/llama.cpp" ]]; then
    rm -rf "$src" && mkdir -p "$src"
    tar xzf "$sdist" -C "$src" --strip-components=1
fi
cmake -S "$src/vendor/llama.cpp" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    "${isa[@]}" -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=ON >&2
cmake --build "$build" --target llama-bench llama-batched-bench llama-server -j "$(nproc)" >&2
echo "$bin"
