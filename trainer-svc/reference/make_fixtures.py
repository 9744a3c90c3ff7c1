"""Reference fixtures for trainer-svc, made with Hugging Face transformers + peft (CPU, f32).

Phase `base` (run first):
  tests/fixtures/tiny-llama/        a tiny random Llama (GQA, llama3 rope scaling, untied
                                    embeddings), byte-level BPE tokenizer, Llama-3 chat template
  tests/fixtures/reference.safetensors
      input_ids, attention mask-free base logits, and for a PEFT adapter with fixed non-zero B:
      its logits and the gradients of every lora_A / lora_B after one backward of a fixed
      masked cross-entropy loss
  tests/fixtures/peft-adapter/      that adapter, as PEFT saves it
  tests/fixtures/train.jsonl        a handful of conversations for the training tests

Phase `ours` (after `cargo run -p trainer-svc -- train ... --output tests/fixtures/ours-run`, see
tests/fixtures/README.md): PEFT loads OUR adapter and merges it, and their logits are stored in
tests/fixtures/ours-reference.safetensors, so the Rust tests compare what PEFT computed from a
file our writer produced.

Usage: /work/pyenv/bin/python trainer-svc/reference/make_fixtures.py base|ours
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures")
MODEL = os.path.join(FIX, "tiny-llama")

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama 3.1's template, less the tool-calling and date preamble.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

CONVERSATIONS = [
    ("c1", "chat", [("customer", "My order 1234 has not arrived yet."), ("agent", "Sorry! It ships tomorrow.")],
     "Customer's order 1234 is late; agent says it ships tomorrow."),
    ("c2", "email", [("customer", "I was charged twice for my plan."), ("agent", "I refunded the extra charge.")],
     "Double charge on the plan; agent refunded it."),
    ("c3", "chat", [("customer", "How do I reset my password?"), ("agent", "Use the link on the login page.")],
     "Customer asks about password reset; agent points to the login page link."),
    ("c4", "bot", [("customer", "Cancel my subscription please."), ("bot", "Your subscription is cancelled.")],
     "Subscription cancelled at the customer's request."),
    ("c5", "twitter", [("customer", "The app crashes when I open it."), ("agent", "Please update to version 2.1.")],
     "App crashes on open; agent suggests updating to 2.1."),
    ("c6", "webform", [("customer", "Can I change my delivery address?"), ("agent", "Yes, I changed it for you.")],
     "Delivery address changed by the agent."),
]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [t for _, _, turns, s in CONVERSATIONS for _, t in turns] + [s for *_, s in CONVERSATIONS]
    corpus += ["customer", "agent", "system", "assistant", "user", "Summarize the conversation."] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>"
    )
    fast.save_pretrained(MODEL)
    # Llama 3.1 keeps the template inside tokenizer_config.json (transformers 5 would write
    # chat_template.jinja); the fixture takes the released checkpoints' layout.
    path = os.path.join(MODEL, "tokenizer_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["chat_template"] = CHAT_TEMPLATE
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    jinja = os.path.join(MODEL, "chat_template.jinja")
    if os.path.exists(jinja):
        os.remove(jinja)
    return tok.get_vocab_size()


def make_model(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=4,
        pad_token_id=1,
        # head_dim 8: wavelengths 6.3, 63, 628, 6283 against 64/16: one frequency kept, one
        # smoothed, two divided by the factor, so every branch of llama3 scaling is exercised.
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # transformers' init (std 0.02, norms at 1) makes every logit near zero; larger weights and
    # uneven norms make a wrong formula visible.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
    return model


def fixed_ids(vocab):
    g = torch.Generator().manual_seed(1)
    return torch.randint(5, vocab, (2, 11), generator=g)


def masked_loss(logits, ids):
    # Loss only on the second half of each sequence (as on the assistant tokens), mean over them.
    labels = ids.clone()
    labels[:, :6] = -100
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def phase_base():
    from peft import LoraConfig, get_peft_model

    os.makedirs(FIX, exist_ok=True)
    if os.path.exists(MODEL):
        shutil.rmtree(MODEL)
    os.makedirs(MODEL)
    vocab = write_tokenizer()
    model = make_model(vocab)
    model.save_pretrained(MODEL, safe_serialization=True)
    with open(os.path.join(FIX, "train.jsonl"), "w") as f:
        for cid, channel, turns, summary in CONVERSATIONS:
            row = {"id": cid, "channel": channel, "turns": [{"role": r, "text": t} for r, t in turns], "summary": summary}
            f.write(json.dumps(row) + "\n")

    ids = fixed_ids(vocab)
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits

    lcfg = LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lcfg)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn_like(p))  # non-zero B: every gradient is non-trivial
    logits = peft_model(input_ids=ids).logits
    loss = masked_loss(logits, ids)
    loss.backward()
    out = {"input_ids": ids.to(torch.int64), "base_logits": base_logits, "lora_logits": logits.detach(),
           "loss": loss.detach().reshape(1)}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            key = name.replace(".default", "")
            out["grad." + key] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(FIX, "reference.safetensors"))
    adapter = os.path.join(FIX, "peft-adapter")
    if os.path.exists(adapter):
        shutil.rmtree(adapter)
    peft_model.save_pretrained(adapter)
    os.remove(os.path.join(adapter, "README.md"))  # a generated model card, not needed
    print("wrote", MODEL, "vocab", vocab, "loss", float(loss))


def phase_ours():
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    ours = os.path.join(FIX, "ours-run", "adapter")
    base = LlamaForCausalLM.from_pretrained(MODEL, attn_implementation="eager").eval()
    ids = fixed_ids(base.config.vocab_size)
    model = PeftModel.from_pretrained(base, ours).eval()
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits
    save_file({"input_ids": ids.to(torch.int64), "adapter_logits": adapter_logits.contiguous(),
               "merged_logits": merged_logits.contiguous()}, os.path.join(FIX, "ours-reference.safetensors"))
    print("PEFT loaded", ours)


if __name__ == "__main__":
    {"base": phase_base, "ours": phase_ours}[sys.argv[1] if len(sys.argv) > 1 else "base"]()
