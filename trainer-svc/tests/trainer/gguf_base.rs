//! A GGUF file as the student's base, against transformers + peft on the same file
//! (fixtures from reference/make_fixtures.py `gguf` and `gguf-ours`): the dequantized weights
//! give transformers' logits, the tokenizer rebuilt from the metadata gives its token ids, PEFT
//! loads our adapter on those weights with our logits, and the merged export is a Hugging Face
//! directory that loads again with the same logits.

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use trainer_svc::lora::ForwardCtx;
use trainer_svc::lora::peft::load_adapter;
use trainer_svc::model::{BaseModel, Llama, LoadOptions};
use trainer_svc::train::data::ChatFormat;

const TOL: f32 = 1e-4;
/// The string whose token ids transformers wrote into the fixture (make_fixtures.py). It has no
/// digits: transformers splits a number as GPT-2 does, mistral.rs (and so this trainer, which
/// must train on the ids the editor will serve) one digit at a time; the real-model test in
/// arf/tests/arf/real_model.rs compares the trainer with mistral.rs itself.
const TOKENIZER_PROBE: &str = "Customer's order is late!\n  Agent: <|eot_id|> refunded, thanks.";

fn gguf() -> std::path::PathBuf {
    fixtures().join("tiny-llama-q8_0.gguf")
}

fn ids(reference: &std::collections::HashMap<String, Tensor>) -> Tensor {
    reference["input_ids"].to_dtype(DType::U32).unwrap()
}

#[test]
fn dequantized_gguf_logits_match_transformers() {
    let reference = load("gguf-reference.safetensors");
    assert_eq!(
        BaseModel::resolve(&gguf()).unwrap(),
        BaseModel::Gguf(gguf())
    );
    let model = Llama::load(&gguf(), &LoadOptions::default(), &Device::Cpu).unwrap();
    assert!(
        !model.cfg.tie_word_embeddings,
        "the fixture has output.weight"
    );
    let logits = model
        .forward(&ids(&reference), &mut ForwardCtx::eval())
        .unwrap();
    let diff = max_abs_diff(&logits, &reference["base_logits"]);
    assert!(diff <= TOL, "max abs diff {diff}");
    let scale = reference["base_logits"]
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .mean_all()
        .unwrap();
    assert!(
        scale.to_scalar::<f32>().unwrap() > 0.5,
        "the logits are not trivially small"
    );
}

#[test]
fn the_gguf_tokenizer_gives_transformers_token_ids() {
    let reference = load("gguf-reference.safetensors");
    let want: Vec<u32> = reference["probe_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let format = ChatFormat::for_base(&gguf()).unwrap();
    assert_eq!(format.encode_text(TOKENIZER_PROBE).unwrap(), want);
    // The chat template came from the metadata: the special tokens frame the turn.
    let text = format
        .render(&[("user", "hello".to_string())], true)
        .unwrap();
    assert!(
        text.starts_with("<|begin_of_text|><|start_header_id|>user"),
        "{text}"
    );
}

/// tests/fixtures/ours-gguf-run/adapter was trained by our trainer from the GGUF file;
/// PEFT loaded it onto transformers' dequantization of that same file.
#[test]
fn peft_loads_our_gguf_adapter_and_the_merged_export_matches() {
    let reference = load("ours-gguf-reference.safetensors");
    let ids = ids(&reference);
    let (config, adapter) =
        load_adapter(&fixtures().join("ours-gguf-run/adapter"), &Device::Cpu).unwrap();
    let spec = config.spec().unwrap();
    let opts = LoadOptions {
        lora: Some(spec.clone()),
        ..Default::default()
    };
    let model = Llama::load(&gguf(), &opts, &Device::Cpu).unwrap();
    model.set_lora(&adapter).unwrap();
    let logits = model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = max_abs_diff(&logits, &reference["adapter_logits"]);
    assert!(
        diff <= TOL,
        "adapter logits vs PEFT on the dequantized GGUF: {diff}"
    );
    let base = Llama::load(&gguf(), &LoadOptions::default(), &Device::Cpu).unwrap();
    assert!(
        max_abs_diff(
            &logits,
            &base.forward(&ids, &mut ForwardCtx::eval()).unwrap()
        ) > 1e-2,
        "the adapter matters"
    );

    let out = tempfile::tempdir().unwrap();
    let merged =
        trainer_svc::lora::peft::write_merged(&gguf(), &adapter, &spec, &out.path().join("merged"))
            .unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(
            merged.join(f).is_file(),
            "{f} missing from the merged export"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert!(
        config["rope_theta"].is_number(),
        "the released layout, which mistral.rs reads: {config}"
    );
    let tc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(merged.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert!(
        tc["chat_template"]
            .as_str()
            .is_some_and(|t| t.contains("start_header_id"))
    );
    let merged_model = Llama::load(&merged, &LoadOptions::default(), &Device::Cpu).unwrap();
    let diff = max_abs_diff(
        &merged_model.forward(&ids, &mut ForwardCtx::eval()).unwrap(),
        &reference["adapter_logits"],
    );
    assert!(diff <= TOL, "merged export vs PEFT: {diff}");
    // The exported tokenizer is the one trained on.
    let from_dir = ChatFormat::for_base(&merged).unwrap();
    let from_gguf = ChatFormat::for_base(&gguf()).unwrap();
    assert_eq!(
        from_dir.encode_text(TOKENIZER_PROBE).unwrap(),
        from_gguf.encode_text(TOKENIZER_PROBE).unwrap()
    );
}

#[test]
fn a_base_that_is_neither_a_directory_nor_a_gguf_file_is_refused() {
    let err = BaseModel::resolve(&fixtures().join("train.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither"), "{err}");
}
