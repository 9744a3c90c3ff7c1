//! A GGUF file as the student's base, against transformers + peft on the same file
//! (fixtures from reference/make_fixtures.py `gguf` and `gguf-ours`): the dequantized weights
//! give transformers' logits, the tokenizer rebuilt from the metadata gives its token ids, PEFT
//! loads our adapter on those weights with our logits, and the merged export is a Hugging Face
//! directory that loads again with the same logits. Both families: a Llama file (q/k rows
//! permuted by the converter) and a Qwen3 one (`qwen3-gguf` phases: q/k head norms, head_dim set
//! apart, tied embeddings, nothing permuted). The student written back as GGUF
//! (`write_gguf`) reads back with the merged folder's logits, and llama.cpp continues it greedy
//! as the trainer's own forward pass does.

use std::path::{Path, PathBuf};

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use trainer_svc::lora::ForwardCtx;
use trainer_svc::lora::peft::load_adapter;
use trainer_svc::model::gguf::{GgufFile, GgufQuant, write_gguf};
use trainer_svc::model::{Architecture, BaseModel, Llama, LoadOptions};
use trainer_svc::train::data::ChatFormat;

const TOL: f32 = 1e-4;
/// The string whose token ids transformers wrote into the fixture (make_fixtures.py). It has no
/// digits: transformers splits a number as GPT-2 does, mistral.rs (and so this trainer, which
/// must train on the ids the editor will serve) one digit at a time; the real-model test in
/// arf/tests/arf/real_model.rs compares the trainer with mistral.rs itself.
const TOKENIZER_PROBE: &str = "Customer's order is late!\n  Agent: <|eot_id|> refunded, thanks.";

fn gguf() -> PathBuf {
    LLAMA.gguf()
}

/// One family's GGUF base and the fixtures made from it.
struct GgufFamily {
    architecture: Architecture,
    file: &'static str,
    reference: &'static str,
    ours_run: &'static str,
    ours_reference: &'static str,
}

impl GgufFamily {
    fn gguf(&self) -> PathBuf {
        fixtures().join(self.file)
    }
}

const LLAMA: GgufFamily = GgufFamily {
    architecture: Architecture::Llama,
    file: "tiny-llama-q8_0.gguf",
    reference: "gguf-reference.safetensors",
    ours_run: "ours-gguf-run",
    ours_reference: "ours-gguf-reference.safetensors",
};

const QWEN3: GgufFamily = GgufFamily {
    architecture: Architecture::Qwen3,
    file: "tiny-qwen3-q8_0.gguf",
    reference: "qwen3-gguf-reference.safetensors",
    ours_run: "ours-qwen3-gguf-run",
    ours_reference: "ours-qwen3-gguf-reference.safetensors",
};

fn ids(reference: &std::collections::HashMap<String, Tensor>) -> Tensor {
    reference["input_ids"].to_dtype(DType::U32).unwrap()
}

#[test]
fn dequantized_gguf_logits_match_transformers() {
    dequantized_logits_match(&LLAMA);
}

#[test]
fn qwen3_dequantized_gguf_logits_match_transformers() {
    dequantized_logits_match(&QWEN3);
}

fn dequantized_logits_match(family: &GgufFamily) {
    let gguf = family.gguf();
    let reference = load(family.reference);
    assert_eq!(
        BaseModel::resolve(&gguf).unwrap(),
        BaseModel::Gguf(gguf.clone())
    );
    let model = Llama::load(&gguf, &LoadOptions::default(), &Device::Cpu).unwrap();
    assert_eq!(model.cfg.architecture, family.architecture);
    // The Llama fixture has output.weight; the Qwen3 one ties it to the embeddings.
    assert_eq!(
        model.cfg.tie_word_embeddings,
        family.architecture == Architecture::Qwen3
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
    peft_loads_our_adapter(&LLAMA);
}

#[test]
fn qwen3_peft_loads_our_gguf_adapter_and_the_merged_export_matches() {
    peft_loads_our_adapter(&QWEN3);
}

fn peft_loads_our_adapter(family: &GgufFamily) {
    let gguf = family.gguf();
    let reference = load(family.ours_reference);
    let ids = ids(&reference);
    let (config, adapter) = load_adapter(
        &fixtures().join(family.ours_run).join("adapter"),
        &Device::Cpu,
    )
    .unwrap();
    let spec = config.spec().unwrap();
    let opts = LoadOptions {
        lora: Some(spec.clone()),
        ..Default::default()
    };
    let model = Llama::load(&gguf, &opts, &Device::Cpu).unwrap();
    model.set_lora(&adapter).unwrap();
    let logits = model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = max_abs_diff(&logits, &reference["adapter_logits"]);
    assert!(
        diff <= TOL,
        "adapter logits vs PEFT on the dequantized GGUF: {diff}"
    );
    let base = Llama::load(&gguf, &LoadOptions::default(), &Device::Cpu).unwrap();
    assert!(
        max_abs_diff(
            &logits,
            &base.forward(&ids, &mut ForwardCtx::eval()).unwrap()
        ) > 1e-2,
        "the adapter matters"
    );

    let out = tempfile::tempdir().unwrap();
    let merged = merged_student(family.file, family.ours_run, out.path());
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
    assert_eq!(
        config["architectures"][0],
        family.architecture.hf_class(),
        "{config}"
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
    let merged_logits = merged_model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = max_abs_diff(&merged_logits, &reference["adapter_logits"]);
    assert!(diff <= TOL, "merged export vs PEFT: {diff}");

    // The student as one GGUF file reads back as the family it came from, with the merged
    // folder's logits up to its encoding's rounding (measured: f16 0.022 Llama / 0.0075 Qwen3,
    // q8_0 0.23 / 0.12, on logits of a few units).
    for (quant, tol) in [(GgufQuant::F16, 0.05), (GgufQuant::Q8_0, 0.5)] {
        let file = out.path().join(format!("student-{quant:?}.gguf"));
        write_gguf(&merged, &gguf, quant, &file).unwrap();
        assert_eq!(
            GgufFile::open(&file).unwrap().architecture().unwrap(),
            family.architecture
        );
        let back = Llama::load(&file, &LoadOptions::default(), &Device::Cpu).unwrap();
        let diff = max_abs_diff(
            &back.forward(&ids, &mut ForwardCtx::eval()).unwrap(),
            &merged_logits,
        );
        assert!(
            diff <= tol,
            "{:?} {quant:?} export vs the merged folder: {diff}",
            family.architecture
        );
    }
    // The exported tokenizer is the one trained on.
    let from_dir = ChatFormat::for_base(&merged).unwrap();
    let from_gguf = ChatFormat::for_base(&gguf).unwrap();
    assert_eq!(
        from_dir.encode_text(TOKENIZER_PROBE).unwrap(),
        from_gguf.encode_text(TOKENIZER_PROBE).unwrap()
    );
}

/// The merged student of a committed adapter (`run`, trained by our trainer from `base`),
/// written under `dir`.
fn merged_student(base: &str, run: &str, dir: &Path) -> PathBuf {
    let (config, adapter) =
        load_adapter(&fixtures().join(run).join("adapter"), &Device::Cpu).unwrap();
    let spec = config.spec().unwrap();
    trainer_svc::lora::peft::write_merged(
        &fixtures().join(base),
        &adapter,
        &spec,
        &dir.join("merged"),
    )
    .unwrap()
}

/// A student of each family from each kind of base (a GGUF file: its metadata carried over; a
/// Hugging Face folder: metadata written as llama.cpp's converter would, Llama 3.1's rope
/// scaling as `rope_freqs`), as the committed adapters make them.
const STUDENTS: [(&str, &str); 4] = [
    ("tiny-llama-q8_0.gguf", "ours-gguf-run"),
    ("tiny-qwen3-q8_0.gguf", "ours-qwen3-gguf-run"),
    ("tiny-llama", "ours-run"),
    ("tiny-qwen3", "ours-qwen3-run"),
];

/// llama.cpp (its llama-server, built from the llama-cpp-python sdist as the speed bench builds
/// it) serves each exported student and continues a prompt, greedy, with the tokens the
/// trainer's forward pass on the merged folder picks; for a Hugging Face base it also splits
/// text into the ids the folder's tokenizer gives (the pre-tokenizer named right).
#[test]
fn llama_cpp_continues_our_exported_students_as_the_trainer_does() {
    const NEW_TOKENS: usize = 8;
    const PROBE: &str = "Customer's order is late!\n  Agent: refunded 3 times, thanks.";
    for (base, run) in STUDENTS {
        let dir = tempfile::tempdir().unwrap();
        let merged = merged_student(base, run, dir.path());
        let file = dir.path().join("student-f16.gguf");
        write_gguf(&merged, &fixtures().join(base), GgufQuant::F16, &file).unwrap();
        let format = ChatFormat::for_base(&merged).unwrap();
        let prompt = format
            .encode_text("Customer's order is late! Agent:")
            .unwrap();

        let model = Llama::load(&merged, &LoadOptions::default(), &Device::Cpu).unwrap();
        let mut ours = prompt.clone();
        for _ in 0..NEW_TOKENS {
            let input = Tensor::new(ours.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = model.forward(&input, &mut ForwardCtx::eval()).unwrap();
            let last = logits.squeeze(0).unwrap().get(ours.len() - 1).unwrap();
            ours.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
        }
        let llama_cpp = ask_llama_cpp(&file, &prompt, NEW_TOKENS, PROBE);
        assert_eq!(
            llama_cpp.continuation,
            ours[prompt.len()..],
            "{base}: llama.cpp's greedy tokens against the trainer's"
        );
        if !base.ends_with(".gguf") {
            assert_eq!(
                llama_cpp.probe_ids,
                format.encode_text(PROBE).unwrap(),
                "{base}: llama.cpp's tokens of the probe"
            );
        }
    }
}

/// What llama-server said of a student.
struct LlamaCppAnswers {
    /// Its greedy continuation of the prompt.
    continuation: Vec<u32>,
    /// Its tokens of the probe text.
    probe_ids: Vec<u32>,
}

/// Asks llama-server, serving `gguf`, for the `n` tokens that continue `prompt` greedy (end of
/// text ignored) and for its tokens of `probe`.
fn ask_llama_cpp(gguf: &Path, prompt: &[u32], n: usize, probe: &str) -> LlamaCppAnswers {
    use arf_common::llama_cpp::LlamaServer;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = LlamaServer::start(gguf, 1).await.unwrap();
        let native = server.base_url().trim_end_matches("/v1").to_string();
        let post = async |path: &str, body: serde_json::Value| -> serde_json::Value {
            reqwest::Client::new()
                .post(format!("{native}/{path}"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        };
        let completion = post(
            "completion",
            serde_json::json!({
                "prompt": prompt, "n_predict": n, "temperature": 0.0, "top_k": 1,
                "ignore_eos": true, "return_tokens": true, "cache_prompt": false,
            }),
        )
        .await;
        let tokenized = post("tokenize", serde_json::json!({ "content": probe })).await;
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
        };
        LlamaCppAnswers {
            continuation: ids(&completion["tokens"]),
            probe_ids: ids(&tokenized["tokens"]),
        }
    })
}

#[test]
fn a_base_that_is_neither_a_directory_nor_a_gguf_file_is_refused() {
    let err = BaseModel::resolve(&fixtures().join("train.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither"), "{err}");
}
