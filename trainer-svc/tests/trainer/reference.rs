//! Our Llama and LoRA against transformers + peft (fixtures from reference/make_fixtures.py),
//! and the same checks on a Qwen3 (the same model with q/k head norms and a head size of its
//! own, tied embeddings).

use std::path::PathBuf;

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use trainer_svc::lora::ForwardCtx;
use trainer_svc::lora::peft::load_adapter;
use trainer_svc::model::{Llama, LoadOptions};

const TOL: f32 = 1e-4;

fn ids(reference: &std::collections::HashMap<String, Tensor>) -> Tensor {
    reference["input_ids"].to_dtype(DType::U32).unwrap()
}

/// One family's fixtures: the model, transformers' and PEFT's outputs on it, PEFT's adapter,
/// and our trainer's adapter with PEFT's outputs for it.
struct Family {
    model: PathBuf,
    reference: &'static str,
    peft_adapter: &'static str,
    ours_run: &'static str,
    ours_reference: &'static str,
}

fn llama() -> Family {
    Family {
        model: tiny_llama(),
        reference: "reference.safetensors",
        peft_adapter: "peft-adapter",
        ours_run: "ours-run",
        ours_reference: "ours-reference.safetensors",
    }
}

fn qwen3() -> Family {
    Family {
        model: fixtures().join("tiny-qwen3"),
        reference: "qwen3-reference.safetensors",
        peft_adapter: "qwen3-peft-adapter",
        ours_run: "ours-qwen3-run",
        ours_reference: "ours-qwen3-reference.safetensors",
    }
}

#[test]
fn base_logits_match_transformers() {
    base_logits_match(llama());
}

#[test]
fn qwen3_base_logits_match_transformers() {
    base_logits_match(qwen3());
}

#[test]
fn lora_logits_and_gradients_match_peft() {
    lora_logits_and_gradients_match(llama());
}

#[test]
fn qwen3_lora_logits_and_gradients_match_peft() {
    lora_logits_and_gradients_match(qwen3());
}

#[test]
fn peft_loads_our_adapter_and_our_merge_matches_peft_merge() {
    peft_loads_our_adapter(llama());
}

#[test]
fn qwen3_peft_loads_our_adapter_and_our_merge_matches_peft_merge() {
    peft_loads_our_adapter(qwen3());
}

fn base_logits_match(family: Family) {
    let reference = load(family.reference);
    let model = Llama::load(&family.model, &LoadOptions::default(), &Device::Cpu).unwrap();
    let logits = model
        .forward(&ids(&reference), &mut ForwardCtx::eval())
        .unwrap();
    let diff = max_abs_diff(&logits, &reference["base_logits"]);
    assert!(diff <= TOL, "max abs diff {diff}");
    // The logits are not trivially small: a wrong formula would show.
    let scale = reference["base_logits"]
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .mean_all()
        .unwrap();
    assert!(scale.to_scalar::<f32>().unwrap() > 0.5);
}

fn lora_logits_and_gradients_match(family: Family) {
    let reference = load(family.reference);
    let (config, adapter) =
        load_adapter(&fixtures().join(family.peft_adapter), &Device::Cpu).unwrap();
    let spec = config.spec().unwrap();
    assert_eq!(
        (spec.rank, spec.alpha, spec.target_modules.len()),
        (4, 12.0, 7)
    );
    let opts = LoadOptions {
        lora: Some(spec),
        ..Default::default()
    };
    let model = Llama::load(&family.model, &opts, &Device::Cpu).unwrap();
    model.set_lora(&adapter).unwrap();

    let ids = ids(&reference);
    let hidden = model.forward_hidden(&ids, &mut ForwardCtx::eval()).unwrap();
    let logits = model.logits(&hidden).unwrap();
    let diff = max_abs_diff(&logits, &reference["lora_logits"]);
    assert!(diff <= TOL, "lora logits: max abs diff {diff}");

    // The fixture's loss: positions 5..=9 of each row predict tokens 6..=10 (mean over them).
    let (b, s) = ids.dims2().unwrap();
    let rows: Vec<u32> = (0..b)
        .flat_map(|i| (5..s - 1).map(move |p| (i * s + p) as u32))
        .collect();
    let targets: Vec<u32> = (0..b)
        .flat_map(|i| (6..s).map(move |p| (i, p)))
        .map(|(i, p)| {
            ids.get(i)
                .unwrap()
                .get(p)
                .unwrap()
                .to_scalar::<u32>()
                .unwrap()
        })
        .collect();
    let n = rows.len();
    let picked = hidden
        .reshape((b * s, ()))
        .unwrap()
        .index_select(&Tensor::new(rows, &Device::Cpu).unwrap(), 0)
        .unwrap();
    // Through the trainer's loss (on the CPU, the fused output layer and cross-entropy).
    let loss = (model
        .loss_sum(&picked, &Tensor::new(targets, &Device::Cpu).unwrap())
        .unwrap()
        / n as f64)
        .unwrap();
    let want = reference["loss"].to_vec1::<f32>().unwrap()[0];
    assert!((loss.to_scalar::<f32>().unwrap() - want).abs() <= TOL);

    let grads = loss.backward().unwrap();
    let vars = model.lora_vars();
    assert_eq!(vars.len(), 2 * 7 * 2);
    for (name, var) in vars {
        let want = &reference[&format!("grad.{name}")];
        let got = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let diff = max_abs_diff(got, want);
        assert!(diff <= TOL, "{name}: max abs diff {diff}");
        let norm = want
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 1e-6,
            "{name}: the reference gradient is trivially zero"
        );
    }
}

/// PEFT loaded the adapter our writer produced (tests/fixtures/ours-run, see
/// reference/make_fixtures.py `ours`): its logits, and those of its `merge_and_unload`, must
/// equal ours; and our writer must still write that same adapter.
fn peft_loads_our_adapter(family: Family) {
    let reference = load(family.ours_reference);
    let ids = ids(&reference);
    let adapter_dir = fixtures().join(family.ours_run).join("adapter");
    let (config, adapter) = load_adapter(&adapter_dir, &Device::Cpu).unwrap();
    let spec = config.spec().unwrap();
    assert_eq!(
        spec.target_modules,
        ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    );
    let opts = LoadOptions {
        lora: Some(spec.clone()),
        ..Default::default()
    };
    let model = Llama::load(&family.model, &opts, &Device::Cpu).unwrap();
    model.set_lora(&adapter).unwrap();
    let logits = model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = max_abs_diff(&logits, &reference["adapter_logits"]);
    assert!(diff <= TOL, "adapter logits vs PEFT: {diff}");
    // The adapter really changes the model (else the comparison proves nothing).
    let base = Llama::load(&family.model, &LoadOptions::default(), &Device::Cpu).unwrap();
    let base_logits = base.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    assert!(max_abs_diff(&logits, &base_logits) > 1e-2);

    // Our writer reproduces the committed adapter exactly.
    let tmp = tempfile::tempdir().unwrap();
    trainer_svc::lora::peft::save_adapter(&model, &spec, &family.model, tmp.path()).unwrap();
    let (config2, adapter2) = load_adapter(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(config2.spec().unwrap(), spec);
    assert_eq!(adapter2.len(), adapter.len());
    for (name, t) in &adapter {
        assert_eq!(max_abs_diff(t, &adapter2[name]), 0.0, "{name}");
    }

    // Our merged directory, loaded as a plain model, equals PEFT's merge_and_unload.
    let merged = tmp.path().join("merged");
    trainer_svc::lora::peft::write_merged(&family.model, &adapter, &spec, &merged).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(merged.join(f).exists(), "{f} not copied");
    }
    let merged_model = Llama::load(&merged, &LoadOptions::default(), &Device::Cpu).unwrap();
    let merged_logits = merged_model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = max_abs_diff(&merged_logits, &reference["merged_logits"]);
    assert!(
        diff <= TOL,
        "merged logits vs PEFT merge_and_unload: {diff}"
    );
}
