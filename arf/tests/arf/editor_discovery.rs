//! Editor discovery: the gateway's pool over `dns:///name:port`, with a resolver the test
//! controls, over two real editors (tiny models) on 127.0.0.1 and 127.0.0.2 with one port, as
//! a headless Service's records would be. Replicas that appear join the load-aware pool,
//! replicas that vanish leave it, a call that meets a replica which is gone (its record not yet
//! removed) is retried on another, and a resolution that finds nothing keeps the pool.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arf_common::client::ClientOptions;
use arf_common::config::ServerArgs;
use arf_common::server::{Health, RunningServer, serve_on};
use arf_proto::service_names::EDITOR;
use arf_proto::v1 as pb;
use futures::future::BoxFuture;
use gateway::clients::{EditorPool, Resolve, SystemResolver};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The records of one name, as the test sets them.
#[derive(Default)]
struct Records(Mutex<Vec<SocketAddr>>);

impl Records {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.0.lock().unwrap() = addrs.to_vec();
    }
}

impl Resolve for Records {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        assert_eq!(host, "editors.test");
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(addrs) })
    }
}

/// An editor on `addr`, and the tokens its engine has sampled (which replica served).
async fn editor(addr: SocketAddr, model: &std::path::Path) -> (RunningServer, impl Fn() -> u64) {
    let service = editor_svc::load_editor(&editor_svc::EditorConfig::new(model))
        .await
        .unwrap();
    let loaded = service.editor().unwrap();
    let health = Health::new(&[EDITOR]).await;
    health.set_serving(EDITOR, true).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = serve_on(
        listener,
        &ServerArgs::local(),
        health,
        Routes::new(service.into_server(16 << 20)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    (server, move || loaded.load_snapshot().engine.sampled_tokens)
}

fn request() -> pb::GenerateRequest {
    pb::GenerateRequest {
        messages: vec![pb::ChatMessage {
            role: "user".into(),
            content: "Summarize: my parcel is late.".into(),
        }],
        params: Some(pb::GenerationParams {
            max_tokens: 8,
            temperature: Some(0.0),
            ..Default::default()
        }),
        json_schema: String::new(),
    }
}

/// `n` generations at once through the pool; all must succeed.
async fn generate(pool: &EditorPool, n: usize) {
    let request = request();
    let calls = (0..n).map(|_| pool.generate(&request));
    for answer in futures::future::join_all(calls).await {
        answer.expect("the pool answers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_and_leave_the_pool_as_the_records_change() {
    let models = tempfile::tempdir().unwrap();
    let tiny = arf::suite::tiny_model(models.path()).unwrap();
    // One port on two loopback addresses: what two pods behind one Service look like.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let b_addr: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let (a, a_tokens) = editor(a_addr, &tiny).await;
    let (_b, b_tokens) = editor(b_addr, &tiny).await;

    let records = Arc::new(Records::default());
    let pool = EditorPool::with_resolver(
        &[format!("dns:///editors.test:{port}")],
        &ClientOptions::default(),
        16 << 20,
        records.clone(),
    )
    .unwrap();
    let refused = pool.generate(&request()).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "nothing resolved yet: the stage waits ({refused:?})"
    );

    records.set(&[a_addr]);
    assert_eq!(pool.refresh().await, [format!("http://{a_addr}")]);
    // Counted from here: loading warmed each engine up.
    let before = (a_tokens(), b_tokens());
    generate(&pool, 4).await;
    assert!(
        a_tokens() > before.0 && b_tokens() == before.1,
        "only A is in the pool"
    );

    // B appears: it joins, and shares the load.
    records.set(&[a_addr, b_addr]);
    assert_eq!(pool.refresh().await.len(), 2);
    let before = (a_tokens(), b_tokens());
    generate(&pool, 12).await;
    assert!(
        a_tokens() > before.0 && b_tokens() > before.1,
        "both replicas served: {before:?} -> {:?}",
        (a_tokens(), b_tokens())
    );

    // A goes away before its record does: calls that pick it are retried on B.
    a.shutdown().await.unwrap();
    let before = b_tokens();
    generate(&pool, 8).await;
    assert!(b_tokens() > before);

    // Its record goes: it leaves the pool. A resolution that finds nothing keeps the pool.
    records.set(&[b_addr]);
    assert_eq!(pool.refresh().await, [format!("http://{b_addr}")]);
    records.set(&[]);
    assert_eq!(pool.refresh().await, [format!("http://{b_addr}")]);
    generate(&pool, 2).await;

    // The resolver the gateway uses: the system's, every record of the name.
    let local = SystemResolver.resolve("localhost", port).await.unwrap();
    assert!(local.iter().any(|a| a.ip().is_loopback()), "{local:?}");
}
