//! The analyzer over real gRPC: a server on 127.0.0.1:0 and the generated client.

use analyzer_svc::Analyzer;
use analyzer_svc::grpc::AnalyzerService;
use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_common::status::field_violations;
use arf_proto::service_names::ANALYZER;
use arf_proto::v1 as pb;
use arf_proto::v1::analyzer_client::AnalyzerClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::service::Routes;

async fn start() -> (RunningServer, AnalyzerClient<GrpcChannel>) {
    let args = ServerArgs::local();
    let service = AnalyzerService::new(
        Analyzer::default(),
        None,
        args.max_message_bytes,
        CancellationToken::new(),
    );
    let server = serve_loopback(
        &args,
        ANALYZER,
        true,
        Routes::new(service.into_server(args.max_message_bytes)),
    )
    .await
    .unwrap();
    let channel = connect_lazy(&server.endpoint(), &ClientOptions::default()).unwrap();
    (server, AnalyzerClient::new(channel))
}

fn turn(role: pb::Role, text: &str) -> pb::Turn {
    pb::Turn {
        role: role as i32,
        text: text.into(),
    }
}

fn conversation(id: &str) -> pb::Conversation {
    pb::Conversation {
        id: id.into(),
        channel: "chat".into(),
        turns: vec![
            turn(
                pb::Role::Customer,
                "My order 4417 arrived broken. Can I get a replacement?",
            ),
            turn(
                pb::Role::Agent,
                "Sorry about that! Please send us a photo of the damage and we will look into it.",
            ),
            turn(pb::Role::Customer, "Sent the photo just now."),
        ],
        metadata: Default::default(),
    }
}

fn request(id: &str, summary: &str) -> pb::AnalyzeRequest {
    pb::AnalyzeRequest {
        request_id: id.into(),
        conversation: Some(conversation(id)),
        summary: summary.into(),
        options: None,
        revision_of: None,
    }
}

const CLEAN: &str = "Customer reports that order 4417 arrived broken and asks for a replacement. Agent apologizes and asks for a photo of the damage; customer sends it.";
const LEAKY: &str = "Customer (jane.doe@example.com, 555-201-7789) reports that order 4417 arrived broken. Agent asks for a photo of the damage.";

#[tokio::test]
async fn taxonomy_has_every_category_with_instructions_and_detectors() {
    let (_server, mut client) = start().await;
    let taxonomy = client
        .get_taxonomy(pb::GetTaxonomyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!taxonomy.version.is_empty());
    for id in [
        "hallucinated_fact",
        "unsupported_action",
        "omission",
        "speaker_attribution",
        "polarity",
        "pii_exposure",
        "format_violation",
        "truncation",
    ] {
        let category = taxonomy
            .categories
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        assert!(
            !category.revision_instruction.is_empty() && !category.definition.is_empty(),
            "{id}"
        );
        assert_ne!(
            category.default_severity,
            pb::Severity::Unspecified as i32,
            "{id}"
        );
        assert!(!category.detectors.is_empty(), "{id} has no detector");
    }
    assert!(taxonomy.detectors.iter().any(|d| d == "judge.fact_check"));
}

#[tokio::test]
async fn finds_pii_with_its_span_and_leaves_a_clean_summary_alone() {
    let (_server, mut client) = start().await;
    let clean = client
        .analyze(request("c1", CLEAN))
        .await
        .unwrap()
        .into_inner();
    assert!(clean.findings.is_empty(), "{:?}", clean.findings);
    assert_eq!(clean.error_score, 0.0);

    let leaky = client
        .analyze(request("c2", LEAKY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (leaky.request_id.as_str(), leaky.conversation_id.as_str()),
        ("c2", "c2")
    );
    let pii: Vec<_> = leaky
        .findings
        .iter()
        .filter(|f| f.category_id == "pii_exposure")
        .collect();
    assert!(!pii.is_empty(), "{:?}", leaky.findings);
    for f in &pii {
        let span = f.summary_span.as_ref().unwrap();
        assert_eq!(&LEAKY[span.start as usize..span.end as usize], span.text);
        assert!(
            span.text.contains("example.com") || span.text.contains("7789"),
            "{span:?}"
        );
    }
    assert!(leaky.error_score > 0.0);
}

#[tokio::test]
async fn a_revision_gets_the_fidelity_verdict_beside_its_findings() {
    let (_server, mut client) = start().await;
    let leaky = client
        .analyze(request("o", LEAKY))
        .await
        .unwrap()
        .into_inner();
    let revise = |summary: &str| {
        let mut r = request("o", summary);
        r.revision_of = Some(pb::RevisionOf {
            original_summary: LEAKY.into(),
            original_findings: leaky.findings.clone(),
        });
        r
    };
    // The PII deleted, the rest kept: passes, and is close to its original.
    let fixed =
        "Customer reports that order 4417 arrived broken. Agent asks for a photo of the damage.";
    let answer = client.analyze(revise(fixed)).await.unwrap().into_inner();
    let fidelity = answer.fidelity.unwrap();
    assert!(fidelity.passed && fidelity.close, "{fidelity:?}");
    // Nothing to flag, and nothing left: the detectors are happy, the guard is not.
    let answer = client.analyze(revise("{{#1}}")).await.unwrap().into_inner();
    let fidelity = answer.fidelity.unwrap();
    assert!(!fidelity.passed, "{fidelity:?}");
    assert!(
        fidelity.refusals.iter().any(|r| r.check == "markup"),
        "{fidelity:?}"
    );
    // A plain analysis has no verdict.
    let plain = client
        .analyze(request("p", CLEAN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plain.fidelity, None);
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let (_server, mut client) = start().await;
    let mut cases: Vec<(pb::AnalyzeRequest, &str)> = Vec::new();
    cases.push((request("a", "  "), "summary"));
    let mut r = request("a", CLEAN);
    r.conversation.as_mut().unwrap().turns.clear();
    cases.push((r, "conversation.turns"));
    let mut r = request("a", CLEAN);
    r.conversation.as_mut().unwrap().turns[1].role = 0;
    cases.push((r, "conversation.turns[1].role"));
    let mut r = request("a", CLEAN);
    r.conversation = None;
    cases.push((r, "conversation"));
    let mut r = request("a", CLEAN);
    r.options = Some(pb::AnalyzeOptions {
        categories: vec!["omission".into(), "typo".into()],
        ..Default::default()
    });
    cases.push((r, "options.categories[1]"));
    let mut r = request("a", CLEAN);
    r.options = Some(pb::AnalyzeOptions {
        detectors: vec!["nonsense".into()],
        ..Default::default()
    });
    cases.push((r, "options.detectors[0]"));
    cases.push((request("a", &"word ".repeat(10_000)), "summary"));
    let mut r = request("a", CLEAN);
    r.revision_of = Some(pb::RevisionOf {
        original_summary: LEAKY.into(),
        original_findings: vec![pb::Finding {
            category_id: "pii_exposure".into(),
            summary_span: Some(pb::TextSpan {
                start: 5,
                end: 5_000,
                text: String::new(),
            }),
            ..Default::default()
        }],
    });
    cases.push((r, "revision_of.original_findings[0].summary_span"));
    let mut r = request("a", CLEAN);
    r.revision_of = Some(pb::RevisionOf::default());
    cases.push((r, "revision_of.original_summary"));
    // Rating needs a judge endpoint, which this analyzer lacks; a missing conversation is still
    // named as the bad field.
    let rated = client
        .rate(pb::RateRequest {
            request_id: "r".into(),
            conversation: Some(conversation("r")),
            summary: CLEAN.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(rated.code(), Code::FailedPrecondition, "{rated:?}");
    assert!(rated.message().contains("--judge-endpoint"), "{rated:?}");
    let no_conversation = client
        .rate(pb::RateRequest {
            summary: CLEAN.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(field_violations(&no_conversation)[0].0, "conversation");
    for (request, field) in cases {
        let status = client.analyze(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let violations = field_violations(&status);
        assert_eq!(
            violations.first().map(|v| v.0.as_str()),
            Some(field),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn model_judged_detectors_without_an_endpoint_are_refused_not_skipped() {
    let (_server, mut client) = start().await;
    let mut r = request("a", CLEAN);
    r.options = Some(pb::AnalyzeOptions {
        model_judged: true,
        ..Default::default()
    });
    assert_eq!(
        client.analyze(r).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
}

#[tokio::test]
async fn the_stream_answers_in_order_with_the_same_findings_as_unary_calls() {
    let (_server, mut client) = start().await;
    let requests: Vec<_> = (0..300)
        .map(|i| request(&format!("r{i}"), if i % 3 == 0 { LEAKY } else { CLEAN }))
        .collect();
    let mut responses = client
        .analyze_stream(futures::stream::iter(requests.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = responses.message().await.unwrap() {
        got.push(r);
    }
    assert_eq!(got.len(), 300);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.request_id, format!("r{i}"), "order is preserved");
    }
    let unary = client
        .analyze(requests[3].clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.findings, got[3].findings);
    assert!(!got[3].findings.is_empty() && got[4].findings.is_empty());
}

#[tokio::test]
async fn a_bad_request_ends_the_stream_with_its_id() {
    let (_server, mut client) = start().await;
    let requests = vec![
        request("ok", CLEAN),
        request("broken", ""),
        request("never", CLEAN),
    ];
    let mut responses = client
        .analyze_stream(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(responses.message().await.unwrap().unwrap().request_id, "ok");
    let status = responses.message().await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("broken"), "{status:?}");
}

#[tokio::test]
async fn profile_counts_categories_channels_and_plans_revisions() {
    let (_server, mut client) = start().await;
    let leaky = client
        .analyze(request("p1", LEAKY))
        .await
        .unwrap()
        .into_inner();
    let item = |id: &str, channel: &str, findings: Vec<pb::Finding>| pb::AnalyzedSummary {
        conversation_id: id.into(),
        channel: channel.into(),
        findings,
    };
    let messages = vec![
        pb::ProfileRequest {
            options: Some(pb::ProfileOptions { max_exemplars: 2 }),
            items: vec![item("p1", "chat", leaky.findings.clone())],
        },
        pb::ProfileRequest {
            options: None,
            items: vec![
                item("p2", "chat", vec![]),
                item("p3", "email", leaky.findings.clone()),
                item("p4", "email", vec![]),
            ],
        },
    ];
    let profile = client
        .profile(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((profile.summaries, profile.flagged), (4, 2));
    let pii = profile
        .categories
        .iter()
        .find(|c| c.category_id == "pii_exposure")
        .unwrap();
    assert_eq!(pii.summaries, 2);
    assert!((pii.rate - 0.5).abs() < 1e-9);
    assert_eq!(profile.channels.len(), 2);
    let plan: Vec<_> = profile
        .revision_plan
        .iter()
        .map(|t| t.conversation_id.as_str())
        .collect();
    assert_eq!(plan.len(), 2);
    assert!(plan.contains(&"p1") && plan.contains(&"p3"));
    assert!(
        profile
            .revision_plan
            .iter()
            .all(|t| !t.instructions.is_empty()
                && t.instructions.iter().all(|i| !i.instruction.is_empty()))
    );
    assert!(profile.markdown.contains("pii"), "{}", profile.markdown);

    let mut bad = leaky.findings[0].clone();
    bad.category_id = "typo".into();
    let status = client
        .profile(futures::stream::iter(vec![pb::ProfileRequest {
            options: None,
            items: vec![item("x", "chat", vec![bad])],
        }]))
        .await
        .unwrap_err();
    assert_eq!(
        field_violations(&status)[0].0,
        "items[0].findings[0].category_id"
    );
}
