# syntax=docker/dockerfile:1.7
# The analyzer: rule detectors, and model judges through an Editor endpoint (--judge-endpoint).
# No engine of its own, so CPU-only.
#   docker build -f deploy/docker/analyzer.Dockerfile -t arf/analyzer:0.1.0 .   (workspace root)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole workspace: cargo resolves every member and patches/ even for one package.
COPY . .
# Registry and target are BuildKit cache mounts, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=arf-target-analyzer \
    cargo build --release --locked -p analyzer-svc --bin analyzer-svc \
    && install -D target/release/analyzer-svc /out/analyzer-svc

FROM debian:bookworm-slim
# Unpinned apt versions: the base image tag pins the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/analyzer-svc /usr/local/bin/analyzer-svc
# Numeric, so the kubelet can verify runAsNonRoot without a passwd entry.
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/analyzer-svc"]
