#!/usr/bin/env bash
# Editor and trainer tokens/s on SmolLM2-135M-Instruct, one after the other (run nothing else
# meanwhile: 2 cores). The comparisons with llama.cpp and PyTorch + PEFT are issue 11's benches.
#   bash scripts/speed-smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
gguf="$(bash scripts/fetch-model.sh smollm2 | tail -n 1)"

echo "== editor (mistral.rs), Q4_1 GGUF, one request at a time"
ARF_BENCH_MODEL="$gguf" ARF_BENCH_RUNS="${ARF_BENCH_RUNS:-3}" ARF_BENCH_TOKENS="${ARF_BENCH_TOKENS:-64}" \
    cargo bench --profile dev --locked -p editor-svc --bench grpc_overhead

echo "== trainer (candle), LoRA r=8 on all 7 projections, from the GGUF (dequantized to f32), batch 1"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --profile dev --locked -q -p trainer-svc -- train --base "$gguf" \
    --data ../shared/data/tweetsumm/teacher_train.jsonl --output "$out" \
    --steps "${ARF_TRAIN_STEPS:-6}" --rank 8 --max-seq-len 384
