"""PyTorch + PEFT side of benches/lora_throughput.rs: the same LoRA training steps on the same
model directory. Prints one JSON line: tokens_per_second, peak_rss_mib.

Usage: bench_peft.py MODEL_DIR BATCH SEQ RANK WARMUP_STEPS STEPS [f32|bf16] [LOSS_ON_LAST]

LOSS_ON_LAST > 0 takes the loss on the last positions only (a conversation, then its summary):
the others get the label -100, and the logits of every position are computed, as transformers'
causal-LM forward computes them.

bf16 runs the forward pass under PyTorch's own CPU autocast (bf16 matmuls, f32 weights, f32
optimizer state), the way a PyTorch user trains in bf16 on a CPU.
"""

import contextlib

import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    model_dir = sys.argv[1]
    batch, seq, rank, warmup, steps = map(int, sys.argv[2:7])
    bf16 = len(sys.argv) > 7 and sys.argv[7] == "bf16"
    loss_on_last = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids[:, 1:].clone()
    if loss_on_last:
        labels[:, : max(0, seq - 1 - loss_on_last)] = -100

    def step():
        with autocast():
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(warmup):
        step()
    t = time.perf_counter()
    losses = [step() for _ in range(steps)]
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_second": batch * seq * steps / elapsed, "peak_rss_mib": peak,
                      "threads": torch.get_num_threads(), "last_loss": losses[-1]}))


if __name__ == "__main__":
    main()
