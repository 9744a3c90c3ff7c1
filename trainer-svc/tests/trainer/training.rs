//! The training loop on the tiny fixture model: it learns, resumes exactly, cancels, truncates.

use std::cell::Cell;
use std::path::Path;

use crate::common::*;
use candle_core::Device;
use trainer_svc::lora::LoraSpec;
use trainer_svc::lora::peft::load_adapter;
use trainer_svc::train::data::ChatFormat;
use trainer_svc::train::examples::read_examples;
use trainer_svc::train::{Event, Observer, Outcome, TrainConfig, train};

fn config(output: &Path) -> TrainConfig {
    let mut c = TrainConfig::with_defaults(tiny_llama(), output);
    c.lora = LoraSpec {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        ..Default::default()
    };
    c.learning_rate = 0.03;
    c.batch_size = 2;
    c.epochs = 100;
    c
}

fn examples() -> Vec<trainer_svc::train::Example> {
    read_examples(&fixtures().join("train.jsonl")).unwrap()
}

/// Trains on [`examples`] on the CPU and returns the outcome with the loss of every step.
fn train_recording_losses(c: &TrainConfig) -> (Outcome, Vec<f64>) {
    let mut losses = Vec::new();
    let outcome = train(
        c,
        &examples(),
        &mut |e: Event| {
            if let Event::Step { loss, .. } = e {
                losses.push(loss)
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    (outcome, losses)
}

#[test]
fn a_tiny_model_overfits_a_handful_of_examples() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.batch_size = 6;
    c.max_steps = 60;
    let (outcome, losses) = train_recording_losses(&c);
    assert!(
        matches!(outcome, Outcome::Succeeded { steps: 60, .. }),
        "{outcome:?}"
    );
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(
        last <= 0.1 * first,
        "loss {first} -> {last}: fell by less than 90%"
    );
}

/// `max_steps` is the number of optimizer steps whatever the dataset's size: six examples in
/// batches of four are two steps an epoch, so seven steps run four epochs, each in its own order.
#[test]
fn max_steps_repeats_the_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.epochs = 1;
    c.batch_size = 4;
    c.max_steps = 7;
    let mut epochs = Vec::new();
    let outcome = train(
        &c,
        &examples(),
        &mut |e: Event| {
            if let Event::Step {
                epoch, total_steps, ..
            } = e
            {
                assert_eq!(total_steps, 7);
                epochs.push(epoch)
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        matches!(outcome, Outcome::Succeeded { steps: 7, .. }),
        "{outcome:?}"
    );
    assert_eq!(epochs, [0, 0, 1, 1, 2, 2, 3]);
}

fn adapter_tensors(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    load_adapter(dir, &Device::Cpu).unwrap().1
}

/// Stops before step `at` (as a restart would), keeping the checkpoints.
struct StopAt {
    at: u64,
    seen: Cell<u64>,
    events: Vec<Event>,
}

impl Observer for StopAt {
    fn event(&mut self, e: Event) {
        if let Event::Step { step, .. } = &e {
            self.seen.set(*step);
        }
        self.events.push(e);
    }
    fn cancelled(&self) -> bool {
        self.seen.get() >= self.at
    }
}

#[test]
fn a_resumed_run_ends_with_the_same_adapter_as_an_uninterrupted_one() {
    resumed_run_ends_with_the_same_adapter(&tiny_llama());
}

#[test]
fn a_resumed_qwen3_run_ends_with_the_same_adapter_as_an_uninterrupted_one() {
    resumed_run_ends_with_the_same_adapter(&fixtures().join("tiny-qwen3"));
}

fn resumed_run_ends_with_the_same_adapter(base: &Path) {
    let examples = examples();
    let straight = tempfile::tempdir().unwrap();
    let resumed = tempfile::tempdir().unwrap();
    let setup = |out: &Path| {
        let mut c = config(out);
        c.base_model_dir = base.to_path_buf();
        c.max_steps = 9;
        c.gradient_accumulation_steps = 2;
        c.batch_size = 1;
        c.warmup_steps = 2;
        c.weight_decay = 0.01;
        c.checkpoint_every_steps = 3;
        c.lora.dropout = 0.1; // dropout masks must replay too
        c.eval_fraction = 0.2;
        c.eval_every_steps = 4;
        c
    };
    let done = train(
        &setup(straight.path()),
        &examples,
        &mut |_: Event| {},
        &Device::Cpu,
    )
    .unwrap();
    assert!(matches!(done, Outcome::Succeeded { steps: 9, .. }));

    // Interrupted after step 5: the last checkpoint is step 3; the resume redoes 4 and 5.
    let mut stop = StopAt {
        at: 5,
        seen: Cell::new(0),
        events: Vec::new(),
    };
    let first = train(&setup(resumed.path()), &examples, &mut stop, &Device::Cpu).unwrap();
    let Outcome::Cancelled {
        step: 5,
        last_checkpoint: Some(cp),
    } = first
    else {
        panic!("{first:?}")
    };
    assert!(cp.ends_with("step-00000003"), "{}", cp.display());
    assert!(
        stop.events
            .iter()
            .any(|e| matches!(e, Event::Checkpoint { step: 3, .. }))
    );

    let mut events = Vec::new();
    let second = train(
        &setup(resumed.path()),
        &examples,
        &mut |e: Event| events.push(e),
        &Device::Cpu,
    )
    .unwrap();
    assert!(matches!(second, Outcome::Succeeded { steps: 9, .. }));
    assert!(
        matches!(
            events[0],
            Event::Started {
                resumed: true,
                from_step: 3,
                ..
            }
        ),
        "{:?}",
        events[0]
    );
    let first_step = events.iter().find_map(|e| {
        if let Event::Step { step, .. } = e {
            Some(*step)
        } else {
            None
        }
    });
    assert_eq!(first_step, Some(4));

    let a = adapter_tensors(&straight.path().join("adapter"));
    let b = adapter_tensors(&resumed.path().join("adapter"));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let d = max_abs_diff(t, &b[name]);
        assert!(d <= 1e-6, "{name}: resumed differs by {d}");
    }
    // And training did move the adapter.
    let b_norm: f32 = a
        .iter()
        .filter(|(n, _)| n.contains("lora_B"))
        .map(|(_, t)| {
            t.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum();
    assert!(b_norm > 0.0);
}

#[test]
fn cancel_stops_before_the_next_step_and_keeps_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_steps = 20;
    c.checkpoint_every_steps = 2;
    let mut stop = StopAt {
        at: 3,
        seen: Cell::new(0),
        events: Vec::new(),
    };
    let out = train(&c, &examples(), &mut stop, &Device::Cpu).unwrap();
    assert!(matches!(out, Outcome::Cancelled { step: 3, .. }), "{out:?}");
    let steps = stop
        .events
        .iter()
        .filter(|e| matches!(e, Event::Step { .. }))
        .count();
    assert_eq!(steps, 3);
    assert_eq!(trainer_svc::train::checkpoint::list(dir.path()).len(), 1);
    assert!(!dir.path().join("adapter").exists());
}

#[test]
fn long_conversations_are_truncated_from_the_conversation_side_and_counted() {
    let format = ChatFormat::for_base(&tiny_llama()).unwrap();
    let mut ex = examples().remove(0);
    let long = "My parcel is late again and nobody answers. ".repeat(40);
    ex.conversation.turns[0].text = long;
    let full = format.encode(&ex, 100_000).unwrap();
    assert!(!full.truncated && full.ids.len() > 200);
    // Room for an ordinary example, not for this one.
    let cap = format.encode(&examples()[1], 100_000).unwrap().ids.len();
    assert!(cap < full.ids.len());
    let cut = format.encode(&ex, cap).unwrap();
    assert!(
        cut.truncated && cut.ids.len() <= cap,
        "{} tokens",
        cut.ids.len()
    );
    // The summary (the targets) is intact: the same completion tokens end both.
    assert_eq!(cut.num_targets(), full.num_targets());
    assert_eq!(cut.ids[cut.target_start..], full.ids[full.target_start..]);
    // The assistant turn ends with the end-of-turn token, which is a target.
    assert_eq!(*cut.ids.last().unwrap(), 4);

    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.max_seq_len = cap;
    c.max_steps = 1;
    let mut warnings = Vec::new();
    let out = train(
        &c,
        &vec![ex.clone(), examples()[1].clone()],
        &mut |e: Event| {
            if let Event::Warning(w) = e {
                warnings.push(w)
            }
        },
        &Device::Cpu,
    )
    .unwrap();
    assert!(
        matches!(
            out,
            Outcome::Succeeded {
                truncated_examples: 1,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("1 of 2 examples"),
        "{}",
        warnings[0]
    );
}

/// A bf16 base multiplies in bf16 (AMX tiles where the CPU has them, else the f32 GEMM over
/// bf16-rounded operands): its loss curve follows the f32 run's within a stated tolerance.
#[test]
fn bf16_base_trains_and_its_loss_curve_follows_f32() {
    eprintln!(
        "bf16 products: {}",
        trainer_svc::model::fused::bf16::kernel()
    );
    let curve = |dtype: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.max_steps = 12;
        c.base_dtype = dtype.into();
        let (outcome, losses) = train_recording_losses(&c);
        assert!(
            matches!(outcome, Outcome::Succeeded { steps: 12, .. }),
            "{dtype}: {outcome:?}"
        );
        losses
    };
    let (f32_losses, bf16_losses) = (curve("f32"), curve("bf16"));
    assert!(
        f32_losses[11] < f32_losses[0] - 1.0,
        "the f32 run learns: {f32_losses:?}"
    );
    let worst = f32_losses
        .iter()
        .zip(&bf16_losses)
        .map(|(a, b)| (a - b).abs() / a.abs())
        .fold(0f64, f64::max);
    eprintln!("largest relative difference of the loss, bf16 vs f32: {worst:.2e}");
    // bf16 keeps 8 bits of mantissa (a relative rounding of 2^-9 per operand): the loss stays
    // within 2% of the f32 run's at every step while both fall by over a nat.
    for (step, (a, b)) in f32_losses.iter().zip(&bf16_losses).enumerate() {
        assert!(
            (a - b).abs() <= 0.02 * a.abs(),
            "step {step}: f32 {a}, bf16 {b}\n f32 {f32_losses:?}\nbf16 {bf16_losses:?}"
        );
    }
}

/// The workspace's own tiny model writer (what `arf demo` uses): the trainer trains on it and
/// its merged export loads again as a plain model.
#[test]
fn trains_on_the_workspace_tiny_llama_and_exports_a_loadable_merged_model() {
    use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
    let base = tempfile::tempdir().unwrap();
    write_tiny_llama(base.path(), &TinyLlamaSpec::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut c = TrainConfig::with_defaults(base.path(), out.path());
    c.max_steps = 2;
    c.batch_size = 2;
    c.learning_rate = 0.01;
    c.export_merged = true;
    let (outcome, losses) = train_recording_losses(&c);
    let Outcome::Succeeded {
        merged_dir: Some(merged),
        ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(
        losses.len() == 2 && losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    let model =
        trainer_svc::model::Llama::load(&merged, &Default::default(), &Device::Cpu).unwrap();
    assert_eq!(model.cfg.hidden_size, TinyLlamaSpec::default().hidden_size);
    assert!(merged.join("tokenizer.json").exists());
}

/// The adapter and the merged model are published whole: written aside, flushed, then renamed
/// into place. What a crashed earlier attempt left under those names (a truncated file, a stray
/// one) never mixes into a job's outputs, and no temporary directory stays behind.
#[test]
fn outputs_are_published_whole_over_a_crashed_attempts_leftovers() {
    use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
    let base = tempfile::tempdir().unwrap();
    write_tiny_llama(base.path(), &TinyLlamaSpec::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    for dir in ["adapter", "merged"] {
        std::fs::create_dir_all(out.path().join(dir)).unwrap();
        std::fs::write(out.path().join(dir).join("leftover.bin"), b"half").unwrap();
    }
    let mut c = TrainConfig::with_defaults(base.path(), out.path());
    c.max_steps = 1;
    c.export_merged = true;
    let (outcome, _) = train_recording_losses(&c);
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&out.path().join("adapter")),
        ["adapter_config.json", "adapter_model.safetensors"]
    );
    assert!(!names(&out.path().join("merged")).contains(&"leftover.bin".to_string()));
    assert!(
        names(out.path()).iter().all(|n| !n.starts_with(".tmp")),
        "{:?}",
        names(out.path())
    );
}
