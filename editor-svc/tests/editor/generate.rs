//! Generate over gRPC against the tiny model loaded through mistral.rs.

use crate::support::*;
use arf_proto::v1::{
    ChatMessage, GenerateRequest, GenerationParams, GetModelInfoRequest, ScoreRequest,
};
use tonic::Code;

#[tokio::test]
async fn greedy_generation_is_reproducible_and_reports_usage() {
    let t = start(|_| {}).await;
    let mut client = t.client();
    let first = client
        .generate(generate_request("Summarize: the parcel was late.", 24))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .generate(generate_request("Summarize: the parcel was late.", 24))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.text.is_empty());
    assert_eq!(first.text, second.text, "greedy decoding is reproducible");
    let usage = first.usage.unwrap();
    assert!(usage.input_tokens > 5, "{usage:?}");
    assert!(
        usage.output_tokens > 0 && usage.output_tokens <= 24,
        "{usage:?}"
    );
    let timing = first.timing.unwrap();
    assert!(
        timing.time_to_first_token_seconds > 0.0
            && timing.time_to_first_token_seconds <= timing.total_seconds,
        "{timing:?}"
    );
    assert!(
        ["stop", "length"].contains(&first.finish_reason.as_str()),
        "{}",
        first.finish_reason
    );
    assert_eq!(first.model_id, t.dir.path().display().to_string());
}

/// Sequences decoded together (a revision stage sends many at once) get the tokens each gets
/// alone. mistral.rs 0.8.1's CPU attention for batched decoding gave every sequence another
/// one's attention (patches/README.md): this failed on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_decoded_together_get_what_each_gets_alone() {
    let t = start(|_| {}).await;
    // Prompts of one length (no padding), different content.
    let prompts: Vec<String> = (1..=4)
        .map(|i| format!("Summarize ticket {i}: the parcel number {i} was late."))
        .collect();
    let mut alone = Vec::new();
    for p in &prompts {
        let answer = t.client().generate(generate_request(p, 24)).await.unwrap();
        alone.push(answer.into_inner().text);
    }
    let together = futures::future::join_all(prompts.iter().map(|p| {
        let mut client = t.client();
        async move { client.generate(generate_request(p, 24)).await }
    }))
    .await;
    for (i, (one, batched)) in alone.iter().zip(together).enumerate() {
        assert_eq!(&batched.unwrap().into_inner().text, one, "prompt {i}");
    }
    assert!(
        alone.iter().any(|a| a != &alone[0]),
        "the prompts must lead to different texts for the check to mean anything: {alone:?}"
    );
}

/// Sequences of different lengths decode in one batch, each row's cache padded at its start
/// (patches/mistralrs-core `kv_cache::ragged`), and still get the tokens each gets alone: a
/// padding position that the mask did not hide, or a row copied to the wrong offset, changes
/// the text. Upstream decoded them a length bucket at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_of_different_lengths_decoded_together_get_what_each_gets_alone() {
    let t = start(|_| {}).await;
    let prompts: Vec<String> = (1..=4)
        .map(|i| {
            format!(
                "Summarize ticket {i}:{}",
                " the parcel was late again.".repeat(i * 3)
            )
        })
        .collect();
    let mut alone = Vec::new();
    for p in &prompts {
        let answer = t.client().generate(generate_request(p, 24)).await.unwrap();
        alone.push(answer.into_inner());
    }
    let lengths: Vec<u32> = alone
        .iter()
        .map(|a| a.usage.unwrap().input_tokens)
        .collect();
    assert!(
        lengths.windows(2).all(|w| w[0] < w[1]),
        "the prompts must differ in length: {lengths:?}"
    );
    let together = futures::future::join_all(prompts.iter().map(|p| {
        let mut client = t.client();
        async move { client.generate(generate_request(p, 24)).await }
    }))
    .await;
    for (i, (one, batched)) in alone.iter().zip(together).enumerate() {
        assert_eq!(batched.unwrap().into_inner().text, one.text, "prompt {i}");
    }
    assert!(
        alone.iter().any(|a| a.text != alone[0].text),
        "the prompts must lead to different texts for the check to mean anything"
    );
}

#[tokio::test]
async fn a_json_schema_constrains_the_output() {
    let t = start(|_| {}).await;
    let schema = r#"{"type": "object", "properties": {"label": {"type": "string", "enum": ["refund", "replacement", "other"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["label", "score"], "additionalProperties": false}"#;
    let request = GenerateRequest {
        json_schema: schema.into(),
        ..generate_request("Rate this summary.", 64)
    };
    let answer = t.client().generate(request).await.unwrap().into_inner();
    let value: serde_json::Value =
        serde_json::from_str(&answer.text).unwrap_or_else(|e| panic!("{e}: {:?}", answer.text));
    assert!(
        ["refund", "replacement", "other"].contains(&value["label"].as_str().unwrap()),
        "{value}"
    );
    let score = value["score"].as_i64().unwrap();
    assert!((1..=5).contains(&score), "{value}");
    assert_eq!(value.as_object().unwrap().len(), 2, "{value}");
}

#[tokio::test]
async fn concurrent_calls_all_succeed() {
    let t = start(|_| {}).await;
    let calls = (0..6).map(|i| {
        let mut client = t.client();
        async move {
            client
                .generate(generate_request(&format!("Request number {i}"), 16))
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    for answer in answers {
        let answer = answer.unwrap().into_inner();
        assert!(answer.usage.unwrap().output_tokens > 0);
    }
    let editor = t.editor();
    let drained = eventually(std::time::Duration::from_secs(2), || {
        let load = editor.load_snapshot();
        (load.engine.queued, load.engine.running, load.in_flight) == (0, 0, 0)
    })
    .await;
    assert!(
        drained,
        "every sequence left the engine: {:?}",
        editor.load_snapshot()
    );
}

#[tokio::test]
async fn bad_requests_name_their_field() {
    let t = start(|_| {}).await;
    let mut client = t.client();
    let field_of = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        arf_common::status::field_violations(&status)
            .into_iter()
            .next()
            .map(|(f, _)| f)
            .unwrap_or_default()
    };
    let empty = GenerateRequest {
        messages: vec![],
        ..generate_request("x", 8)
    };
    assert_eq!(
        field_of(client.generate(empty).await.unwrap_err()),
        "messages"
    );

    let mut unknown_role = generate_request("x", 8);
    unknown_role.messages[0].role = "narrator".into();
    assert_eq!(
        field_of(client.generate(unknown_role).await.unwrap_err()),
        "messages[0].role"
    );

    let malformed = GenerateRequest {
        json_schema: "{\"type\": ".into(),
        ..generate_request("x", 8)
    };
    assert_eq!(
        field_of(client.generate(malformed).await.unwrap_err()),
        "json_schema"
    );

    let too_long = generate_request("x", 100_000);
    assert_eq!(
        field_of(client.generate(too_long).await.unwrap_err()),
        "params.max_tokens"
    );

    // Fits on its own, not with the prompt: only a tokenizer round-trip can tell.
    let long_prompt = generate_request(&"refund ".repeat(300), 7400);
    assert_eq!(
        field_of(client.generate(long_prompt).await.unwrap_err()),
        "params.max_tokens"
    );

    let hot = GenerateRequest {
        params: Some(GenerationParams {
            temperature: Some(7.0),
            ..Default::default()
        }),
        ..generate_request("x", 8)
    };
    assert_eq!(
        field_of(client.generate(hot).await.unwrap_err()),
        "params.temperature"
    );
}

#[tokio::test]
async fn model_info_says_the_tiny_model_has_random_weights() {
    let t = start(|_| {}).await;
    let info = t
        .client()
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.random_weights);
    assert_eq!(info.architecture, "LlamaForCausalLM");
    assert_eq!(info.max_context_tokens, 8192);
    assert_eq!(info.device, "cpu");
    assert_eq!(info.quantization, "none");
    assert_eq!(info.max_concurrent_sequences, 8);
}

#[tokio::test]
async fn a_stop_sequence_ends_the_generation_early() {
    let t = start(|_| {}).await;
    let mut client = t.client();
    let full = client
        .generate(generate_request("Describe the refund.", 48))
        .await
        .unwrap()
        .into_inner();
    // Greedy decoding repeats itself: a piece of the full text, taken from its middle, is a stop
    // sequence that the same generation is bound to produce.
    let chars: Vec<char> = full.text.chars().collect();
    let stop: String = (chars.len() / 3..chars.len().saturating_sub(3))
        .map(|i| chars[i..i + 3].iter().collect::<String>())
        .find(|w: &String| !w.contains('\u{FFFD}') && !w.trim().is_empty())
        .expect("a clean three-character window");
    let mut request = generate_request("Describe the refund.", 48);
    request.params.as_mut().unwrap().stop = vec![stop.clone()];
    let stopped = client.generate(request).await.unwrap().into_inner();
    assert_eq!(stopped.finish_reason, "stop", "{stop:?}");
    assert!(
        stopped.usage.unwrap().output_tokens < full.usage.unwrap().output_tokens,
        "{stop:?}: {:?} vs {:?}",
        stopped.text,
        full.text
    );
}

/// `Score` gives each reply token the logprob the trainer's loss gives it: the same tokens (the
/// chat template's rendering of the reply, end-of-turn included) and the same numbers, on the
/// same weights. This is what lets Evaluate's reference likelihood stand for "what training on
/// the reference would lower".
#[tokio::test]
async fn score_agrees_with_the_trainers_masked_loss() {
    use arf_common::dataset::{Conversation, Role, Turn};
    use candle_core::{Device, Tensor};
    use trainer_svc::lora::ForwardCtx;
    use trainer_svc::model::{Llama, LoadOptions};
    use trainer_svc::train::Example;
    use trainer_svc::train::data::{ChatFormat, prompt_messages};
    use trainer_svc::train::loss::cross_entropy_sum;

    let t = start(|_| {}).await;
    let turn = |role, text: &str| Turn {
        role,
        text: text.into(),
    };
    let example = Example {
        conversation: Conversation {
            id: "c1".into(),
            channel: "chat".into(),
            turns: vec![
                turn(Role::Customer, "My parcel is two days late."),
                turn(Role::Agent, "Sorry! I have sent a replacement today."),
            ],
            metadata: Default::default(),
        },
        summary: "The customer's parcel was late; the agent sent a replacement.".into(),
    };
    let messages = prompt_messages(&example.conversation)
        .into_iter()
        .map(|(role, content)| ChatMessage {
            role: role.into(),
            content,
        })
        .collect();
    let scored = t
        .client()
        .score(ScoreRequest {
            messages,
            reply: example.summary.clone(),
        })
        .await
        .unwrap()
        .into_inner();

    let format = ChatFormat::for_base(t.dir.path()).unwrap();
    let encoded = format.encode(&example, 4096).unwrap();
    let targets = &encoded.ids[encoded.target_start..];
    let got: Vec<u32> = scored.tokens.iter().map(|t| t.token_id).collect();
    assert_eq!(got, targets, "the scored tokens are the trainer's targets");

    let model = Llama::load(t.dir.path(), &LoadOptions::default(), &Device::Cpu).unwrap();
    let ids = Tensor::new(encoded.ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model
        .forward(&ids, &mut ForwardCtx::eval())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let rows = logits
        .narrow(0, encoded.target_start - 1, targets.len())
        .unwrap();
    let target_tensor = Tensor::new(targets, &Device::Cpu).unwrap();
    let trainer_nll = cross_entropy_sum(&rows, &target_tensor)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
        / targets.len() as f64;
    assert!(
        (scored.mean_nll - trainer_nll).abs() <= 1e-4,
        "Score's mean NLL {} against the trainer's {trainer_nll}",
        scored.mean_nll
    );
    // Per token too, each against the trainer's row.
    for (i, token) in scored.tokens.iter().enumerate() {
        let row = rows.narrow(0, i, 1).unwrap();
        let one = Tensor::new(&[token.token_id], &Device::Cpu).unwrap();
        let nll = cross_entropy_sum(&row, &one)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (token.logprob + nll).abs() <= 1e-4,
            "token {i}: {} against {}",
            token.logprob,
            -nll
        );
    }
    // A random model is far from certain: a scorer that returned zeros would fail above.
    assert!(trainer_nll > 1.0, "{trainer_nll}");
    let usage = scored.usage.unwrap();
    assert_eq!(usage.output_tokens as usize, targets.len());
}

#[tokio::test]
async fn score_refuses_an_empty_reply_and_a_prompt_that_ends_with_the_assistant() {
    let t = start(|_| {}).await;
    let mut client = t.client();
    let empty = client
        .score(ScoreRequest {
            messages: vec![user("Hello")],
            reply: " ".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("reply"), "{}", empty.message());
    let assistant_last = client
        .score(ScoreRequest {
            messages: vec![
                user("Hello"),
                ChatMessage {
                    role: "assistant".into(),
                    content: "Hi".into(),
                },
            ],
            reply: "there".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(assistant_last.code(), Code::InvalidArgument);
    assert!(assistant_last.message().contains("messages"));
}

/// With a prefix cache, a prompt asked again (Evaluate scores each human reference right after
/// generating its summary from the same prompt) reuses the first request's cache and gets what
/// it gets without one: the same summary, the same logprobs, several replies scored at once.
/// mistral.rs 0.8.1 used no cache when the whole prompt matched, any shared prefix otherwise
/// (greedy texts changed from run to run), and gave a hit the entry's own tensors to append
/// into (patches/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_asked_again_gets_what_it_gets_without_a_prefix_cache() {
    let plain = start(|_| {}).await;
    let cached = start(|c| c.prefix_cache_seqs = 4).await;
    let prompt = "Summarize: the parcel was late, and the agent sent a new one today.";
    let replies = [
        "The parcel was late; a new one was sent.",
        "Customer: parcel late. Agent: sent another.",
        "A late parcel was replaced by the agent today, at once.",
    ];
    let generate = async |t: &TestEditor| {
        t.client()
            .generate(generate_request(prompt, 24))
            .await
            .unwrap()
            .into_inner()
            .text
    };
    let ask = async |t: &TestEditor| {
        let summary = generate(t).await;
        let scores = futures::future::join_all(replies.iter().map(|reply| {
            let mut client = t.client();
            async move {
                client
                    .score(ScoreRequest {
                        messages: vec![user(prompt)],
                        reply: reply.to_string(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }
        }))
        .await;
        // Asked again after its own scorings were cached too.
        let again = generate(t).await;
        (summary, scores, again)
    };
    let (summary, scores, again) = ask(&plain).await;
    // Twice on the cached engine: the second round starts with every entry of the first.
    for round in 0..2 {
        let (c_summary, c_scores, c_again) = ask(&cached).await;
        assert_eq!(c_summary, summary, "round {round}");
        assert_eq!(c_again, again, "round {round}");
        for (reply, (c, p)) in replies.iter().zip(c_scores.iter().zip(&scores)) {
            assert_eq!(c.tokens.len(), p.tokens.len(), "{reply}");
            for (ct, pt) in c.tokens.iter().zip(&p.tokens) {
                assert_eq!(ct.token_id, pt.token_id, "{reply}");
                assert!(
                    (ct.logprob - pt.logprob).abs() <= 1e-4,
                    "round {round}, {reply}: {} with the cache, {} without",
                    ct.logprob,
                    pt.logprob
                );
            }
        }
    }
    // Replies that differ score differently: a cache shared between them would blur this.
    assert!(
        scores
            .windows(2)
            .all(|w| (w[0].mean_nll - w[1].mean_nll).abs() > 1e-3),
        "{:?}",
        scores.iter().map(|s| s.mean_nll).collect::<Vec<_>>()
    );
}
