//! Wiring one gateway: its store, its clients of the other services, the pipeline (resuming what
//! a previous process left unfinished) and the Pipeline API. The `gateway` binary, `arf gateway`
//! and the embedded suite all start a gateway through [`build`].

use std::sync::Arc;

use arf_proto::service_names::PIPELINE;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::{GatewayArgs, GatewayConfig};
use crate::grpc::PipelineService;
use crate::pipeline::{Pipeline, StudentHost};
use crate::store::Store;

/// The Pipeline API's routes and the pipeline behind them. `student_host` serves fine-tuned
/// students for evaluation; without one, a run must name `evaluation.student_endpoint`.
pub async fn build(
    config: &GatewayConfig,
    max_message_bytes: usize,
    student_host: Option<Arc<dyn StudentHost>>,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Pipeline>, Routes)> {
    let (location, gateway_id) = (&config.store, &config.gateway_id);
    let store = Arc::new(Store::connect(location, gateway_id, config.lease).await?);
    tracing::info!(store = %location.redacted(), gateway_id, "store open");
    let clients = config.clients(max_message_bytes)?;
    // Discovered replicas: resolved once before the runs resume, then periodically.
    for pool in std::iter::once(&clients.editors).chain(clients.teacher.as_ref()) {
        if pool.discovers() {
            let found = pool.refresh().await;
            tracing::info!(replicas = ?found, "editor replicas discovered");
            pool.keep_discovering(config.resolve_every, shutdown.clone());
        }
    }
    let pipeline = Pipeline::new(
        store,
        clients,
        config.data_dir.clone(),
        config.student_base.clone(),
        student_host,
        config.client_paths.clone(),
        shutdown.clone(),
    );
    // What a previous process left (and, on a shared store, what dead gateways left) is
    // taken over now; the heartbeat goes on claiming what other gateways leave later.
    let resumed = pipeline.claim_unfinished(true).await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed unfinished runs");
    }
    pipeline.spawn_lease_keeper();
    pipeline.observe_pending();
    let service = PipelineService::new(pipeline.clone(), shutdown);
    Ok((
        pipeline,
        Routes::new(service.into_server(max_message_bytes)),
    ))
}

/// Runs a gateway as a binary until SIGTERM or Ctrl-C: telemetry, health, drain.
pub async fn run(
    server: &arf_common::config::ServerArgs,
    gateway: &GatewayArgs,
    student_host: Option<Arc<dyn StudentHost>>,
) -> std::process::ExitCode {
    arf_common::server::run_binary(
        "arf-gateway",
        &[PIPELINE],
        arf_proto::default_ports::PIPELINE,
        server,
        gateway,
        |health, shutdown| async move {
            let config = gateway.into_config()?;
            let (_, routes) =
                build(&config, server.max_message_bytes, student_host, shutdown).await?;
            health.set_serving(PIPELINE, true).await;
            Ok(routes)
        },
    )
    .await
}
