//! Secret sync (placeholder while the webhook core lands).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigStore;
use crate::metrics::Metrics;

pub async fn connect() -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_default().await?)
}

pub async fn run(
    _client: kube::Client,
    _namespace: String,
    _config: Arc<ConfigStore>,
    _metrics: Arc<Metrics>,
    _resync: Duration,
    _stop: impl Future<Output = ()>,
) {
}
