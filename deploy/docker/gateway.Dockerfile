# syntax=docker/dockerfile:1.7
# The gateway: the public Pipeline API. It links no inference engine (no mistral.rs, no candle:
# deploy/check/docker_policy.py proves it from Cargo.lock), so its image is CPU-only and small.
#   docker build -f deploy/docker/gateway.Dockerfile -t arf/gateway:0.1.0 .   (workspace root)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo resolves every member and patches/ even for one package.
COPY . .
# Registry and target are BuildKit cache mounts (kept between builds, never in the image), so
# the binary is copied out in the same step. .cargo/config.toml targets x86-64-v3 (AVX2).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=arf-target-gateway \
    cargo build --release --locked -p gateway --bin gateway \
    && install -D target/release/gateway /out/gateway

FROM debian:bookworm-slim
# ca-certificates: OTLP or PostgreSQL over TLS to servers with public certificates.
# Unpinned apt versions: the base image tag pins the Debian release; a pin would break on
# every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gateway /usr/local/bin/gateway
# Numeric, so the kubelet can verify runAsNonRoot without a passwd entry.
USER 10001:10001
EXPOSE 50050
ENTRYPOINT ["/usr/local/bin/gateway"]
