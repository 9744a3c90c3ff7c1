//! grpc.health.v1 per service. A service is NOT_SERVING until it says otherwise (a model
//! service once its model has loaded and answered a warm-up); the server as a whole ("")
//! is SERVING only while every one of its services is.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Arc<[&'static str]>,
    serving: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Health {
    /// Every named service starts NOT_SERVING.
    pub async fn new(services: &[&'static str]) -> Self {
        let reporter = HealthReporter::new();
        let health = Self {
            reporter,
            names: services.into(),
            serving: Arc::new(Mutex::new(services.iter().map(|s| (*s, false)).collect())),
        };
        health.publish().await;
        health
    }

    pub fn services(&self) -> &[&'static str] {
        &self.names
    }

    pub async fn set_serving(&self, service: &'static str, serving: bool) {
        self.serving.lock().await.insert(service, serving);
        self.publish().await;
    }

    /// Every service NOT_SERVING: the first thing a shutdown does, so load balancers move away.
    pub async fn set_all_not_serving(&self) {
        self.serving
            .lock()
            .await
            .values_mut()
            .for_each(|s| *s = false);
        self.publish().await;
    }

    pub(crate) fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    async fn publish(&self) {
        let serving = self.serving.lock().await.clone();
        let status = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        for (service, up) in &serving {
            self.reporter
                .set_service_status(*service, status(*up))
                .await;
        }
        self.reporter
            .set_service_status("", status(serving.values().all(|s| *s)))
            .await;
    }
}
