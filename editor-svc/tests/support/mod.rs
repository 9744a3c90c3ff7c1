//! Test helpers: a tiny random-weight Llama written into a tempdir, loaded through the real
//! mistral.rs path, served on 127.0.0.1:0 and called through the generated client.

#![allow(dead_code)]

use std::time::Duration;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::EDITOR;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::*;
use arf_tiny_llama::{TinyLlamaSpec, write_tiny_llama};
use editor_svc::{EditorConfig, EditorService, load_editor};
use mistralrs::ModelDType;
use tonic::service::Routes;

pub struct TestEditor {
    pub dir: tempfile::TempDir,
    pub service: EditorService,
    pub server: RunningServer,
    pub channel: GrpcChannel,
}

impl TestEditor {
    pub fn client(&self) -> EditorClient<GrpcChannel> {
        EditorClient::new(self.channel.clone())
    }

    pub fn editor(&self) -> std::sync::Arc<editor_svc::Editor> {
        self.service.editor().expect("the test editor is loaded")
    }
}

/// The test model's config: f32 on the CPU.
pub fn config(dir: &std::path::Path) -> EditorConfig {
    EditorConfig {
        dtype: ModelDType::F32,
        max_seqs: 8,
        max_in_flight: 8,
        default_max_tokens: 64,
        ..EditorConfig::new(dir)
    }
}

pub fn tiny_model(spec: &TinyLlamaSpec) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_llama(dir.path(), spec).expect("writing the tiny model");
    dir
}

/// Writes, loads and serves the default tiny model; `tweak` adjusts the config.
pub async fn start(tweak: impl FnOnce(&mut EditorConfig)) -> TestEditor {
    start_with(&TinyLlamaSpec::default(), tweak).await
}

pub async fn start_with(spec: &TinyLlamaSpec, tweak: impl FnOnce(&mut EditorConfig)) -> TestEditor {
    let dir = tiny_model(spec);
    let mut config = config(dir.path());
    tweak(&mut config);
    let service = load_editor(&config).await.expect("loading the tiny model");
    let server = serve(service.clone(), true).await;
    let channel = channel(&server);
    TestEditor {
        dir,
        service,
        server,
        channel,
    }
}

pub async fn serve(service: EditorService, serving: bool) -> RunningServer {
    let args = ServerArgs::local();
    let routes = Routes::new(service.into_server(args.max_message_bytes));
    serve_loopback(&args, EDITOR, serving, routes)
        .await
        .expect("serve")
}

/// `service`'s OpenAI HTTP API on 127.0.0.1:0, asking `token` when given; it stops when the
/// guard drops.
pub async fn http_api(
    service: &EditorService,
    token: Option<&str>,
) -> (editor_svc::http::HttpServer, tokio_util::sync::DropGuard) {
    let server = ServerArgs {
        auth_token: token.map(|t| t.parse().expect("a token")),
        ..ServerArgs::local()
    };
    let router = editor_svc::http::router(service.clone(), &server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = tokio_util::sync::CancellationToken::new();
    let http = editor_svc::http::serve(listener, router, stop.clone()).expect("serve HTTP");
    (http, stop.drop_guard())
}

pub fn channel(server: &RunningServer) -> GrpcChannel {
    connect_lazy(&server.endpoint(), &ClientOptions::default()).expect("channel")
}

pub fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: "user".into(),
        content: text.into(),
    }
}

pub fn generate_request(text: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![user(text)],
        params: Some(GenerationParams {
            max_tokens,
            ..Default::default()
        }),
        json_schema: String::new(),
    }
}

pub fn conversation() -> Conversation {
    let turn = |role: Role, text: &str| Turn {
        role: role as i32,
        text: text.into(),
    };
    Conversation {
        id: "c1".into(),
        channel: "chat".into(),
        turns: vec![
            turn(Role::Customer, "Hi, my order 1234 arrived damaged."),
            turn(
                Role::Agent,
                "Sorry about that. I have issued a full refund for order 1234.",
            ),
            turn(Role::Customer, "Thanks!"),
        ],
        metadata: Default::default(),
    }
}

pub const SUMMARY: &str =
    "The customer's order 5678 arrived late and the agent sent a replacement.";

pub fn findings() -> Vec<Finding> {
    vec![
        Finding {
            category_id: "hallucinated_fact".into(),
            severity: Severity::High as i32,
            summary_span: Some(TextSpan {
                start: 15,
                end: 25,
                text: String::new(),
            }),
            evidence: Some(Evidence {
                none_found: true,
                turn_index: None,
                span: None,
            }),
            detector: "rules.grounding".into(),
            confidence: 0.9,
            explanation: "The order number is not in the conversation.".into(),
            rule_fix: None,
        },
        Finding {
            category_id: "contradiction".into(),
            severity: Severity::Medium as i32,
            summary_span: Some(TextSpan {
                start: 53,
                end: 71,
                text: String::new(),
            }),
            evidence: Some(Evidence {
                none_found: false,
                turn_index: Some(1),
                span: Some(TextSpan {
                    start: 25,
                    end: 45,
                    text: String::new(),
                }),
            }),
            detector: "judge.fact_check".into(),
            confidence: 0.8,
            explanation: "The agent refunded, not replaced.".into(),
            rule_fix: None,
        },
    ]
}

pub fn revise_request(findings: Vec<Finding>, max_tokens: u32) -> ReviseRequest {
    ReviseRequest {
        conversation: Some(conversation()),
        summary: SUMMARY.into(),
        findings,
        instructions: vec![RevisionInstruction {
            category_id: "hallucinated_fact".into(),
            instruction: "Remove or correct facts that the conversation does not state.".into(),
        }],
        params: Some(GenerationParams {
            max_tokens,
            ..Default::default()
        }),
    }
}

/// Polls `check` every 10 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
