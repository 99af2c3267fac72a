//! Credential sources: a Google service-account key against a local token endpoint that checks
//! the signed JWT for real (RS256 against the key's public half, `iss`, `aud`, `scope`, `exp`),
//! kubelet credential provider plugins (one that answers, one that fails, one that hangs), and
//! the refresher against the fake API server: minted once, fresh for a replica that looks
//! again, renewed in place at half the lifetime, never over a foreign Secret, carried by the
//! sync to every copy with the same bytes.

mod common;
mod fake_api;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use fake_api::FakeApi;
use http::StatusCode;
use pullsecret_injector::config::Config;
use pullsecret_injector::credentials::http::HttpClient;
use pullsecret_injector::credentials::{
    self, KeyRef, MintEnv, MintError, Minted, Plugin, Source, gcp, plugin,
};
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::refresh::{CredentialArgs, Outcome, RefreshError, Refresher};
use pullsecret_injector::watch::ConfigStore;
use serde_json::{Value, json};

const OWN_NS: &str = "pullsecret-injector";
const EMAIL: &str = "puller@acme-prod.iam.gserviceaccount.com";

fn data(name: &str) -> PathBuf {
    common::data_path(&format!("gcp/{name}"))
}

fn plugin_path(name: &str) -> String {
    format!("{}/tests/plugins/{name}", env!("CARGO_MANIFEST_DIR"))
}

// ---- a token endpoint that checks the assertion -------------------------------------------

struct Endpoint {
    url: String,
    issued: Arc<AtomicU32>,
    /// Any JSON value, so a test can answer numbers no endpoint should.
    expires_in: Arc<Mutex<Value>>,
    refuse: Arc<Mutex<bool>>,
}

#[derive(Clone)]
struct EndpointState {
    url: String,
    public_key: Vec<u8>,
    issued: Arc<AtomicU32>,
    expires_in: Arc<Mutex<Value>>,
    refuse: Arc<Mutex<bool>>,
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    scope: String,
    iat: u64,
    exp: u64,
}

type Answer = (
    StatusCode,
    [(http::header::HeaderName, &'static str); 1],
    String,
);

fn answer(code: StatusCode, body: Value) -> Answer {
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn token(State(st): State<EndpointState>, body: String) -> Answer {
    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let bad = |why: &str| {
        answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": "invalid_grant", "error_description": why }),
        )
    };
    if *st.refuse.lock().unwrap() {
        return bad("Invalid JWT Signature.");
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return bad("grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return bad("no assertion");
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&st.public_key).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[&st.url]);
    validation.set_issuer(&[EMAIL]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return bad(&format!("assertion: {e}")),
    };
    if claims.scope != "https://www.googleapis.com/auth/cloud-platform" {
        return bad("scope");
    }
    if claims.exp.saturating_sub(claims.iat) > 3600 {
        return bad("lifetime over an hour");
    }
    let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = st.expires_in.lock().unwrap().clone();
    answer(
        StatusCode::OK,
        json!({ "access_token": format!("ya29.token-{n}"), "expires_in": expires_in, "token_type": "Bearer" }),
    )
}

async fn endpoint(expires_in: u64) -> Endpoint {
    common::captured_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let state = EndpointState {
        url: url.clone(),
        public_key: std::fs::read(data("test-key.pub.pem")).unwrap(),
        issued: Arc::default(),
        expires_in: Arc::new(Mutex::new(json!(expires_in))),
        refuse: Arc::default(),
    };
    let app = Router::new()
        .route("/token", post(token))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint {
        url,
        issued: state.issued,
        expires_in: state.expires_in,
        refuse: state.refuse,
    }
}

/// A service-account JSON key whose token_uri is `endpoint`, signed with `key_file`.
fn key_json(token_uri: &str, key_file: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "0123456789abcdef",
        "private_key": std::fs::read_to_string(data(key_file)).unwrap(),
        "client_email": EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }))
    .unwrap()
}

fn http() -> HttpClient {
    HttpClient::new(Duration::from_secs(5)).unwrap()
}

fn keys() -> Vec<String> {
    vec![
        "asia-northeast1-docker.pkg.dev".to_owned(),
        "*.pkg.dev".to_owned(),
    ]
}

fn auths(config_json: &[u8]) -> Value {
    serde_json::from_slice::<Value>(config_json).unwrap()["auths"].clone()
}

#[tokio::test]
async fn a_service_account_key_mints_an_access_token_the_endpoint_accepts() {
    let ep = endpoint(3600).await;
    let before = SystemTime::now();
    let minted = gcp::mint_from_key(&key_json(&ep.url, "test-key.pem"), &keys(), &http())
        .await
        .expect("minted");
    assert_eq!(ep.issued.load(Ordering::SeqCst), 1);
    let auths = auths(&minted.docker_config_json());
    for key in keys() {
        let entry = &auths[&key];
        assert_eq!(entry["username"], "oauth2accesstoken");
        assert_eq!(entry["password"], "ya29.token-1");
        let basic = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().unwrap())
            .unwrap();
        assert_eq!(basic, b"oauth2accesstoken:ya29.token-1");
    }
    let lifetime = minted.lifetime(before);
    assert!(lifetime >= Duration::from_secs(3599) && lifetime <= Duration::from_secs(3601));
    // The password never shows in a debug print.
    assert!(!format!("{minted:?}").contains("ya29"));
}

#[tokio::test]
async fn a_key_the_endpoint_does_not_trust_or_a_broken_key_is_a_clear_error() {
    let ep = endpoint(3600).await;
    let refused = gcp::mint_from_key(&key_json(&ep.url, "other-key.pem"), &keys(), &http())
        .await
        .unwrap_err();
    let text = refused.to_string();
    assert!(matches!(refused, MintError::Endpoint { .. }), "{text}");
    assert!(
        text.contains("400") && text.contains("invalid_grant"),
        "{text}"
    );
    assert_eq!(ep.issued.load(Ordering::SeqCst), 0);

    for (broken, words) in [
        (b"not json".to_vec(), "not a service-account JSON key"),
        (
            serde_json::to_vec(&json!({ "type": "authorized_user", "client_email": "x", "private_key": "y" })).unwrap(),
            "not service_account",
        ),
        (
            serde_json::to_vec(&json!({ "type": "service_account", "client_email": EMAIL, "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "token_uri": ep.url })).unwrap(),
            "not an RSA PEM key",
        ),
    ] {
        let error = gcp::mint_from_key(&broken, &keys(), &http()).await.unwrap_err();
        assert!(matches!(error, MintError::Key(_)), "{error}");
        assert!(error.to_string().contains(words), "{error}");
    }
    // An endpoint that is not there.
    let error = gcp::mint_from_key(
        &key_json("http://127.0.0.1:9/token", "test-key.pem"),
        &keys(),
        &http(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("127.0.0.1:9"), "{error}");
}

// ---- credential provider plugins ------------------------------------------------------------

fn provider(name: &str, env: &[(&str, &str)]) -> Plugin {
    Plugin {
        command: plugin_path(name),
        args: vec![],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[tokio::test]
async fn a_credential_provider_answers_per_registry_with_its_cache_duration() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests");
    let plugin = provider(
        "good-provider.sh",
        &[("CACHE", "1h30m0s"), ("LOG", log.to_str().unwrap())],
    );
    let keys = vec![
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com".to_owned(),
        "ghcr.io/acme".to_owned(),
    ];
    let before = SystemTime::now();
    let minted = plugin::mint(&plugin, &keys, Duration::from_secs(10))
        .await
        .expect("minted");
    let requests = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        requests.lines().collect::<Vec<_>>(),
        [
            "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/image",
            "ghcr.io/acme/image"
        ]
    );
    // The response's auth map keys the credentials.
    let registries: Vec<&String> = minted.auths.keys().collect();
    assert_eq!(
        registries,
        [
            "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com",
            "ghcr.io"
        ]
    );
    assert_eq!(minted.auths["ghcr.io"].0, "plugin-user");
    let lifetime = minted.lifetime(before);
    assert!(
        lifetime > Duration::from_secs(5390) && lifetime <= Duration::from_secs(5401),
        "{lifetime:?}"
    );
}

#[tokio::test]
async fn failing_and_hanging_providers_are_bounded_errors() {
    let keys = vec!["ghcr.io".to_owned()];
    let error = plugin::mint(
        &provider("failing-provider.sh", &[]),
        &keys,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("exited with"), "{error}");

    let started = std::time::Instant::now();
    let error = plugin::mint(
        &provider("hanging-provider.sh", &[]),
        &keys,
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );

    let error = plugin::mint(
        &provider("missing-provider.sh", &[]),
        &keys,
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("cannot start"), "{error}");

    // A glob rule cannot be turned into an image to ask about.
    let error = plugin::mint(
        &provider("good-provider.sh", &[]),
        &["*.pkg.dev".to_owned()],
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("glob"), "{error}");
}

#[test]
fn go_durations_as_the_kubelet_prints_them() {
    for (text, secs) in [
        ("6h0m0s", 21600.0),
        ("90s", 90.0),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
        ("0", 0.0),
        ("500ms", 0.5),
    ] {
        assert_eq!(
            plugin::parse_go_duration(text),
            Ok(Duration::from_secs_f64(secs)),
            "{text}"
        );
    }
    for bad in ["", "6", "6d", "h"] {
        assert!(plugin::parse_go_duration(bad).is_err(), "{bad:?}");
    }
}

// ---- config ---------------------------------------------------------------------------------

#[test]
fn the_config_names_each_secrets_source() {
    let text = format!(
        "registries:\n  - match: asia-northeast1-docker.pkg.dev\n    secret: gar-pull\n  - match: ghcr.io/acme\n    secret: ghcr-acme\n  - match: \"*.pkg.dev\"\n    secret: gar-pull\nsecrets:\n  gar-pull:\n    gcpServiceAccountKey: {{secret: gar-key, key: key.json}}\n  ghcr-acme:\n    credentialProvider: {{command: {}, args: [--x]}}\n",
        plugin_path("good-provider.sh")
    );
    let (config, warnings) = Config::from_yaml(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.source("gar-pull"),
        Some(&Source::GcpServiceAccountKey(KeyRef {
            secret: "gar-key".into(),
            key: "key.json".into()
        }))
    );
    assert_eq!(
        config.minted().map(|(n, _)| n).collect::<Vec<_>>(),
        ["gar-pull", "ghcr-acme"]
    );
    assert_eq!(
        config.registry_keys("gar-pull"),
        ["asia-northeast1-docker.pkg.dev", "*.pkg.dev"]
    );

    for (secrets, words) in [
        (
            "  gar-pull:\n    gcpServiceAccountKey: {secret: gar-key}\n",
            "missing field `key`",
        ),
        (
            "  gar-pull:\n    gcpServiceAccountKey: {secret: Bad_Name, key: k}\n",
            "secrets.gar-pull: secret",
        ),
        (
            "  gar-pull:\n    credentialProvider: {command: relative/path}\n",
            "absolute path",
        ),
        ("  gar-pull:\n    vault: {}\n", "unknown field `vault`"),
        (
            "  gar-pull:\n    gcpWorkloadIdentity: {}\n    credentialProvider: {command: /x}\n",
            "exactly one of",
        ),
        ("  gar-pull: {}\n", "exactly one of"),
    ] {
        let text =
            format!("registries:\n  - match: ghcr.io\n    secret: gar-pull\nsecrets:\n{secrets}");
        let error = Config::from_yaml(&text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {secrets}"));
        assert!(error.to_string().contains(words), "{error}");
    }
    // A source no rule uses is a warning, not an error.
    let text = "registries:\n  - match: ghcr.io\n    secret: a\nsecrets:\n  b:\n    gcpWorkloadIdentity: {}\n";
    let (_, warnings) = Config::from_yaml(text).unwrap();
    assert!(
        warnings[0]
            .to_string()
            .contains("no rule names this secret")
    );
}

// ---- the refresher against the fake API server ----------------------------------------------

fn gcp_config() -> Config {
    Config::from_yaml(
        "registries:\n  - match: asia-northeast1-docker.pkg.dev\n    secret: gar-pull\nsecrets:\n  gar-pull:\n    gcpServiceAccountKey: {secret: gar-key, key: key.json}\n",
    )
    .unwrap()
    .0
}

fn put_key(api: &FakeApi, token_uri: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    api.put_secret(
        OWN_NS,
        "gar-key",
        json!({ "type": "Opaque", "data": { "key.json": b64.encode(key_json(token_uri, "test-key.pem")) } }),
    );
}

fn refresher(api: &FakeApi, config: Config, metrics: &Arc<Metrics>) -> Refresher {
    Refresher::new(
        api.client(),
        OWN_NS.to_owned(),
        Arc::new(ConfigStore::new(config)),
        metrics.clone(),
        http(),
        CredentialArgs::default(),
    )
}

fn source_password(api: &FakeApi) -> String {
    let secret = api.secret(OWN_NS, "gar-pull").expect("the minted source");
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
        .unwrap();
    auths(&bytes)["asia-northeast1-docker.pkg.dev"]["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn minted_once_then_fresh_for_another_replica_then_renewed_in_place() {
    let ep = endpoint(4).await;
    let api = FakeApi::default();
    put_key(&api, &ep.url);
    let metrics = Arc::new(Metrics::new());
    let source = gcp_config().source("gar-pull").unwrap().clone();
    let keys = vec!["asia-northeast1-docker.pkg.dev".to_owned()];

    let one = refresher(&api, gcp_config(), &metrics);
    let outcome = one.refresh("gar-pull", &source, &keys).await.unwrap();
    assert!(matches!(outcome, Outcome::Minted { .. }), "{outcome:?}");
    let written = api.secret(OWN_NS, "gar-pull").unwrap();
    assert_eq!(written["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        written["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    let annotations = &written["metadata"]["annotations"];
    assert_eq!(
        annotations["pullsecret-injector.io/credential-source"],
        "gcpServiceAccountKey"
    );
    assert!(annotations["pullsecret-injector.io/expires-at"].is_string());
    assert_eq!(source_password(&api), "ya29.token-1");
    assert!(
        !written.to_string().contains("PRIVATE KEY"),
        "the key is never copied"
    );
    let uid = written["metadata"]["uid"].clone();

    // A second replica finds it fresh and does not ask the endpoint again.
    let two = refresher(&api, gcp_config(), &metrics);
    let outcome = two.refresh("gar-pull", &source, &keys).await.unwrap();
    assert!(matches!(outcome, Outcome::Fresh { .. }), "{outcome:?}");
    assert_eq!(
        ep.issued.load(Ordering::SeqCst),
        1,
        "one token per renewal period"
    );

    // Past half its lifetime it is renewed, in place.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let outcome = two.refresh("gar-pull", &source, &keys).await.unwrap();
    assert!(matches!(outcome, Outcome::Minted { .. }), "{outcome:?}");
    assert_eq!(source_password(&api), "ya29.token-2");
    assert_eq!(
        api.secret(OWN_NS, "gar-pull").unwrap()["metadata"]["uid"],
        uid,
        "updated, not recreated"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.method != http::Method::DELETE)
    );
}

#[tokio::test]
async fn a_foreign_secret_of_the_name_is_never_overwritten() {
    let ep = endpoint(3600).await;
    let api = FakeApi::default();
    put_key(&api, &ep.url);
    api.put_secret(OWN_NS, "gar-pull", json!({ "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } }));
    let metrics = Arc::new(Metrics::new());
    let config = gcp_config();
    let source = config.source("gar-pull").unwrap().clone();
    let error = refresher(&api, gcp_config(), &metrics)
        .refresh("gar-pull", &source, &["x".to_owned()])
        .await
        .unwrap_err();
    assert!(matches!(error, RefreshError::Foreign { .. }), "{error}");
    assert_eq!(
        api.secret(OWN_NS, "gar-pull").unwrap()["data"][".dockerconfigjson"],
        "e30="
    );
    assert_eq!(ep.issued.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_running_refresher_and_sync_keep_every_copy_current_with_the_same_bytes() {
    let ep = endpoint(3).await;
    let api = FakeApi::default();
    api.add_namespace(OWN_NS, false);
    api.add_namespace("team-a", true);
    api.add_namespace("team-b", true);
    put_key(&api, &ep.url);
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(ConfigStore::new(gcp_config()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let refresher = Refresher::new(
        api.client(),
        OWN_NS.to_owned(),
        store.clone(),
        metrics.clone(),
        http(),
        CredentialArgs::default(),
    );
    let refresh_task = tokio::spawn(refresher.run(stopped(stop_rx.clone())));
    let sync_task = tokio::spawn(pullsecret_injector::sync::run(
        api.client(),
        OWN_NS.to_owned(),
        store,
        metrics.clone(),
        pullsecret_injector::sync::SyncArgs::default(),
        pullsecret_injector::sync::Sources::default(),
        stopped(stop_rx),
    ));

    let copies = |api: &FakeApi| -> Option<Vec<Value>> {
        ["team-a", "team-b"]
            .iter()
            .map(|ns| api.secret(ns, "gar-pull").map(|s| s["data"].clone()))
            .collect()
    };
    let wait = |want: &'static str| {
        let api = api.clone();
        async move {
            for _ in 0..400 {
                if let Some(data) = copies(&api)
                    && data.iter().all(|d| *d == data[0])
                    && source_password(&api) == want
                    && api.secret(OWN_NS, "gar-pull").map(|s| s["data"].clone())
                        == Some(data[0].clone())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("copies never carried {want}");
        }
    };
    wait("ya29.token-1").await;
    let copy = api.secret("team-a", "gar-pull").unwrap();
    assert_eq!(
        copy["metadata"]["annotations"]["pullsecret-injector.io/credential-source"],
        "gcpServiceAccountKey"
    );
    let uid = copy["metadata"]["uid"].clone();
    // Renewed at half of three seconds (plus jitter): the copies follow, in place.
    wait("ya29.token-2").await;
    assert_eq!(
        api.secret("team-a", "gar-pull").unwrap()["metadata"]["uid"],
        uid
    );
    let text = metrics.encode();
    assert!(
        text.contains(
            "pullsecret_injector_credential_refresh_total{secret=\"gar-pull\",result=\"success\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "pullsecret_injector_credential_expiry_timestamp_seconds{secret=\"gar-pull\"}"
        ),
        "{text}"
    );

    // The endpoint starts refusing: the last good token stays in force and the failure counts.
    *ep.refuse.lock().unwrap() = true;
    *ep.expires_in.lock().unwrap() = json!(3600);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        source_password(&api).starts_with("ya29.token-"),
        "the last good token stays"
    );
    let text = metrics.encode();
    assert!(text.contains("result=\"endpoint_error\""), "{text}");
    // With seconds left, the failure is reported on the source Secret, without the token.
    let events = api.state().events.clone();
    let event = events
        .iter()
        .find(|e| e["reason"] == "PullCredentialRefreshFailed")
        .unwrap_or_else(|| panic!("no refresh Event: {events:?}"));
    assert_eq!(event["regarding"]["name"], "gar-pull");
    assert_eq!(event["regarding"]["namespace"], OWN_NS);
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("expire at") && note.contains("invalid_grant"),
        "{note}"
    );
    assert!(!note.contains("ya29"), "{note}");

    stop_tx.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), refresh_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sync_task).await;

    // Everything this file logged, at TRACE: the refresher, the sync, kube's client. No token
    // and no key, ever.
    let logs = common::captured_logs().text();
    assert!(logs.contains("credentials minted"), "the refresher logged");
    for secret in ["ya29.token-", "PRIVATE KEY", "plugin-token-"] {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    assert!(!logs.contains(&b64.encode("oauth2accesstoken:ya29.token-1")));
}

#[tokio::test]
async fn mint_env_reads_a_key_through_its_reader() {
    let ep = endpoint(60).await;
    let key = key_json(&ep.url, "test-key.pem");
    let read_key = move |_: &KeyRef| {
        let key = key.clone();
        futures::FutureExt::boxed(async move { Ok::<_, MintError>(key) })
    };
    let http = http();
    let env = MintEnv {
        read_key: &read_key,
        http: &http,
        metadata_host: "127.0.0.1:9",
        plugin_timeout: Duration::from_secs(1),
    };
    let minted = pullsecret_injector::refresh::mint_once(&gcp_config(), "gar-pull", &env)
        .await
        .unwrap();
    assert_eq!(
        minted.auths["asia-northeast1-docker.pkg.dev"].1,
        "ya29.token-1"
    );
    let error = pullsecret_injector::refresh::mint_once(&gcp_config(), "other", &env)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no credential source for \"other\""),
        "{error}"
    );
}

// ---- remote numbers, bounded before any time arithmetic ---------------------------------------

/// The refresher over `store` until its log shows `words`: the task must still be running then
/// (a panic would have ended it), and it stops cleanly.
async fn run_refresher_until_it_logs(refresher: Refresher, words: &str) {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(refresher.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !common::captured_logs().text().contains(words) {
        assert!(
            !task.is_finished(),
            "the refresher stopped before logging {words}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the refresher never logged {words}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!task.is_finished(), "the refresher is still running");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the refresher stops")
        .expect("the refresher did not panic");
}

/// A token endpoint that once answered well answers `bad` as `expires_in`: minting is an error
/// naming the endpoint and the value, the last good token stays in the source, and the running
/// refresher logs it and carries on.
async fn the_last_good_token_stays_when_expires_in_is(bad: Value, shown: &str) {
    let ep = endpoint(2).await;
    let api = FakeApi::default();
    put_key(&api, &ep.url);
    let metrics = Arc::new(Metrics::new());
    let source = gcp_config().source("gar-pull").unwrap().clone();
    let keys = vec!["asia-northeast1-docker.pkg.dev".to_owned()];
    let one = refresher(&api, gcp_config(), &metrics);
    let outcome = one.refresh("gar-pull", &source, &keys).await.unwrap();
    assert!(matches!(outcome, Outcome::Minted { .. }), "{outcome:?}");
    assert_eq!(source_password(&api), "ya29.token-1");

    *ep.expires_in.lock().unwrap() = bad;
    let error = gcp::mint_from_key(&key_json(&ep.url, "test-key.pem"), &keys, &http())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, MintError::Endpoint { .. }), "{text}");
    let words = format!("expires_in {shown}");
    assert!(text.contains(&ep.url) && text.contains(&words), "{text}");

    // Past the renewal point, the refresher's renewal fails the same way, and writes nothing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = one.refresh("gar-pull", &source, &keys).await.unwrap_err();
    assert!(error.to_string().contains(&words), "{error}");
    assert_eq!(error.metric_label(), "endpoint_error");
    assert_eq!(
        source_password(&api),
        "ya29.token-1",
        "the last good token stays"
    );

    run_refresher_until_it_logs(
        refresher(&api, gcp_config(), &metrics),
        &format!("{}: {words}", ep.url),
    )
    .await;
    assert_eq!(
        source_password(&api),
        "ya29.token-1",
        "the last good token stays"
    );
}

#[tokio::test]
async fn expires_in_1e300_is_refused_and_the_last_good_token_stays() {
    // serde_json shows the number it read as `1e+300`.
    the_last_good_token_stays_when_expires_in_is(json!(1e300), "1e+300").await;
}

#[tokio::test]
async fn a_negative_expires_in_is_refused_and_the_last_good_token_stays() {
    the_last_good_token_stays_when_expires_in_is(json!(-5), "-5").await;
}

#[tokio::test]
async fn expires_in_past_the_clocks_range_is_refused_and_the_last_good_token_stays() {
    // Whole seconds that fit a u64 but not a time: `SystemTime + Duration` would panic.
    the_last_good_token_stays_when_expires_in_is(json!(u64::MAX), &u64::MAX.to_string()).await;
}

#[tokio::test]
async fn a_zero_expires_in_is_refused_and_the_last_good_token_stays() {
    the_last_good_token_stays_when_expires_in_is(json!(0), "0").await;
}

fn plugin_config(cache: &str) -> Config {
    Config::from_yaml(&format!(
        "registries:\n  - match: ghcr.io/acme\n    secret: ghcr-acme\nsecrets:\n  ghcr-acme:\n    credentialProvider: {{command: {}, env: {{CACHE: {cache:?}}}}}\n",
        plugin_path("good-provider.sh")
    ))
    .unwrap()
    .0
}

#[tokio::test]
async fn a_plugins_cache_duration_of_99999999h_is_refused_and_the_last_good_credentials_stay() {
    common::captured_logs();
    let api = FakeApi::default();
    let metrics = Arc::new(Metrics::new());
    let keys = vec!["ghcr.io/acme".to_owned()];
    let (good, bad) = (plugin_config("2s"), plugin_config("99999999h"));
    let store = Arc::new(ConfigStore::new(good.clone()));
    let refresher = || {
        Refresher::new(
            api.client(),
            OWN_NS.to_owned(),
            store.clone(),
            metrics.clone(),
            http(),
            CredentialArgs::default(),
        )
    };
    let password = |api: &FakeApi| {
        let secret = api.secret(OWN_NS, "ghcr-acme").expect("the minted source");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap();
        auths(&bytes)["ghcr.io"]["password"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let one = refresher();
    let outcome = one
        .refresh("ghcr-acme", good.source("ghcr-acme").unwrap(), &keys)
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Minted { .. }), "{outcome:?}");
    let first = password(&api);
    assert!(first.starts_with("plugin-token-"), "{first}");

    let error = plugin::mint(
        &provider("good-provider.sh", &[("CACHE", "99999999h")]),
        &keys,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, MintError::Plugin { .. }), "{text}");
    assert!(
        text.contains("good-provider.sh") && text.contains("cacheDuration \"99999999h\""),
        "{text}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let error = one
        .refresh("ghcr-acme", bad.source("ghcr-acme").unwrap(), &keys)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("99999999h"), "{error}");
    assert_eq!(error.metric_label(), "plugin_error");
    assert_eq!(password(&api), first, "the last good credentials stay");

    store.store(bad);
    run_refresher_until_it_logs(refresher(), "cacheDuration \"99999999h\"").await;
    assert_eq!(password(&api), first, "the last good credentials stay");
}

#[tokio::test]
async fn a_long_but_possible_lifetime_is_cut_to_a_day() {
    let before = SystemTime::now();
    let minted = plugin::mint(
        &provider("good-provider.sh", &[("CACHE", "168h")]),
        &["ghcr.io".to_owned()],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Measured from before the plugin ran: a day and how long it took to answer.
    let lifetime = minted.lifetime(before);
    assert!(
        lifetime >= credentials::MAX_LIFETIME
            && lifetime < credentials::MAX_LIFETIME + Duration::from_secs(5),
        "{lifetime:?}"
    );

    let ep = endpoint(7 * 24 * 3600).await;
    let before = SystemTime::now();
    let minted = gcp::mint_from_key(&key_json(&ep.url, "test-key.pem"), &keys(), &http())
        .await
        .unwrap();
    let lifetime = minted.lifetime(before);
    assert!(
        lifetime >= credentials::MAX_LIFETIME
            && lifetime < credentials::MAX_LIFETIME + Duration::from_secs(5),
        "{lifetime:?}"
    );
}

#[test]
fn absolute_expiries_are_bounded_too() {
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    assert_eq!(credentials::bounded_until(now, now + hour), Ok(now + hour));
    // Far but possible (an emulator's year 2099): cut to a day.
    assert_eq!(
        credentials::bounded_until(now, now + 70 * 365 * 24 * hour),
        Ok(now + credentials::MAX_LIFETIME)
    );
    // Already past (an emulator's fixed date, a clock off): kept for the refresher to see
    // expired, and never before the epoch (no time before it prints).
    assert_eq!(credentials::bounded_until(now, now - hour), Ok(now - hour));
    assert_eq!(credentials::bounded_until(now, now), Ok(now));
    assert_eq!(
        credentials::bounded_until(now, std::time::UNIX_EPOCH - hour),
        Ok(std::time::UNIX_EPOCH)
    );
    let error = credentials::bounded_until(now, now + 8000 * 365 * 24 * hour).unwrap_err();
    assert!(
        error.contains("longer than any credential lives"),
        "{error}"
    );
    assert!(credentials::bounded_expiry(now, Duration::MAX).is_err());
    assert!(credentials::bounded_expiry(now, Duration::ZERO).is_err());
}

// ---- the .dockerconfigjson bytes --------------------------------------------------------------

#[test]
fn the_docker_config_is_the_bytes_kubectl_writes() {
    // What `kubectl create secret docker-registry x --docker-server=registry.example:5000
    // --docker-username='u<1>' --docker-password='p<>&"é\x' -o jsonpath=...` decodes to
    // (kubectl 1.32): Go's HTML-safe escaping, UTF-8 as is, `\` and `"` backslashed.
    let kubectl = r#"{"auths":{"registry.example:5000":{"username":"u\u003c1\u003e","password":"p\u003c\u003e\u0026\"é\\x","auth":"dTwxPjpwPD4mIsOpXHg="}}}"#;
    let minted = Minted::for_keys(
        &["registry.example:5000".to_owned()],
        "u<1>",
        "p<>&\"é\\x",
        SystemTime::now(),
    );
    assert_eq!(
        String::from_utf8(minted.docker_config_json()).unwrap(),
        kubectl
    );
    assert_eq!(
        credentials::docker_config_json([("registry.example:5000", "u<1>", "p<>&\"é\\x")]),
        kubectl
    );

    // Control characters and the JavaScript line separators, as kubectl writes them: the short
    // escapes, \u00XX for the rest, DEL as is (password $'a\tb\x01\x7f\u2028c\bd\fe\u2029').
    let kubectl = "{\"auths\":{\"r.example\":{\"username\":\"u\",\"password\":\"a\\tb\\u0001\u{7f}\\u2028c\\bd\\fe\\u2029\",\"auth\":\"dTphCWIBf+KAqGMIZAxl4oCp\"}}}";
    assert_eq!(
        credentials::docker_config_json([(
            "r.example",
            "u",
            "a\tb\u{1}\u{7f}\u{2028}c\u{8}d\u{c}e\u{2029}"
        )]),
        kubectl
    );

    // Several registries: sorted as a Go map is, the last entry of a key winning; an empty
    // username is left out (`omitempty`), as kubectl's DockerConfigEntry does.
    assert_eq!(
        credentials::docker_config_json([
            ("z.example", "a", "1"),
            ("b.example", "", "2"),
            ("z.example", "c", "3"),
        ]),
        r#"{"auths":{"b.example":{"password":"2","auth":"OjI="},"z.example":{"username":"c","password":"3","auth":"Yzoz"}}}"#
    );
}

// ---- workload identity: the metadata server, and an external-account file -------------------

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn workload_identity_from_the_metadata_server() {
    let app = Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/token",
        axum::routing::get(|headers: http::HeaderMap| async move {
            if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                return answer(StatusCode::FORBIDDEN, json!({ "error": "missing Metadata-Flavor" }));
            }
            answer(StatusCode::OK, json!({ "access_token": "ya29.metadata", "expires_in": 1799, "token_type": "Bearer" }))
        }),
    );
    let host = serve(app).await;
    let before = SystemTime::now();
    let minted = gcp::mint_from_metadata(&host, &keys(), &http())
        .await
        .unwrap();
    assert_eq!(
        minted.auths["*.pkg.dev"],
        ("oauth2accesstoken".to_owned(), "ya29.metadata".to_owned())
    );
    assert!(minted.lifetime(before) <= Duration::from_secs(1800));
    // No metadata server: a clear error naming it.
    let error = gcp::mint_from_metadata("127.0.0.1:9", &keys(), &http())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("127.0.0.1:9/computeMetadata"),
        "{error}"
    );
}

#[tokio::test]
async fn a_token_endpoint_that_never_answers_is_given_up_on_within_the_time_limit() {
    // Accepts connections and answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    let http = HttpClient::new(Duration::from_millis(500)).unwrap();
    let started = std::time::Instant::now();
    let error = gcp::mint_from_metadata(&host, &keys(), &http)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "bounded");
    let text = error.to_string();
    assert!(
        text.contains(&host) && text.contains("no answer within"),
        "{text}"
    );
}

#[tokio::test]
async fn workload_identity_federation_from_an_external_account_file() {
    let exchanged: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = exchanged.clone();
    let app = Router::new()
        .route(
            "/v1/token",
            post(move |body: String| {
                let seen = seen.clone();
                async move {
                    let form: std::collections::HashMap<String, String> =
                        form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                    seen.lock().unwrap().push(form["subject_token"].clone());
                    if form["grant_type"] != "urn:ietf:params:oauth:grant-type:token-exchange"
                        || form["audience"] != "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s"
                        || form["subject_token_type"] != "urn:ietf:params:oauth:token-type:jwt"
                    {
                        return answer(StatusCode::BAD_REQUEST, json!({ "error": "invalid_request" }));
                    }
                    answer(StatusCode::OK, json!({ "access_token": "federated", "expires_in": 3600, "token_type": "Bearer" }))
                }
            }),
        )
        .route(
            "/v1/projects/-/serviceAccounts/puller:generateAccessToken",
            post(|headers: http::HeaderMap| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer federated") {
                    return answer(StatusCode::UNAUTHORIZED, json!({ "error": "unauthenticated" }));
                }
                let expires = SystemTime::now() + Duration::from_secs(1800);
                answer(StatusCode::OK, json!({ "accessToken": "ya29.impersonated", "expireTime": humantime::format_rfc3339_seconds(expires).to_string() }))
            }),
        );
    let host = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("token");
    std::fs::write(&subject, "eyJ.projected.sa-token\n").unwrap();
    let file = dir.path().join("external-account.json");
    let mut account = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k8s",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": format!("http://{host}/v1/token"),
        "credential_source": { "file": subject },
        "service_account_impersonation_url": format!("http://{host}/v1/projects/-/serviceAccounts/puller:generateAccessToken"),
    });
    std::fs::write(&file, account.to_string()).unwrap();
    let before = SystemTime::now();
    let minted = gcp::mint_external_account(file.to_str().unwrap(), &keys(), &http())
        .await
        .unwrap();
    assert_eq!(minted.auths["*.pkg.dev"].1, "ya29.impersonated");
    // The expireTime answered, to the second.
    let lifetime = minted.lifetime(before);
    assert!(
        lifetime > Duration::from_secs(1798) && lifetime <= Duration::from_secs(1801),
        "{lifetime:?}"
    );
    assert_eq!(*exchanged.lock().unwrap(), ["eyJ.projected.sa-token"]);

    // Without impersonation the federated token is used as it is.
    account
        .as_object_mut()
        .unwrap()
        .remove("service_account_impersonation_url");
    std::fs::write(&file, account.to_string()).unwrap();
    let minted = gcp::mint_external_account(file.to_str().unwrap(), &keys(), &http())
        .await
        .unwrap();
    assert_eq!(minted.auths["*.pkg.dev"].1, "federated");

    // A file that is not an external account.
    std::fs::write(&file, key_json("http://x", "test-key.pem")).unwrap();
    let error = gcp::mint_external_account(file.to_str().unwrap(), &keys(), &http())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("external"), "{error}");
}

// ---- ECR, against moto's emulation of the ECR API --------------------------------------------

/// moto's server on a free loopback port, stopped when dropped.
struct Moto(std::process::Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server runs (bash .ci/run installs moto[server])");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child, port)
}

/// `pullsecret-injector token` with static AWS credentials in its environment (the first link
/// of the default chain), and the instance metadata service off.
fn token_cli(config: &str, secret: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .args(["token", "--config"])
        .arg(&path)
        .arg(secret)
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-key")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

#[test]
#[cfg_attr(
    not(has_moto),
    ignore = "needs moto_server on PATH (pip install 'moto[server]')"
)]
fn ecr_tokens_from_get_authorization_token() {
    let moto = moto();
    let config = format!(
        "registries:\n  - match: 123456789012.dkr.ecr.ap-northeast-1.amazonaws.com\n    secret: ecr-pull\n  - match: 123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/team\n    secret: ecr-pull\nsecrets:\n  ecr-pull:\n    ecr: {{region: ap-northeast-1, registryIds: [\"123456789012\"], endpoint: \"http://127.0.0.1:{}\"}}\n",
        moto.1
    );
    let out = token_cli(&config, "ecr-pull");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com",
        "123456789012.dkr.ecr.ap-northeast-1.amazonaws.com/team",
    ] {
        let entry = &minted["auths"][key];
        assert_eq!(entry["username"], "AWS", "{minted}");
        // moto's token for the registry, decoded from GetAuthorizationToken's user:password.
        assert!(
            entry["password"]
                .as_str()
                .unwrap()
                .starts_with("123456789012"),
            "{minted}"
        );
    }

    // An endpoint that does not answer: a clear error naming it, and no panic.
    let down = config.replace(&format!("127.0.0.1:{}", moto.1), "127.0.0.1:9");
    let out = token_cli(&down, "ecr-pull");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("127.0.0.1:9") && text.contains("GetAuthorizationToken"),
        "{text}"
    );
    assert!(!text.contains("not-a-real-secret-key"));
}

#[test]
fn ecr_sources_are_validated() {
    for (source, words) in [
        ("ecr: {region: \"\"}", "region is empty"),
        (
            "ecr: {region: us-east-1, registryIds: [\"12345\"]}",
            "12-digit",
        ),
        (
            "ecr: {region: us-east-1, registry: x}",
            "unknown field `registry`",
        ),
    ] {
        let text = format!(
            "registries:\n  - match: x.example.com\n    secret: e\nsecrets:\n  e:\n    {source}\n"
        );
        let error = Config::from_yaml(&text)
            .err()
            .unwrap_or_else(|| panic!("accepted {source}"));
        assert!(error.to_string().contains(words), "{error}");
    }
    let text = "registries:\n  - match: x.example.com\n    secret: e\nsecrets:\n  e:\n    ecr: {region: us-east-1}\n";
    let config = Config::from_yaml(text).unwrap().0;
    assert_eq!(config.source("e").unwrap().to_string(), "ecr (us-east-1)");
}
