//! The source Secrets of the injector's namespace: one watch, run by the sync on the leader,
//! shared with the credential checker. Its store keeps no managed fields, and no data of
//! Secrets that are not pull secrets (Helm keeps its releases as large Secrets here).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::names::{DOCKER_CFG, DOCKER_CONFIG_JSON};

/// A handle on the sources' store: empty until a watch has listed them, and again once that
/// watch ends. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sources {
    tx: Arc<watch::Sender<Option<Store<Secret>>>>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }
}

impl Sources {
    /// The store, if a running watch has listed the sources.
    pub fn get(&self) -> Option<Store<Secret>> {
        self.tx.borrow().clone()
    }

    /// Waits until a running watch has listed the sources.
    pub async fn ready(&self) -> Store<Secret> {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let store = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|s| s.clone());
        match store {
            Some(store) => store,
            None => std::future::pending().await,
        }
    }

    /// Watches the Secrets of `namespace` until dropped, calling `changed` with each one
    /// touched. The store is published once listed (one waiter here: the store's readiness
    /// wakes only one) and withdrawn when the watch ends.
    pub async fn watch(&self, client: Client, namespace: &str, mut changed: impl FnMut(&Secret)) {
        let (store, writer) = reflector::store::<Secret>();
        let _withdraw = Withdraw(&self.tx);
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let events = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(slim_source),
        )
        .touched_objects()
        .for_each(|secret| {
            match secret {
                Ok(secret) => changed(&secret),
                Err(error) => {
                    tracing::warn!(%error, "watch of the source Secrets failed; retrying")
                }
            }
            futures::future::ready(())
        });
        let publish = async {
            if store.wait_until_ready().await.is_ok() {
                tracing::debug!(sources = store.state().len(), "source Secrets listed");
                self.tx.send_replace(Some(store.clone()));
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = events => {}
            () = publish => {}
        }
    }
}

struct Withdraw<'a>(&'a watch::Sender<Option<Store<Secret>>>);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

/// What the sources' store keeps of a Secret in our namespace: no managed fields, and no
/// data unless it is of a pull-secret type.
fn slim_source(secret: &mut Secret) {
    secret.managed_fields_mut().clear();
    let type_ = secret.type_.as_deref().unwrap_or_default();
    if type_ != DOCKER_CONFIG_JSON && type_ != DOCKER_CFG {
        secret.data = None;
        secret.string_data = None;
    }
}
