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

Phase `gguf` (after `base`): tests/fixtures/tiny-llama-q8_0.gguf, the same tiny model written with the
`gguf` package as llama.cpp's converter writes a Llama (q/k rows permuted per head, Q8_0 projections,
F32 norms, the gpt2 tokenizer and chat template in the metadata), without llama3 rope scaling (a GGUF
file does not carry its parameters), and tests/fixtures/gguf-reference.safetensors: what transformers
computes from that file (dequantized): base logits, and the token ids of TOKENIZER_PROBE.

Phase `gguf-ours` (after `trainer-svc train --base tests/fixtures/tiny-llama-q8_0.gguf ... --output
tests/fixtures/ours-gguf-run`): PEFT loads OUR adapter on transformers' dequantized weights of the GGUF
file; its logits go to tests/fixtures/ours-gguf-reference.safetensors.

Phase `qwen3` (after `base`): tests/fixtures/tiny-qwen3/, a tiny random Qwen3 with tiny-llama's
tokenizer, and qwen3-reference.safetensors + qwen3-peft-adapter/ as `base` writes them for the
Llama. Phase `qwen3-ours` (after our trainer wrote tests/fixtures/ours-qwen3-run): as `ours`.

Phase `qwen3-gguf` (after `qwen3`): tests/fixtures/tiny-qwen3-q8_0.gguf, tiny-qwen3 as the converter
writes a Qwen3, and qwen3-gguf-reference.safetensors (logits of its dequantized weights); phase
`qwen3-gguf-ours` (after our trainer wrote tests/fixtures/ours-qwen3-gguf-run from that file): as
`gguf-ours`.

Usage: python trainer-svc/reference/make_fixtures.py
  base|ours|gguf|gguf-ours|qwen3|qwen3-ours|qwen3-gguf|qwen3-gguf-ours
(transformers 5.23.0, peft 0.21.2, gguf, torch 2.15.0 on CPU: see tests/fixtures/README.md)
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


# What the tiny Llama and the tiny Qwen3 share: the sizes, GQA 4/2 and the special token ids.
TINY_SHAPE = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=4,
    pad_token_id=1,
    attn_implementation="eager",
)


def make_model(vocab):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        **TINY_SHAPE,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
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
    )
    return perturbed(LlamaForCausalLM, config)


def perturbed(cls, config):
    """The model, seeded. transformers' init (std 0.02, norms at 1) makes every logit near zero;
    larger weights and uneven norms make a wrong formula visible."""
    torch.manual_seed(0)
    model = cls(config).eval()
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


def write_reference(model, reference, adapter):
    """Base logits, and for a PEFT adapter with fixed non-zero B its logits, loss and LoRA
    gradients, to `reference`; the adapter itself to `adapter`. Returns the loss."""
    from peft import LoraConfig, get_peft_model

    ids = fixed_ids(model.config.vocab_size)
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
    save_file({k: v.contiguous() for k, v in out.items()}, reference)
    if os.path.exists(adapter):
        shutil.rmtree(adapter)
    peft_model.save_pretrained(adapter)
    os.remove(os.path.join(adapter, "README.md"))  # a generated model card, not needed
    return loss


def phase_base():
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

    loss = write_reference(model, os.path.join(FIX, "reference.safetensors"), os.path.join(FIX, "peft-adapter"))
    print("wrote", MODEL, "vocab", vocab, "loss", float(loss))


def phase_ours(model_dir=MODEL, run="ours-run", reference="ours-reference.safetensors"):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ours = os.path.join(FIX, run, "adapter")
    base = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = fixed_ids(base.config.vocab_size)
    model = PeftModel.from_pretrained(base, ours).eval()
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        merged_logits = merged(input_ids=ids).logits
    save_file({"input_ids": ids.to(torch.int64), "adapter_logits": adapter_logits.contiguous(),
               "merged_logits": merged_logits.contiguous()}, os.path.join(FIX, reference))
    print("PEFT loaded", ours)


GGUF = os.path.join(FIX, "tiny-llama-q8_0.gguf")
# No digits: transformers' GGUF converter splits numbers as GPT-2 does (` ?\p{N}+`), mistral.rs one
# digit at a time; the trainer follows mistral.rs, which serves the student (see tests/gguf_base.rs).
TOKENIZER_PROBE = "Customer's order is late!\n  Agent: <|eot_id|> refunded, thanks."


def write_gguf(model_dir, path, arch):
    """`model_dir` as llama.cpp's converter writes it: a Llama's q/k rows permuted per head (a
    Qwen3's not), Q8_0 projections, F32 norms, the gpt2 tokenizer and chat template in the
    metadata. Returns the token list."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    added = {t["id"]: t["content"] for t in tok["added_tokens"]}
    tokens = [added.get(i, t) for i, (t, _) in enumerate(vocab)] + [added[i] for i in sorted(added) if i >= len(vocab)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg["head_dim"])
    if arch == "qwen3":  # head_dim set apart from hidden / heads, as the converter writes it
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|eot_id|>"))
    w.add_pad_token_id(tokens.index("<|end_of_text|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def permute(t, n):  # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute
        return t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    for name, t in sorted(load_file(os.path.join(model_dir, "model.safetensors")).items()):
        data = t.float().numpy()
        out = GGUF_NAMES[name] if name in GGUF_NAMES else gguf_layer_name(name)
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = permute(data, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = permute(data, kv_heads)
        if data.ndim == 2:
            q = gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(out, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(out, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens


GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
GGUF_PARTS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_layer_name(name):
    layer, rest = name[len("model.layers."):].split(".", 1)
    return f"blk.{layer}.{GGUF_PARTS[rest[: -len('.weight')]]}.weight"


def phase_gguf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokens = write_gguf(MODEL, GGUF, "llama")
    model = AutoModelForCausalLM.from_pretrained(FIX, gguf_file=os.path.basename(GGUF), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(FIX, gguf_file=os.path.basename(GGUF))
    ids = fixed_ids(len(tokens))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    probe = torch.tensor(tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"], dtype=torch.int64)
    save_file({"input_ids": ids.to(torch.int64), "base_logits": logits.contiguous(), "probe_ids": probe},
              os.path.join(FIX, "gguf-reference.safetensors"))
    print("wrote", GGUF, "probe", probe.tolist())


def write_adapter_logits(base, run, reference):
    """PEFT loads OUR adapter (tests/fixtures/<run>/adapter) on `base`; its logits go to
    tests/fixtures/<reference>."""
    from peft import PeftModel

    ours = os.path.join(FIX, run, "adapter")
    ids = fixed_ids(base.config.vocab_size)
    model = PeftModel.from_pretrained(base, ours).eval()
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits
    save_file({"input_ids": ids.to(torch.int64), "adapter_logits": adapter_logits.contiguous()},
              os.path.join(FIX, reference))
    print("PEFT loaded", ours)


def phase_gguf_ours():
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(FIX, gguf_file=os.path.basename(GGUF), attn_implementation="eager").eval()
    write_adapter_logits(base, "ours-gguf-run", "ours-gguf-reference.safetensors")


QWEN3 = os.path.join(FIX, "tiny-qwen3")


def phase_qwen3():
    """A tiny random Qwen3 (q/k head norms, head_dim 16 set apart from hidden 32 / 4 heads, GQA
    4/2, tied embeddings, plain rope at theta 1e6) with tiny-llama's tokenizer and template, and
    its reference logits, loss, gradients and PEFT adapter (after `base`)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if os.path.exists(QWEN3):
        shutil.rmtree(QWEN3)
    os.makedirs(QWEN3)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(MODEL, f), QWEN3)
    with open(os.path.join(MODEL, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    config = Qwen3Config(
        vocab_size=vocab,
        **TINY_SHAPE,
        head_dim=16,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
    )
    model = perturbed(Qwen3ForCausalLM, config)
    model.save_pretrained(QWEN3, safe_serialization=True)
    loss = write_reference(model, os.path.join(FIX, "qwen3-reference.safetensors"),
                           os.path.join(FIX, "qwen3-peft-adapter"))
    print("wrote", QWEN3, "loss", float(loss))


def phase_qwen3_ours():
    phase_ours(QWEN3, "ours-qwen3-run", "ours-qwen3-reference.safetensors")


QWEN3_GGUF = os.path.join(FIX, "tiny-qwen3-q8_0.gguf")


def dequantized_qwen3():
    """tiny-qwen3 with the weights of QWEN3_GGUF, dequantized by the gguf package (llama.cpp's
    own Python reader): transformers' GGUF loader maps no head_dim for qwen3 (it would take
    Qwen3Config's default 128), so the weights go into the directory's model instead."""
    import gguf
    from transformers import AutoModelForCausalLM

    hf = {v: k for k, v in GGUF_NAMES.items()}
    parts = {v: k for k, v in GGUF_PARTS.items()}
    state = {}
    for t in gguf.GGUFReader(QWEN3_GGUF).tensors:
        if t.name in hf:
            name = hf[t.name]
        else:
            _, layer, part, _ = t.name.split(".")
            name = f"model.layers.{layer}.{parts[part]}.weight"
        state[name] = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).float()
    model = AutoModelForCausalLM.from_pretrained(QWEN3, attn_implementation="eager").eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "tied"
    return model


def phase_qwen3_gguf():
    """tests/fixtures/tiny-qwen3-q8_0.gguf (after `qwen3`): tiny-qwen3 as llama.cpp's converter
    writes a Qwen3 (`qwen3.*` keys with key_length, attn_q_norm/attn_k_norm, no q/k permutation,
    no output.weight: tied), and qwen3-gguf-reference.safetensors: transformers' logits from the
    dequantized weights."""
    write_gguf(QWEN3, QWEN3_GGUF, "qwen3")
    model = dequantized_qwen3()
    ids = fixed_ids(model.config.vocab_size)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    save_file({"input_ids": ids.to(torch.int64), "base_logits": logits.contiguous()},
              os.path.join(FIX, "qwen3-gguf-reference.safetensors"))
    print("wrote", QWEN3_GGUF)


def phase_qwen3_gguf_ours():
    """After `trainer-svc train --base tests/fixtures/tiny-qwen3-q8_0.gguf ... --output
    tests/fixtures/ours-qwen3-gguf-run`: PEFT loads our adapter on the dequantized weights."""
    write_adapter_logits(dequantized_qwen3(), "ours-qwen3-gguf-run", "ours-qwen3-gguf-reference.safetensors")


if __name__ == "__main__":
    {"base": phase_base, "ours": phase_ours, "gguf": phase_gguf, "gguf-ours": phase_gguf_ours,
     "qwen3": phase_qwen3, "qwen3-ours": phase_qwen3_ours, "qwen3-gguf": phase_qwen3_gguf,
     "qwen3-gguf-ours": phase_qwen3_gguf_ours}[sys.argv[1] if len(sys.argv) > 1 else "base"]()
