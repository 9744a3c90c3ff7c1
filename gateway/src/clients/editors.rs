//! The editor replicas, called by load: power-of-two-choices on the number of calls each
//! replica has in flight from this gateway, and a retry on another replica (with a short
//! backoff) when one fails in a way `faults` calls transient (UNAVAILABLE, RESOURCE_EXHAUSTED,
//! a connection dropped mid-call, ...). Every call the gateway makes to an editor is
//! idempotent, so a retry is always safe. When every replica has failed, the status goes back
//! to the stage, which waits (`Pipeline::call`) with a longer backoff.
//!
//! The replicas are a fixed list (`http://host:port`), or discovered: `dns:///name:port` is
//! resolved again every few seconds (`--editor-resolve-secs`), every A/AAAA record a replica,
//! which is what a Kubernetes headless Service gives. Replicas that appear join the pool at the
//! next resolution, replicas that vanish leave it (a call in flight on one fails over to
//! another, as for any transient fault), and a resolution that fails or finds nothing keeps
//! the replicas known so far.
//!
//! Not tonic's `balance_list` (it sees every replica as idle, so p2c degrades to random), and
//! not tower's `Balance` either: it cannot be told to avoid the replica that just failed this
//! very call, which is what "retry on another replica" needs.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use futures::future::BoxFuture;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::faults::{Fault, classify};

struct Replica {
    endpoint: String,
    /// The name it was discovered under (`None`: a fixed endpoint).
    origin: Option<String>,
    client: EditorClient<GrpcChannel>,
    in_flight: AtomicUsize,
}

/// Decrements a replica's in-flight count when the call ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Finds the addresses behind a name: the system's resolver (what a pod's resolv.conf points at)
/// in the gateway, one the test controls in the tests.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// getaddrinfo, through tokio: every A and AAAA record of the name.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// One `--editor` value: a replica, or a name whose records are the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Fixed(String),
    Dns { host: String, port: u16 },
}

impl Target {
    fn parse(endpoint: &str) -> anyhow::Result<Self> {
        let Some(rest) = endpoint.strip_prefix("dns:") else {
            return Ok(Self::Fixed(endpoint.to_string()));
        };
        // dns:///name:port, or dns://authority/name:port (the authority, a DNS server, is not
        // supported: the system's resolver is asked).
        let name = match rest.strip_prefix("//") {
            Some(rest) => {
                let (authority, name) = rest.split_once('/').unwrap_or((rest, ""));
                anyhow::ensure!(
                    authority.is_empty(),
                    "{endpoint:?}: a DNS server in the address ({authority:?}) is not supported; \
                     write dns:///name:port (the system's resolver is asked)"
                );
                name
            }
            None => rest,
        };
        let (host, port) = name.rsplit_once(':').ok_or_else(|| {
            anyhow::anyhow!("{endpoint:?}: expected dns:///name:port (the port is needed)")
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("{endpoint:?}: {port:?} is not a port"))?;
        anyhow::ensure!(!host.is_empty(), "{endpoint:?}: no name to resolve");
        Ok(Self::Dns {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
        })
    }
}

/// How replicas are made: the clients' settings.
struct Connector {
    options: ClientOptions,
    max_message_bytes: usize,
}

impl Connector {
    fn replica(
        &self,
        endpoint: &str,
        origin: Option<&str>,
        options: &ClientOptions,
    ) -> anyhow::Result<Arc<Replica>> {
        let client = EditorClient::new(connect_lazy(endpoint, options)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        Ok(Arc::new(Replica {
            endpoint: endpoint.to_string(),
            origin: origin.map(str::to_string),
            client,
            in_flight: AtomicUsize::new(0),
        }))
    }

    /// A discovered replica: by address, TLS when the clients use it, its certificate checked
    /// against the name that was resolved (a pod's IP is in no certificate).
    fn discovered(&self, host: &str, addr: SocketAddr) -> anyhow::Result<Arc<Replica>> {
        let tls = self.options.tls_ca.is_some() || self.options.tls_identity.is_some();
        let mut options = self.options.clone();
        if tls && options.tls_domain.is_none() {
            options.tls_domain = Some(host.to_string());
        }
        let scheme = if tls { "https" } else { "http" };
        self.replica(&format!("{scheme}://{addr}"), Some(host), &options)
    }
}

#[derive(Clone)]
pub struct EditorPool {
    replicas: Arc<RwLock<Arc<[Arc<Replica>]>>>,
    targets: Arc<[Target]>,
    connector: Arc<Connector>,
    resolver: Arc<dyn Resolve>,
}

impl EditorPool {
    pub fn connect(
        endpoints: &[String],
        options: &ClientOptions,
        max_message_bytes: usize,
    ) -> anyhow::Result<Self> {
        Self::with_resolver(
            endpoints,
            options,
            max_message_bytes,
            Arc::new(SystemResolver),
        )
    }

    /// As [`EditorPool::connect`], resolving `dns:` endpoints with `resolver`. Discovered
    /// replicas appear at the first [`EditorPool::refresh`].
    pub fn with_resolver(
        endpoints: &[String],
        options: &ClientOptions,
        max_message_bytes: usize,
        resolver: Arc<dyn Resolve>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !endpoints.is_empty(),
            "at least one editor endpoint is needed"
        );
        let targets = endpoints
            .iter()
            .map(|e| Target::parse(e.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let connector = Connector {
            options: options.clone(),
            max_message_bytes,
        };
        let fixed = targets
            .iter()
            .filter_map(|t| match t {
                Target::Fixed(e) => Some(connector.replica(e, None, options)),
                Target::Dns { .. } => None,
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            replicas: Arc::new(RwLock::new(fixed.into())),
            targets: targets.into(),
            connector: Arc::new(connector),
            resolver,
        })
    }

    /// Whether any replica comes from discovery (and so needs [`EditorPool::keep_discovering`]).
    pub fn discovers(&self) -> bool {
        self.targets.iter().any(|t| matches!(t, Target::Dns { .. }))
    }

    /// Resolves the `dns:` endpoints again and makes the pool what they say: new addresses
    /// join (fresh replicas), vanished ones leave, the others stay as they are (their
    /// connections and in-flight counts). A name that does not resolve, or resolves to nothing,
    /// keeps its replicas so far. Returns the endpoints now in the pool.
    pub async fn refresh(&self) -> Vec<String> {
        let current = self.snapshot();
        let mut next: Vec<Arc<Replica>> = Vec::with_capacity(current.len());
        for target in self.targets.iter() {
            match target {
                Target::Fixed(endpoint) => next.extend(
                    current
                        .iter()
                        .filter(|r| r.origin.is_none() && &r.endpoint == endpoint)
                        .cloned(),
                ),
                Target::Dns { host, port } => {
                    let known: Vec<&Arc<Replica>> = current
                        .iter()
                        .filter(|r| r.origin.as_deref() == Some(host.as_str()))
                        .collect();
                    let addrs: BTreeSet<SocketAddr> = match self.resolver.resolve(host, *port).await
                    {
                        Ok(addrs) => addrs.into_iter().collect(),
                        Err(e) => {
                            tracing::warn!(host, error = %e, "cannot resolve the editors; keeping the replicas known so far");
                            BTreeSet::new()
                        }
                    };
                    if addrs.is_empty() {
                        next.extend(known.into_iter().cloned());
                        continue;
                    }
                    for addr in addrs {
                        let same = known
                            .iter()
                            .find(|r| r.endpoint.ends_with(&format!("://{addr}")));
                        match same {
                            Some(r) => next.push((*r).clone()),
                            None => match self.connector.discovered(host, addr) {
                                Ok(r) => {
                                    tracing::info!(endpoint = %r.endpoint, host, "editor replica joined");
                                    next.push(r);
                                }
                                Err(e) => {
                                    tracing::warn!(%addr, error = %format!("{e:#}"), "cannot make a client of a discovered editor")
                                }
                            },
                        }
                    }
                }
            }
        }
        for gone in current
            .iter()
            .filter(|r| !next.iter().any(|n| Arc::ptr_eq(n, r)))
        {
            tracing::info!(endpoint = %gone.endpoint, "editor replica left");
        }
        let endpoints = next.iter().map(|r| r.endpoint.clone()).collect();
        *self.replicas.write().unwrap_or_else(|p| p.into_inner()) = next.into();
        endpoints
    }

    /// Resolves every `every` until `shutdown`, the first time `every` from now (the caller
    /// has just resolved).
    pub fn keep_discovering(&self, every: Duration, shutdown: CancellationToken) {
        if !self.discovers() {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                pool.refresh().await;
            }
        });
    }

    fn snapshot(&self) -> Arc<[Arc<Replica>]> {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The replicas' endpoints now.
    pub fn endpoints(&self) -> Vec<String> {
        self.snapshot().iter().map(|r| r.endpoint.clone()).collect()
    }

    /// How many replicas the pool spreads calls over now.
    pub fn replica_count(&self) -> usize {
        self.snapshot().len()
    }

    /// Runs `call` on the least loaded of two random replicas; on a transient fault retries on
    /// another one after a backoff (the server's RetryInfo if it sent one). Other errors are
    /// the caller's to handle. Each attempt picks from the pool as it is then, so a replica
    /// that left is not tried again and one that joined can be.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(EditorClient<GrpcChannel>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut failed: Vec<String> = Vec::new();
        let mut last = None;
        let mut attempt = 0;
        loop {
            let replicas = self.snapshot();
            // Every replica gets a chance, and a lone replica a few.
            if attempt >= (replicas.len() * 2).max(3) {
                break;
            }
            let Some(replica) = pick(&replicas, &failed) else {
                return Err(Status::unavailable(format!(
                    "no editor replica is known yet ({:?} resolved to none)",
                    self.targets
                )));
            };
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(&replica.in_flight);
            let result = call(replica.client.clone()).await;
            drop(guard);
            match result {
                Err(status) if classify(&status) == Fault::Transient => {
                    tracing::warn!(endpoint = %replica.endpoint, code = ?status.code(), attempt, "editor replica refused; retrying on another");
                    let backoff = arf_common::status::retry_after(&status)
                        .unwrap_or_else(|| Duration::from_millis(50 << attempt.min(6)));
                    failed.push(replica.endpoint.clone());
                    if replicas.iter().all(|r| failed.contains(&r.endpoint)) {
                        failed.clear(); // all tried: start over, after the backoff
                    }
                    last = Some(status);
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no editor replica answered")))
    }

    pub async fn revise(&self, request: &pb::ReviseRequest) -> Result<pb::ReviseResponse, Status> {
        self.call(|mut editor| {
            let request = request.clone();
            async move { editor.revise(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn generate(
        &self,
        request: &pb::GenerateRequest,
    ) -> Result<pb::GenerateResponse, Status> {
        self.call(|mut editor| {
            let request = request.clone();
            async move { editor.generate(request).await.map(|r| r.into_inner()) }
        })
        .await
    }
}

/// Power of two choices among the replicas not yet failed for this call.
fn pick(replicas: &[Arc<Replica>], failed: &[String]) -> Option<Arc<Replica>> {
    let candidates: Vec<&Arc<Replica>> = replicas
        .iter()
        .filter(|r| !failed.contains(&r.endpoint))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let mut rng = rand::rng();
    let a = candidates[rng.random_range(0..candidates.len())];
    let b = candidates[rng.random_range(0..candidates.len())];
    let load = |r: &Replica| r.in_flight.load(Ordering::Relaxed);
    Some(if load(b) < load(a) { b } else { a }.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_and_dns_endpoints_and_refuses_what_it_cannot_resolve() {
        assert_eq!(
            Target::parse("http://10.0.0.1:50052").unwrap(),
            Target::Fixed("http://10.0.0.1:50052".into())
        );
        assert_eq!(
            Target::parse("dns:///editor-headless.arf.svc.cluster.local:50052").unwrap(),
            Target::Dns {
                host: "editor-headless.arf.svc.cluster.local".into(),
                port: 50052
            }
        );
        assert_eq!(
            Target::parse("dns:editors:7").unwrap(),
            Target::Dns {
                host: "editors".into(),
                port: 7
            }
        );
        for bad in [
            "dns:///editors",
            "dns:///editors:x",
            "dns://8.8.8.8/editors:1",
            "dns:///:1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
