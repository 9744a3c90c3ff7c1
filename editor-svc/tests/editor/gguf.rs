//! The other way a model arrives: one GGUF file, already quantized, its tokenizer and chat
//! template inside. The tiny Llama written as Q8_0 GGUF loads through mistral.rs' GGUF path
//! and serves Generate and Revise like the Hugging Face directory does.

use crate::support::*;
use arf_proto::v1::GetModelInfoRequest;
use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama_gguf};
use candle_core::quantized::GgmlDType;
use editor_svc::{EditorConfig, load_editor};

#[tokio::test]
async fn a_quantized_gguf_file_loads_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-q8_0.gguf");
    write_tiny_llama_gguf(&file, &TinyLlamaSpec::default(), GgmlDType::Q8_0).unwrap();
    let config = EditorConfig {
        max_seqs: 4,
        max_in_flight: 4,
        default_max_tokens: 64,
        ..EditorConfig::new(&file)
    };
    let service = load_editor(&config).await.expect("loading the GGUF file");
    let server = serve(service, true).await;
    let mut client = arf_proto::v1::editor_client::EditorClient::new(channel(&server));

    let info = client
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.architecture.as_str(), info.quantization.as_str()),
        ("llama", "q8_0")
    );
    assert_eq!(info.max_context_tokens, 8192);
    assert!(info.random_weights, "the file says its weights are random");

    let first = client
        .generate(generate_request("Summarize: the parcel was late.", 16))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .generate(generate_request("Summarize: the parcel was late.", 16))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.text.is_empty());
    assert_eq!(first.text, again.text, "greedy decoding is reproducible");
    let usage = first.usage.unwrap();
    // The chat template from the file frames the message: headers and the turn's end add tokens.
    assert!(usage.input_tokens > 10, "{usage:?}");
    assert!(
        usage.output_tokens > 0 && usage.output_tokens <= 16,
        "{usage:?}"
    );

    let revision = client.revise(revise_request(findings(), 96)).await;
    match revision {
        Ok(r) => assert!(!r.into_inner().revised_summary.trim().is_empty()),
        // A random model may run out of budget inside the JSON: a reported failure, not a crash.
        Err(s) => assert!(s.message().contains("unusable model output"), "{s:?}"),
    }
    server.shutdown().await.unwrap();
}
