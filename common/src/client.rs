//! Channels to other ARF services: TLS, the bearer token, trace context and deadlines on every
//! call. Every client in the suite is built here, once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower::Layer;

use crate::config::Secret;
use crate::telemetry::{ClientTelemetry, ClientTelemetryLayer};

/// A channel with the client layer on it: what generated clients are built over.
pub type GrpcChannel = ClientTelemetry<Channel>;

#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// PEM CA bundle to verify the server; setting it (or using an https:// endpoint) turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// The name to verify in the server's certificate, when it is not the endpoint's host.
    pub tls_domain: Option<String>,
    pub auth_token: Option<Secret>,
    /// Deadline of a call that sets none and is not made while handling a call that has one.
    pub default_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

/// A lazily connected channel: nothing is dialled until the first call, so services can start
/// in any order.
pub fn connect_lazy(endpoint: &str, options: &ClientOptions) -> anyhow::Result<GrpcChannel> {
    let mut ep = Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("invalid endpoint {endpoint:?}"))?;
    ep = ep
        .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if options.tls_ca.is_some()
        || options.tls_identity.is_some()
        || endpoint.starts_with("https://")
    {
        ep = ep
            .tls_config(tls_config(options)?)
            .context("configuring client TLS")?;
    }
    let layer = ClientTelemetryLayer::new(options.auth_token.as_ref(), options.default_timeout)?;
    Ok(layer.layer(ep.connect_lazy()))
}

fn tls_config(options: &ClientOptions) -> anyhow::Result<ClientTlsConfig> {
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &options.tls_ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = &options.tls_identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &options.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(tls)
}
