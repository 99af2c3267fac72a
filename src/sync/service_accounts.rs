//! The ServiceAccount half of the manual recipe (`kubectl patch serviceaccount default -p
//! '{"imagePullSecrets": [...]}'`), for software that reads pull secrets from a
//! ServiceAccount rather than a Pod (Knative Serving's tag resolution, Tekton, kpack): in every
//! opted-in namespace each ServiceAccount named by `serviceAccounts:` gets the configured
//! secrets, after the entries already there.
//!
//! `ServiceAccount.imagePullSecrets` is an atomic list, so server-side apply would own all of
//! it and fight every other writer. Instead: read (from a watch), merge, and write the whole
//! list with a JSON merge patch that carries the resourceVersion read, so a concurrent edit
//! makes the API server refuse ours (409) and the retry merges again. The entries we added are
//! named in an annotation, so opting out removes exactly those, and an entry someone had
//! before us (same name) stays theirs. A ServiceAccount that does not exist is not created;
//! one that appears later (the controller-manager makes `default` in a new namespace) is
//! served when the watch sees it.
//!
//! The watch: one per configured name, cluster-wide, with the field selector
//! `metadata.name=<name>`, so RBAC can limit `list` and `watch` (as `get` and `patch`) to
//! those names.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::reconcile::{Error, NamespaceMeta};
use crate::names::{FIELD_MANAGER, SERVICE_ACCOUNT_SECRETS_ANNOTATION};
use crate::watch::ConfigStore;

/// ServiceAccounts by (namespace, name).
type Seen = HashMap<(String, String), Arc<ServiceAccount>>;

/// The configured ServiceAccounts as the watch last saw them.
#[derive(Clone, Debug, Default)]
pub struct ServiceAccounts {
    seen: Arc<Mutex<Seen>>,
}

impl ServiceAccounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, ns: &str, name: &str) -> Option<Arc<ServiceAccount>> {
        self.lock().get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    fn apply(&self, event: &watcher::Event<ServiceAccount>, name: &str) {
        let key = |sa: &ServiceAccount| (sa.namespace().unwrap_or_default(), sa.name_any());
        let mut seen = self.lock();
        match event {
            watcher::Event::Apply(sa) | watcher::Event::InitApply(sa) => {
                seen.insert(key(sa), Arc::new(sa.clone()));
            }
            watcher::Event::Delete(sa) => {
                seen.remove(&key(sa));
            }
            // A relist: what it does not list again is gone.
            watcher::Event::Init => seen.retain(|(_, n), _| n != name),
            watcher::Event::InitDone => {}
        }
    }

    /// Watches the configured ServiceAccounts until dropped, and sends the namespace of each
    /// one that changes to `changed`. A reload that changes the names starts the watches
    /// anew.
    pub async fn watch(
        &self,
        client: Client,
        config: Arc<ConfigStore>,
        changed: mpsc::Sender<ObjectRef<NamespaceMeta>>,
    ) {
        let mut reloads = config.subscribe();
        loop {
            let names = config.load().service_accounts().to_vec();
            self.lock().retain(|(_, n), _| names.contains(n));
            let watches = names.iter().map(|name| {
                let api: Api<ServiceAccount> = Api::all(client.clone());
                let selector = format!("metadata.name={name}");
                watcher(api, watcher::Config::default().fields(&selector))
                    .default_backoff()
                    .map(move |event| (name.clone(), event))
                    .boxed()
            });
            let mut events = futures::stream::select_all(watches);
            loop {
                tokio::select! {
                    Some((name, event)) = events.next() => match event {
                        Ok(event) => {
                            self.apply(&event, &name);
                            if let watcher::Event::Apply(sa) | watcher::Event::InitApply(sa)
                                | watcher::Event::Delete(sa) = &event
                                && let Some(ns) = sa.namespace()
                            {
                                let _ = changed.clone().try_send(ObjectRef::new(&ns));
                            }
                        }
                        Err(error) => tracing::warn!(%error, serviceaccount = %name, "watch of the ServiceAccounts failed; retrying"),
                    },
                    changed = reloads.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if config.load().service_accounts() != names.as_slice() {
                            break;
                        }
                    }
                    else => std::future::pending::<()>().await,
                }
            }
        }
    }
}

/// What a ServiceAccount's list becomes: its entries, less ours that are no longer
/// configured, then every wanted one it lacks, in config order. And which entries are ours.
pub fn merged(
    entries: &[String],
    ours: &BTreeSet<String>,
    wanted: &[String],
) -> (Vec<String>, BTreeSet<String>) {
    let mut list: Vec<String> = Vec::with_capacity(entries.len() + wanted.len());
    let mut mine = BTreeSet::new();
    for entry in entries {
        if list.contains(entry) {
            continue;
        }
        if ours.contains(entry) {
            if !wanted.contains(entry) {
                continue;
            }
            mine.insert(entry.clone());
        }
        list.push(entry.clone());
    }
    for secret in wanted {
        if !list.contains(secret) {
            list.push(secret.clone());
            mine.insert(secret.clone());
        }
    }
    (list, mine)
}

fn entries(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

fn ours(sa: &ServiceAccount) -> BTreeSet<String> {
    sa.annotations()
        .get(SERVICE_ACCOUNT_SECRETS_ANNOTATION)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Brings every configured ServiceAccount of `ns` to `wanted` (the configured secrets in an
/// opted-in namespace, none in one that opted out). Returns how many were written.
pub async fn reconcile(
    client: &Client,
    service_accounts: &ServiceAccounts,
    names: &[String],
    ns: &str,
    wanted: &[String],
) -> Result<usize, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut written = 0;
    for name in names {
        let Some(sa) = service_accounts.get(ns, name) else {
            continue;
        };
        let (had, had_ours) = (entries(&sa), ours(&sa));
        let (list, mine) = merged(&had, &had_ours, wanted);
        if list == had && mine == had_ours {
            continue;
        }
        let annotation = if mine.is_empty() {
            Value::Null
        } else {
            json!(mine.iter().cloned().collect::<Vec<_>>().join(","))
        };
        let patch = json!({
            "metadata": {
                // A precondition: someone else's write since our read makes this a 409.
                "resourceVersion": sa.resource_version(),
                "annotations": { SERVICE_ACCOUNT_SECRETS_ANNOTATION: annotation },
            },
            "imagePullSecrets": list.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>(),
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                written += 1;
                tracing::info!(serviceaccount = %name, secrets = %list.join(","), "ServiceAccount's imagePullSecrets updated");
            }
            // Deleted since the watch saw it: nothing to serve.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ours_go_after_theirs_in_config_order_without_duplicates() {
        let (list, mine) = merged(&names(&["own"]), &set(&[]), &names(&["gar", "ghcr"]));
        assert_eq!(list, ["own", "gar", "ghcr"]);
        assert_eq!(mine, set(&["gar", "ghcr"]));
    }

    #[test]
    fn an_entry_someone_had_before_us_stays_theirs() {
        let (list, mine) = merged(&names(&["gar", "own"]), &set(&[]), &names(&["gar", "ghcr"]));
        assert_eq!(list, ["gar", "own", "ghcr"], "theirs keeps its place");
        assert_eq!(mine, set(&["ghcr"]));
        // Opting out removes ours only.
        let (list, mine) = merged(&list, &mine, &[]);
        assert_eq!(list, ["gar", "own"]);
        assert!(mine.is_empty());
    }

    #[test]
    fn a_removed_entry_of_ours_comes_back_and_a_users_later_edit_is_kept() {
        let (list, mine) = merged(
            &names(&["own", "user-added"]),
            &set(&["gar", "ghcr"]),
            &names(&["gar", "ghcr"]),
        );
        assert_eq!(list, ["own", "user-added", "gar", "ghcr"]);
        assert_eq!(mine, set(&["gar", "ghcr"]));
    }

    #[test]
    fn a_secret_no_longer_configured_leaves_and_nothing_changes_twice() {
        let had = names(&["own", "gar", "old"]);
        let (list, mine) = merged(&had, &set(&["gar", "old"]), &names(&["gar"]));
        assert_eq!(list, ["own", "gar"]);
        assert_eq!(mine, set(&["gar"]));
        assert_eq!(
            merged(&list, &mine, &names(&["gar"])),
            (list.clone(), mine.clone()),
            "idempotent"
        );
    }
}
