//! Both config layouts of a Hugging Face model directory serve: the released Llama 3.1 one
//! (`rope_theta` + `rope_scaling`, template in `tokenizer_config.json`) and transformers 5's
//! (`rope_parameters`, `chat_template.jinja`), which mistral.rs 0.8.1 alone refuses.

use crate::support::*;
use arf_tiny_llama::TinyLlamaSpec;
use editor_svc::load_editor;
use serde_json::Value;

/// Rewrites a directory in the released layout into transformers 5's, in place.
fn to_transformers5_layout(dir: &std::path::Path) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let map = config.as_object_mut().unwrap();
    let theta = map
        .remove("rope_theta")
        .expect("the released layout has rope_theta");
    let mut params = map
        .remove("rope_scaling")
        .expect("the tiny model has llama3 scaling");
    params["rope_theta"] = theta;
    map.insert("rope_parameters".into(), params);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let path = dir.join("tokenizer_config.json");
    let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let template = tc.as_object_mut().unwrap().remove("chat_template").unwrap();
    std::fs::write(dir.join("chat_template.jinja"), template.as_str().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&tc).unwrap()).unwrap();
}

#[tokio::test]
async fn a_transformers5_directory_serves_like_the_released_layout() {
    let spec = TinyLlamaSpec::default();
    let released = tiny_model(&spec);
    let t5 = tiny_model(&spec);
    to_transformers5_layout(t5.path());
    let before = std::fs::read_to_string(t5.path().join("config.json")).unwrap();

    let mut texts = Vec::new();
    for dir in [released.path(), t5.path()] {
        let service = load_editor(&config(dir))
            .await
            .unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()));
        let server = serve(service, true).await;
        let mut client = arf_proto::v1::editor_client::EditorClient::new(channel(&server));
        let reply = client
            .generate(generate_request("Summarize: the parcel was late.", 24))
            .await
            .unwrap()
            .into_inner();
        texts.push((reply.text, reply.usage.unwrap().input_tokens));
        server.shutdown().await.unwrap();
    }
    assert!(!texts[0].0.is_empty());
    // Same weights, same rope scaling, same template: greedy decoding gives the same tokens.
    assert_eq!(
        texts[0], texts[1],
        "the transformers 5 layout must read as the released one"
    );
    assert_eq!(
        std::fs::read_to_string(t5.path().join("config.json")).unwrap(),
        before,
        "the user's files are untouched"
    );
}
