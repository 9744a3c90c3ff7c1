//! The editor's forward pass against a reference. mistral.rs runs on patched CPU code
//! (patches/README.md: grouped-query attention in f32, prompts through f32 gemm), so its greedy
//! tokens are checked against the trainer's Llama, which the trainer's tests hold to
//! transformers' logits. The tiny Llama has grouped-query attention (4 query heads, 2 K/V
//! heads), and the prompt is long enough for the prompt path of the quantized matmul. The
//! editor's cache keeps keys and values in f16 on a CPU (patches/mistralrs-core
//! `kv_cache/cpu_store.rs`), so the reference rounds them the same way.

use arf_tiny_llama::{END_OF_TEXT, EOT, TinyLlamaSpec, write_tiny_llama};
use candle_core::{Device, IndexOp, Tensor};
use editor_svc::backend::engine_request;
use editor_svc::generation::{ChatMessage, ChatRole, GenerationRequest, Sampling};
use editor_svc::{EditorConfig, load_editor};
use mistralrs::{TextMessageRole, TextMessages};
use trainer_svc::lora::ForwardCtx;
use trainer_svc::model::{Llama, LoadOptions};

const GENERATED: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_decodes_the_tokens_the_reference_llama_picks() {
    let prompt = "Summarize the conversation: the customer says order 48213 arrived two days \
                  late and the box was damaged; the agent apologizes and offers a refund.";
    decodes_what_the_reference_picks(prompt, 16).await;
}

/// A prompt of several blocks of query rows and a part block (patches/mistralrs-core
/// `attention/backends/cpu_blocks.rs` takes 64 rows at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_of_several_attention_blocks_decodes_what_the_reference_picks() {
    let turns = [
        "Customer: my order 48213 arrived two days late and the box was damaged.",
        "Agent: I am sorry to hear that. Could you send a photo of the box?",
        "Customer: I sent it yesterday by email, nobody answered.",
        "Agent: Thank you, I found it. I can offer a refund or a replacement.",
        "Customer: A replacement please, and can it ship before Friday?",
        "Agent: It ships tomorrow morning; you will get a tracking number by text.",
    ];
    let prompt = format!("Summarize the conversation:\n{}", turns.join("\n"));
    decodes_what_the_reference_picks(&prompt, 150).await;
}

/// The editor's greedy text for `prompt` (at least `min_tokens` long) is the reference's.
async fn decodes_what_the_reference_picks(prompt: &str, min_tokens: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), &TinyLlamaSpec::default()).unwrap();
    let service = load_editor(&EditorConfig::new(dir.path())).await.unwrap();
    let editor = service.editor().unwrap();
    let model = editor_svc::MistralBackend::of(editor.backend().as_ref())
        .expect("a mistral.rs editor")
        .model();
    let ids = model
        .tokenize(
            either::Either::Left(TextMessages::new().add_message(TextMessageRole::User, prompt)),
            None,
            true,
            true,
            None,
        )
        .await
        .unwrap();
    assert!(ids.len() >= min_tokens, "a prompt of {} tokens", ids.len());
    let response = model
        .send_chat_request(engine_request(GenerationRequest {
            prompt: vec![ChatMessage::new(ChatRole::User, prompt)].into(),
            max_tokens: GENERATED,
            sampling: Sampling::default(),
            stop: Vec::new(),
            json_schema: None,
        }))
        .await
        .unwrap();
    let editor_text = response.choices[0]
        .message
        .content
        .clone()
        .unwrap_or_default();

    // The reference: the full forward pass over the whole sequence at every step, argmax.
    let tokenizer = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    let stops = [EOT, END_OF_TEXT].map(|t| tokenizer.token_to_id(t).expect(t));
    let llama = Llama::load(dir.path(), &LoadOptions::default(), &Device::Cpu).unwrap();
    let mut sequence = ids.clone();
    let mut picked = Vec::new();
    for _ in 0..response.usage.completion_tokens {
        let input = Tensor::new(sequence.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = llama.forward(&input, &mut reference_ctx()).unwrap();
        let last = logits.i((0, sequence.len() - 1)).unwrap();
        let next = last.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        if stops.contains(&next) {
            break;
        }
        picked.push(next);
        sequence.push(next);
    }
    assert!(picked.len() >= 8, "the reference stopped after {picked:?}");
    let reference_text = tokenizer.decode(&picked, true).unwrap();
    assert_eq!(editor_text, reference_text, "tokens {picked:?}");
}

/// The reference reads keys and values as the editor's cache holds them (f16 by default,
/// `ARF_KV_CACHE`): the same rounding, every product and sum still f32.
fn reference_ctx() -> ForwardCtx {
    let stored = mistralrs::core::cpu_kv_cache_dtype().expect("ARF_KV_CACHE");
    ForwardCtx {
        kv_rounded_to: Some(stored),
        ..ForwardCtx::eval()
    }
}

/// A misspelt `ARF_KV_CACHE` stops `arf editor` at load, naming the variable and what it takes,
/// instead of failing every request after a healthy start.
#[test]
fn an_editor_given_a_bad_kv_cache_setting_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), &TinyLlamaSpec::default()).unwrap();
    let mut editor = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .arg("editor")
        .arg("--model")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("ARF_KV_CACHE", "f8")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // An editor that took the setting would serve until killed.
    let started = std::time::Instant::now();
    while editor.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            editor.kill().unwrap();
            panic!("the editor is still running a minute after it started");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = editor.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the editor exited cleanly: {stderr}");
    assert!(
        stderr.contains("ARF_KV_CACHE=\"f8\": expected f16 or f32"),
        "{stderr}"
    );
}
