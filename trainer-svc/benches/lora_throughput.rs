//! LoRA training throughput on CPU: our candle trainer vs PyTorch + PEFT on the same model
//! directory and the same steps (forward, loss, backward, clip, AdamW).
//!
//! `cargo bench --profile dev -p trainer-svc --bench lora_throughput` (the PyTorch side runs
//! `reference/bench_peft.py` with `$ARF_BENCH_PYTHON`, default /work/pyenv/bin/python; it is
//! skipped when that interpreter is missing). Each side runs in its own process, so each peak
//! RSS (VmHWM) is its own.
//!
//! Two random-weight shapes, then the real model: SmolLM2-135M-Instruct from its GGUF
//! (`ARF_BENCH_MODEL`, default the copy `scripts/fetch-model.sh smollm2` caches; the row is
//! skipped when it is missing), dequantized once to an f32 Hugging Face directory that both sides
//! load, at the settings of the real-model runs: LoRA r=8, batch 1, 384 tokens. Its second row,
//! `smollm2-48`, takes the loss on the last 48 positions only, as a real job does (a conversation,
//! then the summary the loss is on): the trainer computes logits only there, where PyTorch, as
//! transformers' causal-LM forward does, computes them at every position and ignores the masked
//! ones (label -100).
//!
//! Three sides per row, taking turns `ARF_BENCH_RUNS` times (default 1), medians reported: ours with the fused CPU kernels, ours with `ARF_TRAINER_KERNELS=formulas`
//! (the candle-op path, before the kernels), and PyTorch. Each side's GFLOP/s counts the same
//! analytic FLOPs per token ([`flop_per_token`]); the share is of the FMA peak measured here.
//!
//! Where the CPU multiplies bf16 natively (AMX, AVX512-BF16; `ARF_BENCH_BF16=0|1` decides
//! otherwise), two more sides: ours with the base in bf16 (`base_dtype = "bf16"`: its products
//! in bf16) and PyTorch under its CPU autocast, with each side's last loss beside its f32 run's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use trainer_svc::lora::{ForwardCtx, LoraSpec};
use trainer_svc::model::fused::threads;
use trainer_svc::model::{Llama, LoadOptions};
use trainer_svc::train::optim::{AdamW, AdamWParams, clip_global_norm};

struct Shape {
    name: &'static str,
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    batch: usize,
    seq: usize,
    /// Qwen3's layout (q/k head norms, plain rope) instead of Llama 3.1's.
    qwen3: bool,
}

/// One row of the table: a model directory both sides train, and the settings.
struct Case {
    name: String,
    dir: PathBuf,
    batch: usize,
    seq: usize,
    rank: usize,
    /// Positions whose next token carries the loss, counted from the end; 0: every position.
    /// A real job's example is a conversation, then the summary the loss is on.
    loss_on_last: usize,
}

/// The 19M Llama shape; its Qwen3 row differs only in `qwen3`.
const SMALL_19M: Shape = Shape {
    name: "small-19M",
    vocab: 8192,
    hidden: 384,
    inter: 1024,
    layers: 8,
    heads: 6,
    kv: 2,
    batch: 4,
    seq: 128,
    qwen3: false,
};
const SHAPES: [Shape; 3] = [
    Shape {
        name: "tiny",
        vocab: 384,
        hidden: 32,
        inter: 64,
        layers: 2,
        heads: 4,
        kv: 2,
        batch: 4,
        seq: 64,
        qwen3: false,
    },
    SMALL_19M,
    // The same size as Qwen3: one more fused op per head (the q/k norms).
    Shape {
        name: "qwen3-19M",
        qwen3: true,
        ..SMALL_19M
    },
];
/// Rank on the random shapes; the real model uses the real runs' rank.
const RANK: usize = 16;
const REAL_RANK: usize = 8;
const REAL_SEQ: usize = 384;
/// A TweetSumm summary's tokens after its conversation (with the chat template's end): the real
/// jobs' share of positions with a loss, about one in eight.
const REAL_SUMMARY: usize = 48;
const WARMUP: usize = 2;
const STEPS: usize = 5;

fn write_model(s: &Shape, dir: &Path) -> candle_core::Result<()> {
    std::fs::create_dir_all(dir)?;
    let hd = s.hidden / s.heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": s.vocab,
        "hidden_size": s.hidden, "intermediate_size": s.inter, "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads, "num_key_value_heads": s.kv, "head_dim": hd, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048, "tie_word_embeddings": false, "hidden_act": "silu",
        "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 1024}, "torch_dtype": "float32"
    });
    let config = if s.qwen3 {
        let mut c = config;
        c["architectures"] = serde_json::json!(["Qwen3ForCausalLM"]);
        c["model_type"] = "qwen3".into();
        c["rope_theta"] = 1_000_000.0.into();
        c["rope_scaling"] = serde_json::Value::Null;
        c["use_sliding_window"] = false.into();
        c
    } else {
        config
    };
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let rnd = |shape: (usize, usize)| Tensor::randn(0f32, 0.02, shape, &dev);
    t.insert(
        "model.embed_tokens.weight".to_string(),
        rnd((s.vocab, s.hidden))?,
    );
    t.insert("lm_head.weight".to_string(), rnd((s.vocab, s.hidden))?);
    t.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(s.hidden, DType::F32, &dev)?,
    );
    for i in 0..s.layers {
        let p = format!("model.layers.{i}");
        for (n, shape) in [
            ("self_attn.q_proj", (s.heads * hd, s.hidden)),
            ("self_attn.k_proj", (s.kv * hd, s.hidden)),
            ("self_attn.v_proj", (s.kv * hd, s.hidden)),
            ("self_attn.o_proj", (s.hidden, s.heads * hd)),
            ("mlp.gate_proj", (s.inter, s.hidden)),
            ("mlp.up_proj", (s.inter, s.hidden)),
            ("mlp.down_proj", (s.hidden, s.inter)),
        ] {
            t.insert(format!("{p}.{n}.weight"), rnd(shape)?);
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            t.insert(
                format!("{p}.{n}.weight"),
                Tensor::ones(s.hidden, DType::F32, &dev)?,
            );
        }
        if s.qwen3 {
            for n in ["self_attn.q_norm", "self_attn.k_norm"] {
                t.insert(
                    format!("{p}.{n}.weight"),
                    Tensor::ones(hd, DType::F32, &dev)?,
                );
            }
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))
}

/// Runs our side in this process, the frozen base in `dtype`: tokens/s and the last step's loss.
fn ours(
    dir: &Path,
    batch: usize,
    seq: usize,
    rank: usize,
    loss_on_last: usize,
    dtype: DType,
) -> candle_core::Result<(f64, f64)> {
    let dev = Device::Cpu;
    let spec = LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        ..Default::default()
    };
    let model = Llama::load(
        dir,
        &LoadOptions {
            lora: Some(spec),
            dtype,
            ..Default::default()
        },
        &dev,
    )
    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let vars = model.lora_vars();
    let mut opt = AdamW::new(vars.clone(), AdamWParams::default())?;
    let vocab = model.cfg.vocab_size;
    let ids: Vec<u32> = (0..batch * seq)
        .map(|i| ((i * 7919) % vocab) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (batch, seq), &dev)?;
    let inputs = ids.narrow(1, 0, seq - 1)?;
    // The rows with a target, as the trainer's `batch_loss` picks them: logits only there.
    let skipped = if loss_on_last == 0 {
        0
    } else {
        seq - 1 - loss_on_last.min(seq - 1)
    };
    let rows: Vec<u32> = (0..batch)
        .flat_map(|b| (skipped..seq - 1).map(move |i| (b * (seq - 1) + i) as u32))
        .collect();
    let targets = ids
        .narrow(1, 1 + skipped, seq - 1 - skipped)?
        .flatten_all()?;
    let rows = Tensor::new(rows, &dev)?;
    let mut step = || -> candle_core::Result<f64> {
        let hidden = model.forward_hidden(&inputs, &mut ForwardCtx::eval())?;
        let n = targets.dim(0)?;
        let h = hidden.dim(2)?;
        let hidden = hidden
            .reshape((batch * (seq - 1), h))?
            .index_select(&rows, 0)?;
        let loss = (model.loss_sum(&hidden, &targets)? / n as f64)?;
        let store = loss.backward()?;
        let mut grads: Vec<Tensor> = vars
            .iter()
            .map(|(_, v)| {
                store
                    .get(v.as_tensor())
                    .cloned()
                    .unwrap_or(v.as_tensor().zeros_like().unwrap())
            })
            .collect();
        clip_global_norm(&mut grads, 1.0)?;
        opt.step(&grads, 1e-4)?;
        loss.to_scalar::<f32>().map(f64::from)
    };
    // As the trainer's loop: the worker threads held for each step (fused/threads.rs).
    for _ in 0..WARMUP {
        threads::hold(&mut step)?;
    }
    let t = Instant::now();
    let mut last_loss = f64::NAN;
    for _ in 0..STEPS {
        last_loss = threads::hold(&mut step)?;
    }
    Ok((
        (batch * seq * STEPS) as f64 / t.elapsed().as_secs_f64(),
        last_loss,
    ))
}

/// Whether to run the bf16 sides: where the CPU multiplies bf16 natively (AMX or
/// AVX512-BF16), unless `ARF_BENCH_BF16` says otherwise (`0` or `1`).
fn bf16_sides() -> bool {
    match std::env::var("ARF_BENCH_BF16").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => {
            #[cfg(target_arch = "x86_64")]
            let avx512_bf16 = std::arch::is_x86_feature_detected!("avx512bf16");
            #[cfg(not(target_arch = "x86_64"))]
            let avx512_bf16 = false;
            trainer_svc::model::fused::bf16::native() || avx512_bf16
        }
    }
}

/// FLOPs of one training token, the same count for both sides: the frozen matmuls forward and
/// their input gradients (2 x 2 x params; the lm_head's only at the positions with a loss),
/// attention over the whole sequence forward and backward (3 x 4 s d heads per layer), LoRA
/// forward and its three gradients (4 x 2 r (in+out)). This is the work the step needs: a side
/// that computes logits where no loss is taken does more than it counts.
fn flop_per_token(c: &trainer_svc::model::LlamaConfig, case: &Case) -> f64 {
    let (seq, rank) = (case.seq, case.rank);
    let with_loss = match case.loss_on_last {
        0 => 1.0,
        n => n.min(seq) as f64 / seq as f64,
    };
    let (h, hd) = (c.hidden_size, c.head_dim);
    let (q, kv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
    let io = [
        (h, q),
        (h, kv),
        (h, kv),
        (q, h),
        (h, c.intermediate_size),
        (h, c.intermediate_size),
        (c.intermediate_size, h),
    ];
    let layer_params: usize = io.iter().map(|(i, o)| i * o).sum();
    let layer_lora: usize = io.iter().map(|(i, o)| rank * (i + o)).sum();
    let layers = c.num_hidden_layers as f64;
    let frozen = (layer_params as f64 * layers + (h * c.vocab_size) as f64 * with_loss) * 2.0 * 2.0;
    let attention = 3.0 * 4.0 * (seq * hd * c.num_attention_heads) as f64 * layers;
    let lora = 4.0 * 2.0 * layer_lora as f64 * layers;
    frozen + attention + lora
}

/// The SmolLM2 GGUF, when it is here: `ARF_BENCH_MODEL`, or the model cache.
fn real_model() -> Option<PathBuf> {
    match std::env::var_os("ARF_BENCH_MODEL") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => arf_common::models::resolve("smollm2").ok(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: one case, our side only, so VmHWM is that run's own peak.
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let dir = PathBuf::from(&args[i + 1]);
        let [batch, seq, rank, loss_on_last] =
            [2, 3, 4, 5].map(|k| args[i + k].parse::<usize>().expect("a number"));
        let dtype = if args.get(i + 6).is_some_and(|d| d == "bf16") {
            DType::BF16
        } else {
            DType::F32
        };
        // As the trainer runs a job: on one worker, each step holding the others.
        match threads::on_one_worker(|| ours(&dir, batch, seq, rank, loss_on_last, dtype)) {
            Ok((tps, loss)) => println!(
                "{{\"tokens_per_second\": {tps}, \"peak_rss_mib\": {}, \"last_loss\": {loss}}}",
                arf_common::process::peak_rss_mib()
            ),
            Err(e) => println!("{{\"error\": \"{e}\"}}"),
        }
        return;
    }
    let python =
        std::env::var("ARF_BENCH_PYTHON").unwrap_or_else(|_| "/work/pyenv/bin/python".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/bench_peft.py");
    let tmp = std::env::temp_dir().join(format!("arf-lora-bench-{}", std::process::id()));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runs: usize = std::env::var("ARF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (peak, isa) = arf_common::machine_peak::fma_peak(threads);
    println!(
        "LoRA on q,k,v,o,gate,up,down; {WARMUP} warm-up + {STEPS} timed steps; f32; CPU; median of {runs} run(s) per side (ARF_BENCH_RUNS)"
    );
    println!("f32 FMA peak of {threads} threads ({isa}), measured: {peak:.0} GFLOP/s");
    println!(
        "{:<10} {:>9} {:>5} {:>7} {:>10} {:>9} {:>10} {:>10} {:>9} {:>7} {:>8} {:>8} {:>8}",
        "model",
        "params",
        "rank",
        "tokens",
        "ours tok/s",
        "ours MiB",
        "formulas",
        "torch tok/s",
        "torch MiB",
        "ratio",
        "ours GF/s",
        "torch GF/s",
        "GF/token"
    );
    let mut summary = Vec::new();
    let with_bf16 = bf16_sides();
    let mut bf16_rows = Vec::new();
    let mut cases = Vec::new();
    for s in &SHAPES {
        let dir = tmp.join(s.name);
        match write_model(s, &dir) {
            Ok(()) => cases.push(Case {
                name: s.name.into(),
                dir,
                batch: s.batch,
                seq: s.seq,
                rank: RANK,
                loss_on_last: 0,
            }),
            Err(e) => eprintln!("cannot write the {} model: {e}", s.name),
        }
    }
    match real_model() {
        Some(gguf) => {
            let dir = tmp.join("smollm2");
            match trainer_svc::model::gguf::write_dequantized(&gguf, &dir) {
                Ok(()) => {
                    for (name, loss_on_last) in [("smollm2", 0), ("smollm2-48", REAL_SUMMARY)] {
                        cases.push(Case {
                            name: name.into(),
                            dir: dir.clone(),
                            batch: 1,
                            seq: REAL_SEQ,
                            rank: REAL_RANK,
                            loss_on_last,
                        });
                    }
                }
                Err(e) => eprintln!("cannot dequantize {}: {e}", gguf.display()),
            }
        }
        None => eprintln!(
            "no SmolLM2 GGUF (run `bash scripts/fetch-model.sh smollm2`, or set ARF_BENCH_MODEL): its row is skipped"
        ),
    }
    for case in &cases {
        let dir = &case.dir;
        let run = |cmd: &mut Command| -> Option<serde_json::Value> {
            let out = cmd.output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
        };
        let exe = std::env::current_exe().expect("bench executable");
        let child = |kernels: &str, dtype: &str| {
            run(Command::new(&exe)
                .env("ARF_TRAINER_KERNELS", kernels)
                .args(["--child", &dir.display().to_string()])
                .args([case.batch, case.seq, case.rank, case.loss_on_last].map(|v| v.to_string()))
                .arg(dtype))
        };
        let torch_run = |dtype: &str| {
            if Path::new(&python).exists() {
                run(Command::new(&python)
                    .arg(&script)
                    .arg(dir)
                    .args([case.batch, case.seq, case.rank, WARMUP, STEPS].map(|v| v.to_string()))
                    .arg(dtype)
                    .arg(case.loss_on_last.to_string()))
            } else {
                None
            }
        };
        // The sides take turns, `runs` times; each figure is the median of its runs, so a burst
        // of noise from the machine's neighbours lands on every side alike.
        let (mut ours, mut formulas, mut torch) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_bf16, mut torch_bf16) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            ours.push(child("fused", "f32"));
            formulas.push(child("formulas", "f32"));
            torch.push(torch_run("f32"));
            if with_bf16 {
                ours_bf16.push(child("fused", "bf16"));
                torch_bf16.push(torch_run("bf16"));
            }
        }
        let get = |v: &[Option<serde_json::Value>], k: &str| {
            let mut xs: Vec<f64> = v
                .iter()
                .filter_map(|v| v.as_ref().and_then(|v| v[k].as_f64()))
                .collect();
            xs.sort_by(f64::total_cmp);
            xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let cfg = trainer_svc::model::LlamaConfig::from_dir(dir).ok();
        let params = cfg.as_ref().map(|c| c.num_parameters()).unwrap_or(0);
        let gflop = cfg
            .as_ref()
            .map(|c| flop_per_token(c, case) / 1e9)
            .unwrap_or(f64::NAN);
        let (ot, om, ft, tt, tm) = (
            get(&ours, "tokens_per_second"),
            get(&ours, "peak_rss_mib"),
            get(&formulas, "tokens_per_second"),
            get(&torch, "tokens_per_second"),
            get(&torch, "peak_rss_mib"),
        );
        println!(
            "{:<10} {:>8.1}M {:>5} {:>7} {:>10.0} {:>9.0} {:>10.0} {:>10.0} {:>9.0} {:>6.2}x {:>8.1} {:>8.1} {:>8.1}",
            case.name,
            params as f64 / 1e6,
            case.rank,
            case.batch * case.seq,
            ot,
            om,
            ft,
            tt,
            tm,
            ot / tt,
            ot * gflop,
            tt * gflop,
            gflop,
        );
        summary.push((case.name.clone(), ot * gflop, ft * gflop, tt * gflop));
        if with_bf16 {
            let (ob, tb) = (
                get(&ours_bf16, "tokens_per_second"),
                get(&torch_bf16, "tokens_per_second"),
            );
            bf16_rows.push(format!(
                "{:<10} {:>10.0} {:>10.0} {:>6.2}x {:>12.2}x {:>12.2}x {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                case.name,
                ob,
                tb,
                ob / tb,
                ob / ot,
                tb / tt,
                get(&ours, "last_loss"),
                get(&ours_bf16, "last_loss"),
                get(&torch, "last_loss"),
                get(&torch_bf16, "last_loss"),
            ));
        }
    }
    if with_bf16 {
        println!(
            "bf16 (ours: the frozen base in bf16, its products in bf16 with {}; torch: CPU autocast); \
             the loss of the last timed step beside each side's f32 run:",
            trainer_svc::model::fused::bf16::kernel()
        );
        println!(
            "{:<10} {:>10} {:>10} {:>7} {:>13} {:>13} {:>9} {:>9} {:>9} {:>9}",
            "model",
            "ours tok/s",
            "torch tok/s",
            "ratio",
            "ours/own f32",
            "torch/own f32",
            "ours f32",
            "ours bf16",
            "torch f32",
            "torch bf16"
        );
        for row in bf16_rows {
            println!("{row}");
        }
    }
    println!("share of the measured peak (whole training step):");
    for (name, ours, formulas, torch) in summary {
        println!(
            "  {name:<10} ours {:.1}%, formulas {:.1}%, torch {:.1}%",
            100.0 * ours / peak,
            100.0 * formulas / peak,
            100.0 * torch / peak
        );
    }
    // `ARF_BENCH_KEEP_MODELS=1` keeps the model directories, for profiling one side with
    // `--child DIR BATCH SEQ RANK LOSS_ON_LAST f32|bf16`.
    if std::env::var("ARF_BENCH_KEEP_MODELS").is_ok_and(|v| v == "1") {
        println!("model directories kept in {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
