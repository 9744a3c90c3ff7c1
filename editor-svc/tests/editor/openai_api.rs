//! The OpenAI face of the editor, both ways: the HTTP API a tiny model is served on
//! (`--http-listen`), and an editor whose backend is that API (`--backend openai`), called over
//! gRPC as the gateway calls any editor. Real servers on 127.0.0.1:0; the model is the tiny
//! random-weight Llama through mistral.rs.

use std::time::Duration;

use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::*;
use editor_svc::backend::openai::{ApiKey, UpstreamConfig};
use editor_svc::http::HttpServer;
use editor_svc::{EditorConfig, load_editor};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const TOKEN: &str = "test-token-123";

/// A tiny editor served over gRPC and over the OpenAI HTTP API (with a bearer token).
struct Served {
    editor: TestEditor,
    http: HttpServer,
    _stop: tokio_util::sync::DropGuard,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http.addr)
    }

    fn model_id(&self) -> String {
        self.editor.editor().model().model_id.clone()
    }

    /// POSTs `body` to `path` with the token.
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        post(&self.url(path), body).await
    }
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn served(max_in_flight: usize) -> Served {
    let editor = start(|c| c.max_in_flight = max_in_flight).await;
    let (http, stop) = http_api(&editor.service, Some(TOKEN)).await;
    Served {
        editor,
        http,
        _stop: stop,
    }
}

fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({"messages": [{"role": "system", "content": "You summarize."},
                        {"role": "user", "content": "Summarize: my order 1234 arrived damaged."}],
           "max_tokens": max_tokens, "temperature": 0, "stream": stream,
           "stream_options": {"include_usage": true}})
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Starts a long generation over HTTP and waits until it holds an in-flight slot of `s`.
async fn hold_a_slot(s: &Served) -> tokio::task::JoinHandle<()> {
    let (url, body) = (s.url("/v1/chat/completions"), chat(1500, false));
    let held = tokio::spawn(async move {
        let _ = client()
            .post(url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await;
    });
    let editor = s.editor.editor();
    assert!(
        eventually(Duration::from_secs(5), || editor.load_snapshot().in_flight
            == 1)
        .await,
        "the long generation holds the slot"
    );
    held
}

/// The `data` of each server-sent event of a body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_chat_streams_models_health_and_refuses_clearly() {
    let s = served(8).await;
    let http = client();

    // Health answers without a token; everything else needs it.
    let health = http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let denied = http.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let wrong = http
        .get(s.url("/v1/models"))
        .bearer_auth("not-it")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let models: Value = http
        .get(s.url("/v1/models"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], s.model_id(), "{models}");
    assert!(models["data"][0]["max_model_len"].as_u64().unwrap() > 0);

    // One answer, and the same greedy answer streamed.
    let whole: Value = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&chat(12, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(whole["object"], "chat.completion");
    let completion_tokens = whole["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{whole}");
    assert!(whole["usage"]["prompt_tokens"].as_u64().unwrap() > 10);

    let streamed = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&chat(12, true))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&streamed.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, text, "streamed and whole greedy answers differ");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, whole["choices"][0]["finish_reason"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(completion_tokens));

    // Bad requests name their parameter, OpenAI-style.
    let refused = |body: Value| {
        let http = http.clone();
        let url = s.url("/v1/chat/completions");
        async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = refused(chat(1_000_000, false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    let (status, body) = refused(json!({"messages": [{"role": "robot", "content": "hi"}]})).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("messages[0].role"))
    );
    let (status, body) = refused(json!({"model": "gpt-4", "messages": []})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        refused(json!({"messages": [{"role": "user", "content": "hi"}], "prompt_logprobs": 0}))
            .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("prompt_logprobs")),
        "prompt_logprobs scores a reply: the last message must be the assistant's"
    );
    let (status, body) = refused(json!({"messages": []})).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("messages"))
    );
    let garbage = http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_in_flight_limit_the_http_api_answers_429_with_retry_after() {
    let s = served(1).await;
    let holding = hold_a_slot(&s).await;
    let refused = client()
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .json(&chat(4, false))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    holding.abort();
}

/// An editor whose backend is `s`'s HTTP API, served over gRPC.
async fn upstream_editor(
    s: &Served,
    key: &str,
) -> anyhow::Result<(editor_svc::EditorService, arf_common::server::RunningServer)> {
    let config = EditorConfig {
        max_in_flight: 8,
        default_max_tokens: 64,
        ..EditorConfig::upstream(UpstreamConfig {
            api_key: ApiKey::new(key),
            ..UpstreamConfig::new(s.url("/v1"), s.model_id())
        })
    };
    let service = load_editor(&config).await?;
    let server = serve(service.clone(), true).await;
    Ok((service, server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_over_an_openai_upstream_generates_revises_and_reports_its_model() {
    let s = served(8).await;
    let (_service, server) = upstream_editor(&s, TOKEN).await.unwrap();
    let mut forwarded = EditorClient::new(channel(&server));
    let mut direct = s.editor.client();

    let info = forwarded
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.model_id, s.model_id());
    assert_eq!(info.architecture, "openai-compatible upstream");
    assert!(info.max_context_tokens > 0, "the upstream's max_model_len");

    // Greedy: the same text as asking the model's own editor.
    let request = generate_request("Summarize: my order 1234 arrived damaged.", 12);
    let theirs = direct.generate(request.clone()).await.unwrap().into_inner();
    let ours = forwarded.generate(request).await.unwrap().into_inner();
    assert_eq!(ours.text, theirs.text);
    assert_eq!(
        ours.usage, theirs.usage,
        "usage comes from the upstream's usage chunk"
    );
    assert_eq!(ours.finish_reason, theirs.finish_reason);

    // Constrained output goes as response_format and comes back as the schema says.
    let mut constrained = generate_request("Give a JSON object.", 48);
    constrained.json_schema =
        r#"{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}"#.into();
    let out = forwarded.generate(constrained).await.unwrap().into_inner();
    if out.finish_reason == "stop" {
        let value: Value = serde_json::from_str(&out.text).unwrap();
        assert!(value["a"].is_i64(), "{}", out.text);
    }

    // A revision (span edits, each a constrained generation upstream) completes.
    let revised = forwarded.revise(revise_request(findings(), 48)).await;
    match revised {
        Ok(r) => assert!(r.into_inner().model_called),
        // A random-weight model may write an unusable replacement: reported as such, never
        // passed on.
        Err(status) => assert_eq!(
            arf_common::status::reason(&status).as_deref(),
            Some(arf_common::status::UNUSABLE_OUTPUT),
            "{status:?}"
        ),
    }

    // Score goes over `prompt_logprobs` (vLLM's extension, which the HTTP API serves): the same
    // tokens and logprobs as the model's own editor.
    let request = ScoreRequest {
        messages: vec![user("Summarize: my order 1234 arrived damaged.")],
        reply: "The customer's order arrived damaged.".into(),
    };
    let theirs = direct.score(request.clone()).await.unwrap().into_inner();
    let ours = forwarded.score(request).await.unwrap().into_inner();
    let ids = |r: &ScoreResponse| r.tokens.iter().map(|t| t.token_id).collect::<Vec<_>>();
    assert_eq!(ids(&ours), ids(&theirs));
    for (a, b) in ours.tokens.iter().zip(&theirs.tokens) {
        assert!((a.logprob - b.logprob).abs() < 1e-6, "{a:?} {b:?}");
    }
    assert!((ours.mean_nll - theirs.mean_nll).abs() < 1e-6);
    assert_eq!(
        ours.usage.unwrap().input_tokens,
        theirs.usage.unwrap().input_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusals_reach_the_gateway_as_its_fault_policy_expects() {
    let s = served(1).await;
    // A wrong key: the editor does not start, and says why.
    let err = upstream_editor(&s, "wrong-key").await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("credentials") && message.contains("401"),
        "{message}"
    );

    // The upstream at its limit: RESOURCE_EXHAUSTED with the upstream's Retry-After.
    let (_service, server) = upstream_editor(&s, TOKEN).await.unwrap();
    let holding = hold_a_slot(&s).await;
    let busy = EditorClient::new(channel(&server))
        .generate(generate_request("Hello", 4))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert_eq!(
        arf_common::status::retry_after(&busy),
        Some(Duration::from_secs(1))
    );
    holding.abort();

    // The upstream gone: UNAVAILABLE (the gateway waits and retries elsewhere).
    let addr = s.http.addr;
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = EditorClient::new(channel(&server))
        .generate(generate_request("Hello", 4))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::Unavailable, "{addr}: {gone:?}");
}

/// Python with the official `openai` package: `ARF_OPENAI_PYTHON` when set, else a virtual
/// environment under the target directory made on first use (pinned, from PyPI).
fn python_with_openai() -> std::path::PathBuf {
    use std::process::Command;
    let works = |python: &std::path::Path| {
        Command::new(python)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(python) = std::env::var_os("ARF_OPENAI_PYTHON") {
        return python.into();
    }
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients");
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-python-venv");
    let python = venv.join("bin/python");
    if !works(&python) {
        let status = Command::new("bash")
            .arg(clients.join("python/setup-venv.sh"))
            .arg(&venv)
            .arg(clients.join("openai-python/requirements.txt"))
            .status()
            .unwrap();
        assert!(status.success(), "making {} failed", venv.display());
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_chats_streams_and_gets_clear_refusals() {
    let python = python_with_openai();
    let s = served(8).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../clients/openai-python/check_http_api.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .args(["--base-url", &s.url("/v1"), "--api-key", TOKEN]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.ends_with("ok\n"),
        "the openai client's check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_request_timeout_gets_504_and_its_generation_ends() {
    let editor = start(|_| {}).await;
    let server = arf_common::config::ServerArgs {
        request_timeout_secs: 1,
        ..arf_common::config::ServerArgs::local()
    };
    let router = editor_svc::http::router(editor.service.clone(), &server);
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let http = editor_svc::http::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        router,
        stop,
    )
    .unwrap();
    let answer = client()
        .post(format!("http://{}/v1/chat/completions", http.addr))
        .json(&chat(6000, false))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 504);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["type"], "timeout", "{body}");
    let model = editor.editor();
    assert!(
        eventually(Duration::from_secs(5), || model.load_snapshot().in_flight
            == 0)
        .await,
        "the generation was dropped with the call"
    );
}

/// `POST /v1/completions`: the prompt continued as it is (the tokenizer's BOS, no chat
/// template), whole and streamed, its unserved options refused by name; and an editor over an
/// OpenAI upstream forwards a raw-text prompt to the upstream's text completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_continue_the_prompt_as_it_is_and_forward_upstream() {
    let s = served(8).await;
    let prompt = "Customer: my order 1234 arrived damaged.\nSummary:";
    let request = |stream: bool| {
        json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": stream,
               "stream_options": {"include_usage": true}})
    };
    let whole: Value = s
        .post("/v1/completions", &request(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whole["object"], "text_completion", "{whole}");
    let text = whole["choices"][0]["text"].as_str().unwrap().to_string();
    let completion_tokens = whole["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{whole}");
    let tokenizer =
        tokenizers::Tokenizer::from_file(s.editor.dir.path().join("tokenizer.json")).unwrap();
    let prompt_tokens = tokenizer.encode(prompt, true).unwrap().len() as u64;
    assert_eq!(
        whole["usage"]["prompt_tokens"].as_u64(),
        Some(prompt_tokens),
        "the prompt is tokenized as it is: {whole}"
    );
    let as_chat: Value = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        as_chat["usage"]["prompt_tokens"].as_u64().unwrap() > prompt_tokens,
        "the chat API renders the template around the same text: {as_chat}"
    );

    let events = sse_data(
        &s.post("/v1/completions", &request(true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, text, "streamed and whole greedy answers differ");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks.last().unwrap()["usage"], whole["usage"]);

    for (body, param) in [
        (json!({"prompt": prompt, "logprobs": 1}), "logprobs"),
        (json!({"prompt": prompt, "echo": true}), "echo"),
        (json!({"prompt": ["one", "two"]}), "prompt"),
        (json!({"prompt": [1, 2, 3]}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
    ] {
        let refused = s.post("/v1/completions", &body).await;
        assert_eq!(refused.status(), 400, "{body}");
        let answer: Value = refused.json().await.unwrap();
        assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
    }

    // Through an editor whose backend is `s`: the same greedy continuation and usage.
    let (upstream, _server) = upstream_editor(&s, TOKEN).await.unwrap();
    let (front, _stop) = http_api(&upstream, None).await;
    let forwarded: Value = post(
        &format!("http://{}/v1/completions", front.addr),
        &request(false),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        forwarded["choices"][0]["text"],
        text.as_str(),
        "{forwarded}"
    );
    assert_eq!(forwarded["usage"], whole["usage"]);
}

/// An on-premises upstream behind HTTPS with a private CA: refused without `--upstream-ca-file`
/// (the error says where the CA goes), reached with it. The upstream is an editor's HTTP API
/// on its server's own certificate (`--tls-cert`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_of_a_private_ca_is_reached_through_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = arf_common::test_ca::TestCa::new(dir.path());
    let (cert, key) = ca.issue("localhost", "server");
    let server = arf_common::config::ServerArgs {
        tls_cert: Some(cert),
        tls_key: Some(key),
        auth_token: Some(TOKEN.parse().unwrap()),
        ..arf_common::config::ServerArgs::local()
    };

    let editor = start(|_| {}).await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let https = editor_svc::http::serve_as(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        editor_svc::http::router(editor.service.clone(), &server),
        &server,
        stop,
    )
    .unwrap();
    let upstream = |ca_file: Option<std::path::PathBuf>| EditorConfig {
        default_max_tokens: 16,
        ..EditorConfig::upstream(UpstreamConfig {
            api_key: ApiKey::new(TOKEN),
            ca_file,
            ..UpstreamConfig::new(
                format!("https://localhost:{}/v1", https.addr.port()),
                editor.editor().model().model_id.clone(),
            )
        })
    };

    let err = load_editor(&upstream(None)).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("certificate") && message.contains("--upstream-ca-file"),
        "{message}"
    );

    let service = load_editor(&upstream(Some(ca.ca_file())))
        .await
        .expect("the CA file makes the upstream's certificate trusted");
    let forwarded = serve(service, true).await;
    let request = generate_request("Summarize: my order 1234 arrived damaged.", 8);
    let theirs = editor
        .client()
        .generate(request.clone())
        .await
        .unwrap()
        .into_inner();
    let ours = EditorClient::new(channel(&forwarded))
        .generate(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ours.text, theirs.text);
}
