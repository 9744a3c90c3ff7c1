//! Server configuration shared by every service binary. Each service has its own clap struct
//! that flattens [`ServerArgs`]; every flag can also come from an `ARF_*` environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A secret (a bearer token): its `Debug` and `Display` never show the value, so a config
/// struct can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(s.to_string()))
    }
}

/// Listening, limits, shutdown, TLS and auth: what every ARF server needs.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on (each service has its own default port).
    #[arg(long, env = "ARF_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Largest gRPC message accepted or sent, in bytes. Datasets are streamed row by row,
    /// so this bounds one row, not a dataset.
    #[arg(long, env = "ARF_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Upper bound on any one call, in seconds (a client's shorter deadline wins).
    #[arg(long, env = "ARF_REQUEST_TIMEOUT_SECS", default_value_t = 600)]
    pub request_timeout_secs: u64,

    /// Calls served at once; beyond it calls are refused with RESOURCE_EXHAUSTED and RetryInfo
    /// instead of queueing without bound. Health checks are never refused.
    #[arg(long, env = "ARF_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: usize,

    /// On SIGINT/SIGTERM, how long in-flight calls may take to finish before they are dropped.
    #[arg(long, env = "ARF_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// PEM certificate chain: serve TLS. Needs --tls-key.
    #[arg(long, env = "ARF_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "ARF_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: require client certificates signed by it (mutual TLS).
    #[arg(long, env = "ARF_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require `authorization: Bearer <token>` on every call but health checks.
    #[arg(long, env = "ARF_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<Secret>,

    /// Serve beyond loopback without --auth-token or client certificates (--tls-client-ca):
    /// refused unless this says the operator means it (then a loud warning at start-up).
    #[arg(long, env = "ARF_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// A second, plaintext address that serves grpc.health.v1 alone (no TLS, no token): for
    /// probes that cannot speak TLS (Kubernetes' gRPC probes). It answers what the main
    /// server's health says, and nothing else.
    #[arg(long, env = "ARF_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Log lines on stderr: `text` for people (coloured on a terminal only), `json` (one object
    /// a line, with its span's fields) for log collectors.
    #[arg(long, env = "ARF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub use crate::telemetry::LogFormat;

impl ServerArgs {
    /// Defaults suitable for tests and the embedded demo: loopback, an OS-chosen port.
    pub fn local() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout_secs: 600,
            max_concurrent_requests: 256,
            shutdown_grace_secs: 30,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_token: None,
            allow_unauthenticated: false,
            health_listen: None,
            log_format: LogFormat::Text,
        }
    }

    /// Refuses to serve an address beyond loopback that anyone on the network could call:
    /// no bearer token and no client certificates, unless --allow-unauthenticated.
    pub fn check_exposure(&self, default_port: u16) -> anyhow::Result<()> {
        let addr = self.listen_or(default_port);
        let authenticated = self.auth_token.is_some() || self.tls_client_ca.is_some();
        if addr.ip().is_loopback() || authenticated {
            return Ok(());
        }
        anyhow::ensure!(
            self.allow_unauthenticated,
            "refusing to listen on {addr} without authentication: anyone who can reach it could call \
             every RPC. Set --auth-token (or ARF_AUTH_TOKEN), or --tls-client-ca for client certificates, \
             or --listen 127.0.0.1:{}; --allow-unauthenticated if you mean it",
            addr.port()
        );
        tracing::warn!(%addr, "SERVING WITHOUT AUTHENTICATION beyond loopback (--allow-unauthenticated): anyone who can reach this address can call every RPC");
        Ok(())
    }

    pub fn listen_or(&self, default_port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn serving_beyond_loopback_needs_authentication_or_an_explicit_flag() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
                .unwrap()
                .server
        };
        let open = parse(&["--listen", "0.0.0.0:50051"]);
        let err = open.check_exposure(50051).unwrap_err().to_string();
        assert!(err.contains("--auth-token"), "{err}");
        assert!(
            parse(&[]).check_exposure(50051).is_err(),
            "the default listens on every interface"
        );
        parse(&["--listen", "127.0.0.1:50051"])
            .check_exposure(0)
            .unwrap();
        parse(&["--listen", "[::1]:50051"])
            .check_exposure(0)
            .unwrap();
        parse(&["--listen", "0.0.0.0:1", "--auth-token", "t"])
            .check_exposure(0)
            .unwrap();
        parse(&["--listen", "0.0.0.0:1", "--allow-unauthenticated"])
            .check_exposure(0)
            .unwrap();
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let cli = Cli::try_parse_from(["x", "--auth-token", "hunter2-secret"]).unwrap();
        assert_eq!(
            cli.server.auth_token.as_ref().unwrap().expose(),
            "hunter2-secret"
        );
        let logged = format!("{cli:?}");
        assert!(!logged.contains("hunter2"), "{logged}");
        assert!(logged.contains("redacted"));
    }

    #[test]
    fn tls_key_without_cert_is_refused() {
        assert!(Cli::try_parse_from(["x", "--tls-key", "k.pem"]).is_err());
    }
}
