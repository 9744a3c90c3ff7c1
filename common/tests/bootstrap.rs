//! The shared server bootstrap, exercised over real sockets through the generated clients:
//! health, reflection, auth, TLS and load shedding.

mod support;

use std::sync::Arc;
use std::time::Duration;

use arf_common::client::ClientOptions;
use arf_common::config::{Secret, ServerArgs};
use arf_proto::service_names::EDITOR;
use arf_proto::v1::editor_client::EditorClient;
use arf_proto::v1::{GenerateRequest, GetModelInfoRequest};
use support::{channel, health_of, start_editor};
use tokio::sync::Semaphore;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn health_follows_the_service_and_shutdown() {
    let args = ServerArgs::local();
    let server = start_editor(&args, Arc::new(Semaphore::new(1))).await;
    let ch = channel(&server, &ClientOptions::default());
    assert_eq!(
        health_of(ch.clone(), EDITOR).await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health_of(ch.clone(), "").await.unwrap(),
        ServingStatus::Serving as i32
    );

    server.health().set_serving(EDITOR, false).await;
    assert_eq!(
        health_of(ch.clone(), EDITOR).await.unwrap(),
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        health_of(ch.clone(), "").await.unwrap(),
        ServingStatus::NotServing as i32
    );
    server.shutdown().await.unwrap();
    assert!(
        health_of(ch, EDITOR).await.is_err(),
        "the server is gone after shutdown"
    );
}

#[tokio::test]
async fn reflection_lists_the_service_and_health_only() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = start_editor(&ServerArgs::local(), Arc::new(Semaphore::new(1))).await;
    let mut client = ServerReflectionClient::new(channel(&server, &ClientOptions::default()));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a list of services");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["arf.v1.Editor", "grpc.health.v1.Health"]);
}

#[tokio::test]
async fn bearer_token_is_required_except_for_health() {
    let mut args = ServerArgs::local();
    args.auth_token = Some(Secret::new("s3cret"));
    let server = start_editor(&args, Arc::new(Semaphore::new(1))).await;

    let anonymous = channel(&server, &ClientOptions::default());
    let status = EditorClient::new(anonymous.clone())
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        health_of(anonymous, EDITOR).await.unwrap(),
        ServingStatus::Serving as i32
    );

    let wrong = ClientOptions {
        auth_token: Some(Secret::new("guess")),
        ..Default::default()
    };
    let status = EditorClient::new(channel(&server, &wrong))
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let right = ClientOptions {
        auth_token: Some(Secret::new("s3cret")),
        ..Default::default()
    };
    let info = EditorClient::new(channel(&server, &right))
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.into_inner().model_id, "test");
}

#[tokio::test]
async fn over_the_limit_calls_are_refused_with_retry_info_and_health_still_answers() {
    let mut args = ServerArgs::local();
    args.max_concurrent_requests = 1;
    let gate = Arc::new(Semaphore::new(0));
    let server = start_editor(&args, gate.clone()).await;
    let ch = channel(&server, &ClientOptions::default());

    let mut first_client = EditorClient::new(ch.clone());
    let first =
        tokio::spawn(async move { first_client.generate(GenerateRequest::default()).await });
    // Wait until the first call holds the only slot.
    for _ in 0..200 {
        let refused = EditorClient::new(ch.clone())
            .get_model_info(GetModelInfoRequest {})
            .await;
        if let Err(status) = refused {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                arf_common::status::retry_after(&status).is_some(),
                "RetryInfo is attached"
            );
            assert_eq!(
                health_of(ch.clone(), EDITOR).await.unwrap(),
                ServingStatus::Serving as i32
            );
            gate.add_permits(1);
            first.await.unwrap().expect("the call in flight completes");
            // The slot is free again.
            EditorClient::new(ch)
                .get_model_info(GetModelInfoRequest {})
                .await
                .unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the second call was never refused");
}

#[tokio::test]
async fn mutual_tls_handshake_with_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = arf_common::test_ca::TestCa::new(dir.path());
    let (server_cert, server_key) = ca.issue("localhost", "server");
    let (client_cert, client_key) = ca.issue("arf-client", "client");

    let mut args = ServerArgs::local();
    args.tls_cert = Some(server_cert);
    args.tls_key = Some(server_key);
    args.tls_client_ca = Some(ca.ca_file());
    let server = start_editor(&args, Arc::new(Semaphore::new(1))).await;

    let trusted = ClientOptions {
        tls_ca: Some(ca.ca_file()),
        tls_identity: Some((client_cert, client_key)),
        ..Default::default()
    };
    assert_eq!(
        health_of(channel(&server, &trusted), EDITOR).await.unwrap(),
        ServingStatus::Serving as i32
    );

    let no_client_cert = ClientOptions {
        tls_ca: Some(ca.ca_file()),
        ..Default::default()
    };
    assert!(
        health_of(channel(&server, &no_client_cert), EDITOR)
            .await
            .is_err(),
        "mTLS refuses a client without a certificate"
    );

    // A prober that cannot do TLS (Kubernetes' gRPC probes) asks the plaintext health port:
    // it answers health, follows the main server's, and serves nothing else.
    args.health_listen = Some("127.0.0.1:0".parse().unwrap());
    args.auth_token = Some(Secret::new("s3cret"));
    let server = start_editor(&args, Arc::new(Semaphore::new(1))).await;
    let probe = arf_common::client::connect_lazy(
        &format!("http://{}", server.health_addr().unwrap()),
        &ClientOptions::default(),
    )
    .unwrap();
    assert_eq!(
        health_of(probe.clone(), EDITOR).await.unwrap(),
        ServingStatus::Serving as i32,
        "no TLS, no token"
    );
    let refused = EditorClient::new(probe.clone())
        .get_model_info(GetModelInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unimplemented,
        "health only: {refused:?}"
    );
    server.health().set_serving(EDITOR, false).await;
    assert_eq!(
        health_of(probe, EDITOR).await.unwrap(),
        ServingStatus::NotServing as i32,
        "the same reporter as the main server"
    );
}
