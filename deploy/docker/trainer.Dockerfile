# syntax=docker/dockerfile:1.7
# The trainer: LoRA fine-tuning on candle. Two images from one file (workspace root as context):
#   docker build -f deploy/docker/trainer.Dockerfile --target cpu  -t arf/trainer:0.1.0-cpu  .
#   docker build -f deploy/docker/trainer.Dockerfile --target cuda -t arf/trainer:0.1.0-cuda .
# Without --target the last stage, cpu, is built. BuildKit builds only the stages a target needs.
# CUDA 13.0, as scripts/build-cuda.sh: the GPU nodes' driver 580 runs it.

FROM rust:1.95-bookworm AS toolchain

FROM toolchain AS build-cpu
WORKDIR /src
# The whole workspace: cargo resolves every member and patches/ even for one package.
COPY . .
# Registry and target are BuildKit cache mounts, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=arf-target-trainer-cpu \
    cargo build --release --locked -p trainer-svc --bin trainer-svc \
    && install -D target/release/trainer-svc /out/trainer-svc

# nvcc compiles the kernels, so the builder is a -devel image; Rust comes from the official
# image (the same toolchain as the CPU build, no installer download).
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build-cuda
COPY --from=toolchain /usr/local/cargo /usr/local/cargo
COPY --from=toolchain /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
# A C/C++ compiler for the tokenizers (onig_sys, esaxx-rs) and ring (and nvcc's host compiler).
# Unpinned apt versions: the base image tag pins the Ubuntu release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ make pkg-config ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# No GPU at build time, so no nvidia-smi to ask: kernels for compute capability 9.0 (H100/H200)
# unless told otherwise. libcuda.so comes with the driver; the link uses the toolkit's stub.
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} CUDA_HOME=/usr/local/cuda \
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=arf-target-trainer-cuda \
    cargo build --release --locked --features cuda -p trainer-svc --bin trainer-svc \
    && install -D target/release/trainer-svc /out/trainer-svc

# The -runtime image has cudart, cuBLAS(Lt), cuRAND and NVRTC; the node's driver brings libcuda.so.1.
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04 AS cuda
COPY --from=build-cuda /out/trainer-svc /usr/local/bin/trainer-svc
# Numeric, so the kubelet can verify runAsNonRoot without a passwd entry.
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/trainer-svc"]

FROM debian:bookworm-slim AS cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /out/trainer-svc /usr/local/bin/trainer-svc
USER 10001:10001
EXPOSE 50053
ENTRYPOINT ["/usr/local/bin/trainer-svc"]
