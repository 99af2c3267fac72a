//! An in-memory Kubernetes API server for the secret sync: the tests serve it through kube-rs'
//! mock service (`tower-test`), the scale benchmark over plain HTTP on loopback to the release
//! binary. It keeps Namespaces, Secrets and Events with the semantics the sync relies on:
//! list and watch with resourceVersions (and 410 Gone once compacted), metadata-only lists,
//! `get`, server-side apply, `create`, `delete` with uid/resourceVersion preconditions, an
//! immutable Secret type; and Pods for the repairer: a cluster-wide list and watch with a
//! `status.phase` field selector, and the Eviction API with a uid precondition and
//! PodDisruptionBudget refusals; and Leases for the leader election: `get`, `create`, and
//! both patches the election sends (a strategic merge, where `null` removes a field, and a
//! server-side apply that conflicts, without `force`, with another manager's holder). It can add latency, delay one collection's list, answer with
//! injected faults (429 with `Retry-After`, 5xx), and it logs every request.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::time::Instant;

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// One request, as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub watch: bool,
}

impl Logged {
    /// A request on a Secret in another namespace than `own`: the sync's per-copy traffic.
    pub fn is_copy_request(&self, own: &str) -> bool {
        self.path.contains("/secrets") && !self.path.contains(&format!("/namespaces/{own}/"))
    }
}

/// An answer given instead of the real one.
#[derive(Clone, Debug)]
pub struct Fault {
    pub code: u16,
    pub retry_after: Option<u64>,
}

struct Change {
    rv: u64,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
pub struct State {
    pub namespaces: BTreeMap<String, Value>,
    pub secrets: BTreeMap<(String, String), Value>,
    pub pods: BTreeMap<(String, String), Value>,
    pub events: Vec<Value>,
    pub leases: BTreeMap<(String, String), Value>,
    pub service_accounts: BTreeMap<(String, String), Value>,
    /// The field manager owning each Lease's `spec.holderIdentity`.
    lease_holder_owner: HashMap<(String, String), String>,
    /// Evictions answered 429, as when a PodDisruptionBudget allows no disruption.
    pub evictions_blocked: bool,
    rv: u64,
    /// Changes by collection (`namespaces`, `secrets/<ns>`), in resourceVersion order.
    changes: HashMap<String, Vec<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch.
    watch_generation: u64,
    /// While set, open watches deliver nothing (a stalled connection); changes pile up.
    pub watches_stalled: bool,
    /// Answers to give instead of the real one, to the next requests.
    pub faults: VecDeque<Fault>,
    /// Someone else writes the object right after each GET of a Secret, once.
    pub race_after_get: bool,
    pub requests: Vec<Logged>,
    /// Time every request takes.
    pub latency: Duration,
    /// Extra time before a collection's list is answered, by path.
    pub list_delays: HashMap<String, Duration>,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

pub fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code }),
    )
}

fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

impl FakeApi {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kube client whose requests this fake answers, through `layer` (the sync's own
    /// client layers, or `tower::layer::util::Identity`).
    pub fn client_with<L>(&self, layer: &L) -> kube::Client
    where
        L: tower::Layer<
                tower_test::mock::Mock<http::Request<kube::client::Body>, Response<ResponseBody>>,
            >,
        L::Service: tower::Service<http::Request<kube::client::Body>, Response = Response<ResponseBody>>
            + Send
            + 'static,
        <L::Service as tower::Service<http::Request<kube::client::Body>>>::Future: Send + 'static,
        <L::Service as tower::Service<http::Request<kube::client::Body>>>::Error:
            Into<tower::BoxError>,
    {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<ResponseBody>>();
        let api = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let api = api.clone();
                // Each request on its own task: a watch must not hold up the others.
                tokio::spawn(async move { send.send_response(api.handle(request).await) });
            }
        });
        kube::Client::new(layer.layer(service), "default")
    }

    pub fn client(&self) -> kube::Client {
        self.client_with(&tower::layer::util::Identity::new())
    }

    /// Serves the fake over plain HTTP/1.1 until the listener fails.
    pub async fn serve_http(self, listener: tokio::net::TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let api = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Serves the fake on a loopback port and writes a kubeconfig for it to `path`: how the
    /// release binary is pointed at it.
    pub async fn serve_with_kubeconfig(&self, path: &std::path::Path) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(self.clone().serve_http(listener));
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n"
            ),
        )
        .expect("kubeconfig");
        addr
    }

    // ---- objects, as a cluster user would change them ------------------------------------

    pub fn add_namespace(&self, name: &str, opted_in: bool) {
        let mut st = self.state();
        let rv = st.bump();
        let mut labels = json!({ "kubernetes.io/metadata.name": name });
        if opted_in {
            labels["pullsecret-injector.io/inject"] = json!("enabled");
        }
        let ns = json!({ "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": name, "uid": format!("ns-uid-{rv}"), "resourceVersion": rv.to_string(),
                          "labels": labels },
            "spec": { "finalizers": ["kubernetes"] }, "status": { "phase": "Active" } });
        let existed = st.namespaces.insert(name.to_owned(), ns.clone()).is_some();
        st.record("namespaces", if existed { "MODIFIED" } else { "ADDED" }, ns);
        drop(st);
        self.notify();
    }

    pub fn label_namespace(&self, name: &str, opted_in: bool) {
        let mut st = self.state();
        let rv = st.bump();
        let Some(ns) = st.namespaces.get_mut(name) else {
            return;
        };
        let labels = &mut ns["metadata"]["labels"];
        if opted_in {
            labels["pullsecret-injector.io/inject"] = json!("enabled");
        } else if let Some(map) = labels.as_object_mut() {
            map.remove("pullsecret-injector.io/inject");
        }
        ns["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ns = ns.clone();
        st.record("namespaces", "MODIFIED", ns);
        drop(st);
        self.notify();
    }

    /// Creates or replaces a Secret as someone other than the sync would.
    pub fn put_secret(&self, ns: &str, name: &str, mut secret: Value) {
        secret["metadata"]["name"] = json!(name);
        secret["metadata"]["namespace"] = json!(ns);
        let mut st = self.state();
        // A replaced Secret keeps its uid.
        if let Some(uid) = st
            .secrets
            .get(&(ns.to_owned(), name.to_owned()))
            .map(|s| s["metadata"]["uid"].clone())
        {
            secret["metadata"]["uid"] = uid;
        }
        st.put(
            &format!("secrets/{ns}"),
            "Secret",
            |st| &mut st.secrets,
            secret,
        );
        drop(st);
        self.notify();
    }

    pub fn delete_secret(&self, ns: &str, name: &str) {
        let mut st = self.state();
        if let Some(gone) = st.secrets.remove(&(ns.to_owned(), name.to_owned())) {
            st.bump();
            st.record(&format!("secrets/{ns}"), "DELETED", gone);
        }
        drop(st);
        self.notify();
    }

    /// Creates or replaces a Pod (namespace and name from its metadata).
    pub fn put_pod(&self, pod: Value) {
        self.state().put("pods", "Pod", |st| &mut st.pods, pod);
        self.notify();
    }

    /// A ServiceAccount created or replaced by a user (or the controller-manager).
    pub fn put_service_account(&self, ns: &str, name: &str, mut sa: Value) {
        sa["metadata"]["name"] = json!(name);
        sa["metadata"]["namespace"] = json!(ns);
        self.state().put(
            "serviceaccounts",
            "ServiceAccount",
            |st| &mut st.service_accounts,
            sa,
        );
        self.notify();
    }

    pub fn service_account(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .service_accounts
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .pods
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The evictions requested, as `namespace/name`.
    pub fn evictions(&self) -> Vec<String> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == Method::POST && r.path.ends_with("/eviction"))
            .map(|r| {
                let parts: Vec<&str> = r.path.split('/').collect();
                format!("{}/{}", parts[4], parts[6])
            })
            .collect()
    }

    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .leases
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.state()
            .secrets
            .get(&(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Forgets the change history and ends every open watch: watchers that resume from their
    /// resourceVersion get 410 Gone and must list again (an etcd compaction, a restarted API
    /// server).
    pub fn compact(&self) {
        let mut st = self.state();
        st.compacted = st.rv + 1;
        st.changes.clear();
        st.watch_generation += 1;
        st.watches_stalled = false;
        drop(st);
        self.notify();
    }

    /// The next `count` requests are answered with `code` (and `Retry-After`).
    pub fn fail_next(&self, count: usize, code: u16, retry_after: Option<u64>) {
        let mut st = self.state();
        for _ in 0..count {
            st.faults.push_back(Fault { code, retry_after });
        }
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state().requests.clone()
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    // ---- the API --------------------------------------------------------------------------

    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes>,
    {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_owned();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("as=PartialObjectMetadata"));

        let (wait, fault) = {
            let mut st = self.state();
            st.requests.push(Logged {
                at: Instant::now(),
                method: parts.method.clone(),
                path: path.clone(),
                watch,
            });
            let list_delay = if parts.method == Method::GET && !watch {
                st.list_delays.get(&path).copied().unwrap_or_default()
            } else {
                Duration::ZERO
            };
            (st.latency + list_delay, st.faults.pop_front())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(fault) = fault {
            let (code, body) = status(fault.code, "Fault", "injected fault");
            let mut response = json_response(code, &body);
            if let Some(secs) = fault.retry_after
                && let Ok(value) = http::HeaderValue::from_str(&secs.to_string())
            {
                response.headers_mut().insert("retry-after", value);
            }
            return response;
        }

        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = parts.method.as_str();
        let (code, body) = match (method, segments.as_slice()) {
            ("GET", ["version"]) => (
                200,
                json!({ "major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64" }),
            ),
            ("GET", ["api", "v1", "namespaces"]) => {
                return self.collection("namespaces", "Namespace", &query, watch, metadata_only);
            }
            ("GET", ["api", "v1", "serviceaccounts"]) => {
                return self.collection(
                    "serviceaccounts",
                    "ServiceAccount",
                    &query,
                    watch,
                    metadata_only,
                );
            }
            (_, ["api", "v1", "namespaces", ns, "serviceaccounts", name]) => {
                let key = (ns.to_string(), name.to_string());
                let answer = self.state().service_account_request(method, key, &body);
                self.notify();
                answer
            }
            ("GET", ["api", "v1", "pods"]) => {
                return self.collection("pods", "Pod", &query, watch, metadata_only);
            }
            ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
                let key = (ns.to_string(), name.to_string());
                let answer = self.state().evict(key, &body);
                self.notify();
                answer
            }
            ("GET", ["api", "v1", "namespaces", ns, "secrets"]) => {
                return self.collection(
                    &format!("secrets/{ns}"),
                    "Secret",
                    &query,
                    watch,
                    metadata_only,
                );
            }
            (
                "POST",
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                ],
            ) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = (ns.to_string(), name.to_owned());
                self.state().create_lease(key, body)
            }
            (
                _,
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    ns,
                    "leases",
                    name,
                ],
            ) => {
                let key = (ns.to_string(), name.to_string());
                let apply = content_type.starts_with("application/apply-patch");
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                let force = query.get("force").is_some_and(|f| f == "true");
                self.state()
                    .lease_request(method, key, body, apply.then_some((manager, force)))
            }
            ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                self.state().events.push(body.clone());
                (201, body)
            }
            ("PATCH", ["apis", "events.k8s.io", "v1", "namespaces", _, "events", _]) => (200, body),
            ("POST", ["api", "v1", "namespaces", ns, "secrets"]) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = (ns.to_string(), name.to_owned());
                let answer = self.state().create_secret(key, body);
                self.notify();
                answer
            }
            (_, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let key = (ns.to_string(), name.to_string());
                let answer = self.state().secret_request(method, key, body);
                self.notify();
                answer
            }
            _ => status(404, "NotFound", &format!("unexpected {method} {path}")),
        };
        json_response(code, &body)
    }

    fn collection(
        &self,
        collection: &str,
        kind: &str,
        query: &HashMap<String, String>,
        watch: bool,
        metadata_only: bool,
    ) -> Response<ResponseBody> {
        let shape = move |object: &Value| {
            if metadata_only {
                json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": object["metadata"] })
            } else {
                object.clone()
            }
        };
        let selected = selector(query);
        let shape = move |object: &Value| selected(object).then(|| shape(object));
        let st = self.state();
        if !watch {
            let items: Vec<Value> = st
                .objects(collection)
                .into_iter()
                .filter_map(shape)
                .collect();
            let (api_version, list_kind) = if metadata_only {
                ("meta.k8s.io/v1", "PartialObjectMetadataList".to_owned())
            } else {
                ("v1", format!("{kind}List"))
            };
            let list = json!({ "apiVersion": api_version, "kind": list_kind,
                "metadata": { "resourceVersion": st.rv.to_string() }, "items": items });
            return json_response(200, &list);
        }

        let from: u64 = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        if from < st.compacted {
            let (_, gone) = status(410, "Expired", "too old resource version");
            let line = json!({ "type": "ERROR", "object": gone }).to_string() + "\n";
            let body = StreamBody::new(futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from(line),
            ))]));
            return streaming(body.boxed_unsync());
        }
        let deadline = query
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(|s| Instant::now() + Duration::from_secs(s));
        let generation = st.watch_generation;
        // What the watcher holds from its list: an object leaving the selection is DELETED to
        // it, one it never held is not mentioned.
        let held: std::collections::HashSet<String> = st
            .objects(collection)
            .into_iter()
            .filter(|o| shape(o).is_some())
            .map(object_key)
            .collect();
        let cursor = st
            .changes
            .get(collection)
            .map_or(0, |log| log.partition_point(|c| c.rv <= from));
        drop(st);

        let api = self.clone();
        let collection = collection.to_owned();
        let rx = self.changed.subscribe();
        let stream = futures::stream::unfold(
            (api, rx, cursor, held),
            move |(api, mut rx, mut cursor, mut held)| {
                let collection = collection.clone();
                let shape = shape.clone();
                async move {
                    loop {
                        rx.borrow_and_update();
                        {
                            let st = api.state();
                            if st.watch_generation != generation {
                                return None;
                            }
                            let stalled = st.watches_stalled;
                            let log = st
                                .changes
                                .get(&collection)
                                .map(Vec::as_slice)
                                .unwrap_or(&[]);
                            if cursor < log.len() && !stalled {
                                let mut out = String::new();
                                for change in &log[cursor..] {
                                    // An object that leaves the selection is DELETED to
                                    // the watcher, as the API server tells it.
                                    let key = object_key(&change.object);
                                    let (type_, object) = match shape(&change.object) {
                                        Some(object) if change.type_ == "DELETED" => {
                                            held.remove(&key);
                                            (change.type_, object)
                                        }
                                        Some(object) => {
                                            held.insert(key);
                                            (change.type_, object)
                                        }
                                        None if held.remove(&key) => {
                                            ("DELETED", change.object.clone())
                                        }
                                        None => continue,
                                    };
                                    out.push_str(
                                        &json!({ "type": type_, "object": object }).to_string(),
                                    );
                                    out.push('\n');
                                }
                                cursor = log.len();
                                drop(st);
                                return Some((
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(out))),
                                    (api, rx, cursor, held),
                                ));
                            }
                        }
                        let changed = rx.changed();
                        match deadline {
                            Some(at) => match tokio::time::timeout_at(at, changed).await {
                                Ok(Ok(())) => {}
                                _ => return None,
                            },
                            None => changed.await.ok()?,
                        }
                    }
                }
            },
        );
        streaming(StreamBody::new(stream).boxed_unsync())
    }
}

/// The `labelSelector` (`key=value`) and `fieldSelector` (`status.phase=X`) of a list or
/// watch, as a filter.
fn selector(query: &HashMap<String, String>) -> impl Fn(&Value) -> bool + Clone + use<> {
    let decode = |v: &String| v.replace("%3D", "=").replace("%2F", "/");
    let label = query.get("labelSelector").map(decode);
    let field = query.get("fieldSelector").map(decode);
    move |object: &Value| {
        let label_ok = label.as_deref().is_none_or(|sel| {
            sel.split_once('=')
                .is_some_and(|(k, v)| object["metadata"]["labels"][k] == v)
        });
        let field_ok = field
            .as_deref()
            .is_none_or(|sel| match sel.split_once('=') {
                Some(("status.phase", phase)) => object["status"]["phase"] == phase,
                Some(("metadata.name", name)) => object["metadata"]["name"] == name,
                _ => true,
            });
        label_ok && field_ok
    }
}

/// `namespace/name` of an object.
fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn already_exists(resource: &str, name: &str) -> (u16, Value) {
    status(
        409,
        "AlreadyExists",
        &format!("{resource} \"{name}\" already exists"),
    )
}

fn streaming(body: ResponseBody) -> Response<ResponseBody> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

impl State {
    /// The objects of a collection (`namespaces`, `pods`, `serviceaccounts`, `secrets/<ns>`).
    fn objects(&self, collection: &str) -> Vec<&Value> {
        match collection {
            "namespaces" => self.namespaces.values().collect(),
            "pods" => self.pods.values().collect(),
            "serviceaccounts" => self.service_accounts.values().collect(),
            _ => {
                let ns = collection.trim_start_matches("secrets/");
                self.secrets
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, s)| s)
                    .collect()
            }
        }
    }

    /// Stores `object` (namespace and name from its metadata) as a user's create or replace
    /// would: a new resourceVersion, a uid if it has none, the change recorded.
    fn put(
        &mut self,
        collection: &str,
        kind: &str,
        objects: fn(&mut Self) -> &mut BTreeMap<(String, String), Value>,
        mut object: Value,
    ) {
        let rv = self.bump();
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if !object["metadata"]["uid"].is_string() {
            object["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        let meta = |field: &str| {
            object["metadata"][field]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let key = (meta("namespace"), meta("name"));
        let existed = objects(self).insert(key, object.clone()).is_some();
        self.record(
            collection,
            if existed { "MODIFIED" } else { "ADDED" },
            object,
        );
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, collection: &str, type_: &'static str, object: Value) {
        let rv = self.rv;
        self.changes
            .entry(collection.to_owned())
            .or_default()
            .push(Change { rv, type_, object });
    }

    fn evict(&mut self, key: (String, String), body: &Value) -> (u16, Value) {
        let Some(pod) = self.pods.get(&key) else {
            return status(404, "NotFound", &format!("pods \"{}\" not found", key.1));
        };
        let want_uid = &body["deleteOptions"]["preconditions"]["uid"];
        if want_uid.is_string() && *want_uid != pod["metadata"]["uid"] {
            return status(409, "Conflict", "Precondition failed: UID in precondition");
        }
        if self.evictions_blocked {
            return status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
        }
        let Some(gone) = self.pods.remove(&key) else {
            return status(404, "NotFound", "gone");
        };
        self.bump();
        self.record("pods", "DELETED", gone);
        (
            201,
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 }),
        )
    }

    /// The fields the API server sets on a new object.
    fn stamp_new(&mut self, namespace: &str, body: &mut Value) {
        let rv = self.bump();
        body["metadata"]["uid"] = json!(format!("uid-{rv}"));
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        body["metadata"]["namespace"] = json!(namespace);
    }

    fn create_secret(&mut self, key: (String, String), mut body: Value) -> (u16, Value) {
        if self.secrets.contains_key(&key) {
            return already_exists("secrets", &key.1);
        }
        self.stamp_new(&key.0, &mut body);
        self.record(&format!("secrets/{}", key.0), "ADDED", body.clone());
        self.secrets.insert(key, body.clone());
        (201, body)
    }

    fn create_lease(&mut self, key: (String, String), mut body: Value) -> (u16, Value) {
        if self.leases.contains_key(&key) {
            return already_exists("leases", &key.1);
        }
        self.stamp_new(&key.0, &mut body);
        if body.get("spec").is_none_or(Value::is_null) {
            body["spec"] = json!({});
        }
        self.leases.insert(key, body.clone());
        (201, body)
    }

    /// `apply` is the field manager and force flag of a server-side apply; a strategic merge
    /// patch otherwise.
    fn lease_request(
        &mut self,
        method: &str,
        key: (String, String),
        body: Value,
        apply: Option<(String, bool)>,
    ) -> (u16, Value) {
        let not_found = status(
            404,
            "NotFound",
            &format!("leases.coordination.k8s.io \"{}\" not found", key.1),
        );
        match method {
            "GET" => self
                .leases
                .get(&key)
                .cloned()
                .map_or(not_found, |l| (200, l)),
            "PATCH" => {
                if !self.leases.contains_key(&key) {
                    if apply.is_none() {
                        return not_found;
                    }
                    let mut lease = json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": { "name": key.1 }, "spec": {} });
                    self.create_lease(key.clone(), lease.take());
                }
                let wanted = &body["spec"]["holderIdentity"];
                let Some(existing) = self.leases.get(&key) else {
                    return not_found;
                };
                let holder = &existing["spec"]["holderIdentity"];
                if let Some((manager, force)) = &apply
                    && !force
                    && wanted.is_string()
                    && holder.is_string()
                    && holder != wanted
                    && self.lease_holder_owner.get(&key) != Some(manager)
                {
                    return status(
                        409,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with another manager: .spec.holderIdentity",
                    );
                }
                if wanted.is_string() {
                    let manager = apply.as_ref().map(|(m, _)| m.clone()).unwrap_or_default();
                    self.lease_holder_owner.insert(key.clone(), manager);
                } else if wanted.is_null() && body["spec"].get("holderIdentity").is_some() {
                    self.lease_holder_owner.remove(&key);
                }
                let rv = self.bump();
                let Some(existing) = self.leases.get_mut(&key) else {
                    return not_found;
                };
                for (field, value) in body["spec"].as_object().cloned().unwrap_or_default() {
                    match (value.is_null(), existing["spec"].as_object_mut()) {
                        (true, Some(spec)) => {
                            spec.remove(&field);
                        }
                        _ => existing["spec"][field] = value,
                    }
                }
                existing["metadata"]["resourceVersion"] = json!(rv.to_string());
                (200, existing.clone())
            }
            _ => status(405, "MethodNotAllowed", method),
        }
    }

    /// `get`, and a JSON merge patch whose `metadata.resourceVersion` is a precondition.
    fn service_account_request(
        &mut self,
        method: &str,
        key: (String, String),
        body: &Value,
    ) -> (u16, Value) {
        let not_found = status(
            404,
            "NotFound",
            &format!("serviceaccounts \"{}\" not found", key.1),
        );
        let Some(existing) = self.service_accounts.get(&key) else {
            return not_found;
        };
        match method {
            "GET" => (200, existing.clone()),
            "PATCH" => {
                let want = &body["metadata"]["resourceVersion"];
                if want.is_string() && *want != existing["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                let rv = self.bump();
                let Some(sa) = self.service_accounts.get_mut(&key) else {
                    return not_found;
                };
                for (k, v) in body["metadata"]["annotations"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                {
                    match (v.is_null(), sa["metadata"]["annotations"].as_object_mut()) {
                        (true, Some(annotations)) => {
                            annotations.remove(&k);
                        }
                        (true, None) => {}
                        (false, _) => sa["metadata"]["annotations"][k] = v,
                    }
                }
                if let Some(list) = body.get("imagePullSecrets") {
                    sa["imagePullSecrets"] = list.clone();
                }
                sa["metadata"]["resourceVersion"] = json!(rv.to_string());
                let updated = sa.clone();
                self.record("serviceaccounts", "MODIFIED", updated.clone());
                (200, updated)
            }
            _ => status(405, "MethodNotAllowed", method),
        }
    }

    fn secret_request(&mut self, method: &str, key: (String, String), body: Value) -> (u16, Value) {
        let not_found = status(404, "NotFound", &format!("secrets \"{}\" not found", key.1));
        let collection = format!("secrets/{}", key.0);
        match method {
            "GET" => {
                let Some(secret) = self.secrets.get(&key).cloned() else {
                    return not_found;
                };
                if std::mem::take(&mut self.race_after_get) {
                    let rv = self.bump();
                    if let Some(s) = self.secrets.get_mut(&key) {
                        s["metadata"]["resourceVersion"] = json!(rv.to_string());
                    }
                }
                (200, secret)
            }
            "PATCH" => {
                let want_rv = body["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned);
                let Some(existing) = self.secrets.get(&key) else {
                    if want_rv.is_some() {
                        return status(
                            422,
                            "Invalid",
                            "metadata.resourceVersion: Invalid value: resourceVersion can not be set for Create requests",
                        );
                    }
                    return self.create_secret(key, body);
                };
                if let Some(want) = &want_rv
                    && existing["metadata"]["resourceVersion"].as_str() != Some(want)
                {
                    return status(409, "Conflict", "the object has been modified");
                }
                if body.get("type").is_some() && existing["type"] != body["type"] {
                    return status(422, "Invalid", "field is immutable: type");
                }
                let rv = self.bump();
                let Some(existing) = self.secrets.get_mut(&key) else {
                    return not_found;
                };
                for field in ["labels", "annotations"] {
                    for (k, v) in body["metadata"][field]
                        .as_object()
                        .cloned()
                        .unwrap_or_default()
                    {
                        existing["metadata"][field][k] = v;
                    }
                }
                existing["data"] = body["data"].clone();
                existing["metadata"]["resourceVersion"] = json!(rv.to_string());
                let updated = existing.clone();
                self.record(&collection, "MODIFIED", updated.clone());
                (200, updated)
            }
            "DELETE" => {
                let Some(existing) = self.secrets.get(&key) else {
                    return not_found;
                };
                let pre = &body["preconditions"];
                let mismatch = |field: &str| {
                    pre[field].is_string() && pre[field] != existing["metadata"][field]
                };
                if mismatch("uid") || mismatch("resourceVersion") {
                    return status(409, "Conflict", "precondition failed");
                }
                let Some(gone) = self.secrets.remove(&key) else {
                    return not_found;
                };
                self.bump();
                self.record(&collection, "DELETED", gone.clone());
                (200, gone)
            }
            _ => status(405, "MethodNotAllowed", method),
        }
    }
}
