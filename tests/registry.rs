//! `check-pull` against the distribution project's registry (Debian's `docker-registry`, what
//! Docker Hub's and Harbor's registries are built on), started on loopback with htpasswd
//! (Basic) auth, plain or behind TLS with a private CA, an image pushed through the registry
//! API. Each verdict is the exit status of the real binary. The kubelet's choice of auth entry
//! is checked on its own, without a registry. The background checks run against it too, with
//! their source Secret in the fake API server.

mod fake_api;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use pullsecret_injector::credentials::http::HttpClient;
use pullsecret_injector::image::ImageRef;
use pullsecret_injector::keyring::Keyring;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---- the keyring, as the kubelet picks an entry ---------------------------------------------

fn keyring(auths: Value) -> Keyring {
    Keyring::from_docker_config(json!({ "auths": auths }).to_string().as_bytes()).unwrap()
}

fn picked(ring: &Keyring, image: &str) -> Vec<String> {
    let image = ImageRef::parse(image).unwrap();
    ring.lookup(&image)
        .into_iter()
        .map(|c| c.key.clone())
        .collect()
}

#[test]
fn the_auth_entry_the_kubelet_would_use() {
    let entry = json!({ "username": "u", "password": "p" });
    let ring = keyring(json!({
        "https://index.docker.io/v1/": entry,
        "ghcr.io": entry,
        "ghcr.io/acme": entry,
        "*.pkg.dev": entry,
        "http://localhost:5000/": entry,
        "registry.example.com/v2/": entry,
    }));
    // More specific keys first; every matching key is tried.
    assert_eq!(
        picked(&ring, "ghcr.io/acme/api:1"),
        ["ghcr.io/acme", "ghcr.io"]
    );
    assert_eq!(picked(&ring, "ghcr.io/other/api:1"), ["ghcr.io"]);
    // The kubelet compares paths as raw prefixes (unlike our rules).
    assert_eq!(
        picked(&ring, "ghcr.io/acmecorp/api"),
        ["ghcr.io/acme", "ghcr.io"]
    );
    assert_eq!(picked(&ring, "us-docker.pkg.dev/p/r/i"), ["*.pkg.dev"]);
    assert!(picked(&ring, "a.b.pkg.dev/p/r/i").is_empty());
    // `https://`, a trailing `/` and `/v2/` are the bare host; the port must be equal.
    assert_eq!(
        picked(&ring, "localhost:5000/x"),
        ["http://localhost:5000/"]
    );
    assert!(picked(&ring, "localhost:5001/x").is_empty());
    assert_eq!(
        picked(&ring, "registry.example.com/x"),
        ["registry.example.com/v2/"]
    );
    // Docker Hub, only through the legacy key, for every spelling of an image.
    for image in [
        "nginx",
        "library/nginx",
        "docker.io/bitnami/kafka",
        "index.docker.io/x/y",
    ] {
        assert_eq!(
            picked(&ring, image),
            ["https://index.docker.io/v1/"],
            "{image}"
        );
    }
    // A `docker.io` key wins over the legacy one.
    let ring = keyring(json!({ "https://index.docker.io/v1/": entry, "docker.io": entry }));
    assert_eq!(picked(&ring, "nginx"), ["docker.io"]);
    // `auth` alone carries the pair.
    let ring = keyring(
        json!({ "ghcr.io": { "auth": base64::engine::general_purpose::STANDARD.encode("robot:tok") } }),
    );
    let image = ImageRef::parse("ghcr.io/x").unwrap();
    let found = ring.lookup(&image);
    assert_eq!(
        (found[0].username.as_str(), found[0].password.as_str()),
        ("robot", "tok")
    );
    assert!(
        !format!("{:?}", found[0]).contains("tok"),
        "no password in a debug print"
    );
    // A legacy .dockercfg is the map itself.
    let legacy = Keyring::from_docker_config(br#"{"quay.io":{"auth":"dTpw"}}"#).unwrap();
    assert_eq!(picked(&legacy, "quay.io/x/y"), ["quay.io"]);
    assert!(Keyring::from_docker_config(b"[]").is_err());
}

// ---- a real registry ------------------------------------------------------------------------

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-passw0rd";
const REPO: &str = "team/app";
const TAG: &str = "1.0";

struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// The CA that signed its certificate, when it speaks TLS.
    ca: Option<PathBuf>,
    /// The token issuer's key, with token auth: pushes use a token signed with it.
    issuer: Option<Arc<Issuer>>,
}

/// How the registry authenticates.
enum Auth {
    Htpasswd,
    /// `auth: token`, with tokens from this issuer's realm.
    Token(Arc<Issuer>),
}

impl Registry {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// A registry with htpasswd auth for [`USER`], plain HTTP or TLS from a private CA, with
    /// an image pushed at `REPO:TAG`.
    async fn start(tls: bool) -> Self {
        Self::start_with(tls, Auth::Htpasswd, &[REPO]).await
    }

    async fn start_with(tls: bool, auth: Auth, repos: &[&'static str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (auth_config, issuer) = match auth {
            Auth::Htpasswd => {
                let htpasswd = Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .expect("htpasswd runs (apache2-utils; bash .ci/run installs it)");
                assert!(htpasswd.status.success());
                std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
                (
                    format!(
                        "  htpasswd: {{realm: test, path: {}/htpasswd}}\n",
                        dir.path().display()
                    ),
                    None,
                )
            }
            Auth::Token(issuer) => {
                std::fs::write(dir.path().join("issuer.crt"), &issuer.cert_pem).unwrap();
                (
                    format!(
                        "  token: {{realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}/issuer.crt}}\n",
                        issuer.realm,
                        dir.path().display()
                    ),
                    Some(issuer),
                )
            }
        };
        let mut tls_config = String::new();
        let mut ca = None;
        if tls {
            let pair = pullsecret_injector::tls::self_signed(&["127.0.0.1", "localhost"]).unwrap();
            for (name, pem) in [
                ("ca.crt", &pair.ca_pem),
                ("tls.crt", &pair.cert_pem),
                ("tls.key", &pair.key_pem),
            ] {
                std::fs::write(dir.path().join(name), pem).unwrap();
            }
            tls_config = format!(
                "  tls:\n    certificate: {0}/tls.crt\n    key: {0}/tls.key\n",
                dir.path().display()
            );
            ca = Some(dir.path().join("ca.crt"));
        }
        let config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {0}/data}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only-http-secret\n{tls_config}auth:\n{auth_config}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (bash .ci/run installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let registry = Self {
            child,
            port,
            dir,
            ca,
            issuer,
        };
        for repo in repos {
            registry.push(repo).await;
        }
        registry
    }

    /// The requests the registry logged for `path`, as `"METHOD path" status` lines.
    fn requests(&self, path: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {path} HTTP/1.1\"")))
            .map(str::to_owned)
            .collect()
    }

    fn base(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn http(&self) -> HttpClient {
        match &self.ca {
            Some(ca) => {
                HttpClient::with_extra_ca(Duration::from_secs(10), &std::fs::read(ca).unwrap())
                    .unwrap()
            }
            None => HttpClient::new(Duration::from_secs(10)).unwrap(),
        }
    }

    /// Pushes a one-layer OCI image to `repo:TAG` through the registry API, as skopeo would.
    async fn push(&self, repo: &'static str) {
        let http = self.http();
        let basic = match &self.issuer {
            Some(issuer) => format!(
                "Bearer {}",
                issuer.token(USER, repo, &["pull", "push"], 300)
            ),
            None => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            ),
        };
        let send = |method: Method, url: String, body: Vec<u8>, content_type: &'static str| {
            let request = Request::builder()
                .method(method)
                .uri(url)
                .header("authorization", &basic)
                .header("content-type", content_type)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            http.send(request)
        };
        let blob = |content: Vec<u8>| {
            let digest = format!("sha256:{:x}", Sha256::digest(&content));
            let size = content.len();
            let base = self.base();
            let send = &send;
            async move {
                let started = send(
                    Method::POST,
                    format!("{base}/v2/{repo}/blobs/uploads/"),
                    vec![],
                    "application/octet-stream",
                )
                .await
                .unwrap();
                assert_eq!(started.status(), 202, "start an upload");
                let location = started.headers()["location"].to_str().unwrap().to_owned();
                let location = if location.starts_with("http") {
                    location
                } else {
                    format!("{base}{location}")
                };
                let separator = if location.contains('?') { '&' } else { '?' };
                let done = send(
                    Method::PUT,
                    format!("{location}{separator}digest={digest}"),
                    content,
                    "application/octet-stream",
                )
                .await
                .unwrap();
                assert_eq!(done.status(), 201, "finish the upload");
                (digest, size)
            }
        };
        let (config_digest, config_size) = blob(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
        )
        .await;
        let (layer_digest, layer_size) = blob(b"not really a tarball".to_vec()).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size }],
        });
        let put = send(
            Method::PUT,
            format!("{}/v2/{repo}/manifests/{TAG}", self.base()),
            manifest.to_string().into_bytes(),
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await
        .unwrap();
        assert_eq!(put.status(), 201, "push the manifest");
    }

    fn image(&self, reference: &str) -> String {
        format!("127.0.0.1:{}/{reference}", self.port)
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("injector.yaml");
        std::fs::write(
            &path,
            format!(
                "registries:\n  - match: 127.0.0.1:{}\n    secret: local-registry\n",
                self.port
            ),
        )
        .unwrap();
        path
    }
}

fn secret_file(dir: &Path, key: &str, user: &str, password: &str) -> PathBuf {
    let auths = json!({ "auths": { key: { "username": user, "password": password } } });
    // As kubectl writes it: a Secret manifest with base64 data.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "local-registry" },
        "type": "kubernetes.io/dockerconfigjson",
        "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(auths.to_string()) },
    });
    let path = dir.join(format!(
        "secret-{:x}.json",
        Sha256::digest(secret.to_string())
    ));
    std::fs::write(&path, secret.to_string()).unwrap();
    path
}

fn check_pull(image: &str, config: &Path, secret: &Path, extra: &[&str]) -> (i32, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_pullsecret-injector"))
        .arg("check-pull")
        .arg(image)
        .arg("--config")
        .arg(config)
        .arg("--secret-file")
        .arg(secret)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
#[cfg_attr(
    not(all(has_registry, has_htpasswd)),
    ignore = "needs docker-registry and htpasswd on PATH (bash .ci/run installs them)"
)]
async fn verdicts_against_a_registry_with_basic_auth() {
    let mut registry = Registry::start(false).await;
    let dir = registry.dir.path().to_owned();
    let config = registry.config();
    let host = format!("127.0.0.1:{}", registry.port);
    let good = secret_file(&dir, &host, USER, PASSWORD);
    let image = registry.image(&format!("{REPO}:{TAG}"));

    let (code, text) = check_pull(&image, &config, &good, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("rule: 127.0.0.1")
            && text.contains("auth entry")
            && text.contains("verdict: would pull"),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{host}/v2/")),
        "plain HTTP on loopback: {text}"
    );
    assert!(!text.contains(PASSWORD), "the password is never printed");

    let cases = [
        (
            secret_file(&dir, &host, USER, "wrong-password"),
            image.clone(),
            10,
            "bad credentials",
        ),
        (
            secret_file(&dir, &host, "mallory", PASSWORD),
            image.clone(),
            10,
            "bad credentials",
        ),
        (
            good.clone(),
            registry.image(&format!("{REPO}:no-such-tag")),
            12,
            "not found",
        ),
        (
            good.clone(),
            registry.image("team/other:1"),
            12,
            "not found",
        ),
        (
            secret_file(&dir, "ghcr.io", USER, PASSWORD),
            image.clone(),
            13,
            "no auth entry",
        ),
    ];
    for (secret, image, code, words) in cases {
        let (got, text) = check_pull(&image, &config, &secret, &[]);
        assert_eq!(got, code, "{words}: {text}");
        assert!(text.contains(words), "{text}");
    }
    // No rule for the image.
    let (code, text) = check_pull("quay.io/x/y:1", &config, &good, &[]);
    assert_eq!(code, 16, "{text}");

    // The registry down.
    registry.stop();
    let (code, text) = check_pull(&image, &config, &good, &["--timeout", "3s"]);
    assert_eq!(code, 14, "{text}");
    assert!(text.contains("registry unreachable"), "{text}");
}

#[tokio::test]
#[cfg_attr(
    not(all(has_registry, has_htpasswd)),
    ignore = "needs docker-registry and htpasswd on PATH (bash .ci/run installs them)"
)]
async fn a_registry_behind_a_private_ca() {
    let registry = Registry::start(true).await;
    let dir = registry.dir.path().to_owned();
    let config = registry.config();
    let host = format!("127.0.0.1:{}", registry.port);
    let good = secret_file(&dir, &host, USER, PASSWORD);
    let image = registry.image(&format!("{REPO}:{TAG}"));
    let (code, text) = check_pull(&image, &config, &good, &[]);
    assert_eq!(
        code, 15,
        "an untrusted CA is a TLS error, not a plain-HTTP fallback: {text}"
    );
    let ca = registry.ca.clone().unwrap();
    let (code, text) = check_pull(
        &image,
        &config,
        &good,
        &["--registry-ca", ca.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("https://{host}/v2/")), "{text}");
}

// ---- token auth: a token server that signs JWTs the registry trusts --------------------------

const SERVICE: &str = "test-registry";
const ISSUER: &str = "test-token-issuer";
/// A user whose tokens come back already expired.
const EXPIRED_USER: &str = "expired";
/// A repository the token server never grants.
const FORBIDDEN_REPO: &str = "secret/app";

/// Signs registry tokens (ES256, the certificate in `x5c`) and serves them at `realm`.
struct Issuer {
    key_pem: String,
    cert_pem: String,
    cert_der_b64: String,
    realm: String,
}

#[derive(serde::Serialize)]
struct TokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Value>,
}

impl Issuer {
    /// A token for `sub` with `actions` on `repo`, living `ttl` seconds (negative: expired).
    fn token(&self, sub: &str, repo: &str, actions: &[&str], ttl: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = now.saturating_add_signed(ttl);
        let access = if actions.is_empty() {
            vec![]
        } else {
            vec![json!({ "type": "repository", "name": repo, "actions": actions })]
        };
        let claims = TokenClaims {
            iss: ISSUER,
            sub,
            aud: SERVICE,
            exp,
            nbf: now.saturating_sub(600).min(exp.saturating_sub(1)),
            iat: now.saturating_sub(600).min(exp.saturating_sub(1)),
            jti: format!("{now}-{sub}-{repo}"),
            access,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.x5c = Some(vec![self.cert_der_b64.clone()]);
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// The token server: Basic credentials in, a token for the asked `repository:<name>:pull`
/// scope out; the forbidden repository gets a token without access, as Docker Hub's does.
async fn token_server() -> Arc<Issuer> {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, ISSUER);
    let cert = params.self_signed(&key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = Arc::new(Issuer {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
        cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
        realm: format!("http://{}/token", listener.local_addr().unwrap()),
    });
    let state = issuer.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::get(
            move |headers: http::HeaderMap, query: axum::extract::RawQuery| {
                let issuer = state.clone();
                async move {
                    let basic = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Basic "))
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .and_then(|b| String::from_utf8(b).ok())
                        .unwrap_or_default();
                    let (user, password) = basic.split_once(':').unwrap_or_default();
                    if password != PASSWORD || (user != USER && user != EXPIRED_USER) {
                        return (
                            http::StatusCode::UNAUTHORIZED,
                            String::from(r#"{"details":"incorrect username or password"}"#),
                        );
                    }
                    let query: std::collections::HashMap<String, String> =
                        form_urlencoded::parse(query.0.unwrap_or_default().as_bytes())
                            .into_owned()
                            .collect();
                    assert_eq!(query.get("service").map(String::as_str), Some(SERVICE));
                    let scope = query.get("scope").cloned().unwrap_or_default();
                    let repo = scope.split(':').nth(1).unwrap_or_default().to_owned();
                    let actions: &[&str] = if repo == FORBIDDEN_REPO {
                        &[]
                    } else {
                        &["pull"]
                    };
                    let ttl = if user == EXPIRED_USER { -3600 } else { 300 };
                    let token = issuer.token(user, &repo, actions, ttl);
                    (http::StatusCode::OK, json!({ "token": token }).to_string())
                }
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    issuer
}

// The token server runs on the test's runtime while the binary blocks one of its threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(has_registry, has_htpasswd)),
    ignore = "needs docker-registry and htpasswd on PATH (bash .ci/run installs them)"
)]
async fn verdicts_against_a_registry_with_token_auth() {
    let issuer = token_server().await;
    let registry = Registry::start_with(false, Auth::Token(issuer), &[REPO, FORBIDDEN_REPO]).await;
    let dir = registry.dir.path().to_owned();
    let config = registry.config();
    let host = format!("127.0.0.1:{}", registry.port);
    let image = registry.image(&format!("{REPO}:{TAG}"));
    let cases = [
        (USER, PASSWORD, image.clone(), 0, "would pull"),
        (USER, "wrong-password", image.clone(), 10, "bad credentials"),
        (
            USER,
            PASSWORD,
            registry.image(&format!("{FORBIDDEN_REPO}:{TAG}")),
            11,
            "no pull right",
        ),
        (EXPIRED_USER, PASSWORD, image.clone(), 10, "bad credentials"),
        (
            USER,
            PASSWORD,
            registry.image(&format!("{REPO}:missing")),
            12,
            "not found",
        ),
    ];
    for (user, password, image, code, words) in cases {
        let secret = secret_file(&dir, &host, user, password);
        let (got, text) = check_pull(&image, &config, &secret, &[]);
        assert_eq!(got, code, "{user} {words}: {text}");
        assert!(text.contains(words), "{text}");
        assert!(
            text.contains("token for repository:"),
            "the Bearer flow: {text}"
        );
    }
}

// ---- background credential checks ------------------------------------------------------------

fn docker_config(host: &str, user: &str, password: &str) -> Vec<u8> {
    json!({ "auths": { host: { "username": user, "password": password } } })
        .to_string()
        .into_bytes()
}

#[test]
fn what_the_background_checks_ask() {
    use pullsecret_injector::config::Config;
    use pullsecret_injector::credential_check::{Target, targets};
    let config = Config::from_yaml(
        "registries:\n  - match: ghcr.io/acme\n    secret: ghcr\n  - match: \"*.pkg.dev\"\n    secret: gar\n  - match: \"*-docker.pkg.dev\"\n    secret: gar\n    probeImage: us-docker.pkg.dev/p/r/i:1\n  - match: ghcr.io/acme\n    secret: ghcr\n",
    )
    .unwrap()
    .0;
    assert_eq!(
        targets(&config),
        [
            Target {
                secret: "ghcr".into(),
                registry: "ghcr.io/acme".into(),
                probe_image: None
            },
            Target {
                secret: "gar".into(),
                registry: "*-docker.pkg.dev".into(),
                probe_image: Some("us-docker.pkg.dev/p/r/i:1".into())
            },
        ],
        "a glob without a probe image names no registry; duplicates once"
    );
    let bad = Config::from_yaml(
        "registries:\n  - match: ghcr.io/acme\n    secret: g\n    probeImage: quay.io/x:1\n",
    );
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("not an image this rule matches")
    );
}

#[tokio::test]
#[cfg_attr(
    not(all(has_registry, has_htpasswd)),
    ignore = "needs docker-registry and htpasswd on PATH (bash .ci/run installs them)"
)]
async fn a_check_is_one_login_and_says_what_is_wrong() {
    use pullsecret_injector::credential_check::{Target, check_target, result_label};
    let registry = Registry::start(false).await;
    let host = format!("127.0.0.1:{}", registry.port);
    let http = HttpClient::new(Duration::from_secs(5)).unwrap();
    let login = Target {
        secret: "s".into(),
        registry: host.clone(),
        probe_image: None,
    };
    let probe = |tag: &str| Target {
        secret: "s".into(),
        registry: host.clone(),
        probe_image: Some(registry.image(&format!("{REPO}:{tag}"))),
    };
    let cases = [
        (login.clone(), docker_config(&host, USER, PASSWORD), "ok"),
        (
            login.clone(),
            docker_config(&host, USER, "stale-password"),
            "bad_credentials",
        ),
        (
            login.clone(),
            docker_config("ghcr.io", USER, PASSWORD),
            "no_auth_entry",
        ),
        (probe(TAG), docker_config(&host, USER, PASSWORD), "ok"),
        (
            probe("gone"),
            docker_config(&host, USER, PASSWORD),
            "not_found",
        ),
    ];
    for (target, config, expected) in cases {
        let (verdict, steps) = check_target(&http, &target, &config).await;
        assert_eq!(result_label(verdict), expected, "{target:?}: {steps:?}");
    }
    // The stale password cost one login: the anonymous ping and one try with it, not a burst.
    let before = registry.requests("/v2/").len();
    let _ = check_target(&http, &login, &docker_config(&host, USER, "stale-password")).await;
    let logins = registry.requests("/v2/").len() - before;
    assert!((1..=3).contains(&logins), "{logins} requests for one check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(has_registry, has_htpasswd)),
    ignore = "needs docker-registry and htpasswd on PATH (bash .ci/run installs them)"
)]
async fn the_checker_follows_its_sources_and_reports_a_failure() {
    use pullsecret_injector::config::Config;
    use pullsecret_injector::credential_check::{CheckArgs, Checker};
    use pullsecret_injector::metrics::Metrics;
    use pullsecret_injector::watch::ConfigStore;

    let registry = Registry::start(false).await;
    let host = format!("127.0.0.1:{}", registry.port);
    let api = fake_api::FakeApi::default();
    let put = |password: &str| {
        api.put_secret(
            "psi",
            "local-registry",
            json!({ "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(docker_config(&host, USER, password)) } }),
        )
    };
    put(PASSWORD);
    let config = Config::from_yaml(&format!(
        "registries:\n  - match: {host}\n    secret: local-registry\n"
    ))
    .unwrap()
    .0;
    let metrics = Arc::new(pullsecret_injector::metrics::Metrics::new());
    let checker = Checker::new(
        &api.client(),
        "psi".to_owned(),
        watched_sources(&api, "psi"),
        Arc::new(ConfigStore::new(config)),
        metrics.clone(),
        HttpClient::new(Duration::from_secs(5)).unwrap(),
        // The registry is on loopback, which a Pod off the node's network would not check.
        &CheckArgs {
            credential_check_interval: Duration::from_secs(3600),
            host_network: true,
        },
    )
    .with_min_gap(Duration::from_millis(200));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(checker.run(async move {
        let _ = stop_rx.await;
    }));
    let result = |metrics: &Metrics, result: &str| {
        metrics.encode().contains(&format!(
            "pullsecret_injector_credential_check{{secret=\"local-registry\",registry=\"{host}\",result=\"{result}\"}} 1"
        ))
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| wait_for(&metrics, what, done);
    wait("the first check at start", &|| result(&metrics, "ok"));
    // The password changes for a stale one: checked again at once, not at the next interval.
    put("stale-password");
    wait("the check after the change", &|| {
        result(&metrics, "bad_credentials")
    });
    assert!(!result(&metrics, "ok"), "one current result");
    let events = api.state().events.clone();
    let event = events
        .iter()
        .find(|e| e["reason"] == "PullCredentialFailed")
        .expect("an Event");
    assert_eq!(event["regarding"]["name"], "local-registry");
    assert!(event["note"].as_str().unwrap().contains("bad credentials"));
    assert!(
        !event.to_string().contains("stale-password"),
        "no secret value in an Event"
    );
    assert!(
        metrics
            .encode()
            .contains("pullsecret_injector_credential_check_timestamp_seconds")
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    // A stopped checker renews nothing: its last results go.
    assert!(
        series_of(&metrics, "local-registry").is_empty(),
        "{}",
        metrics.encode()
    );
}

/// Waits up to 20 s (the checker's tasks run on other threads) until `done` holds.
fn wait_for(metrics: &pullsecret_injector::metrics::Metrics, what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            metrics.encode()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The series lines of `metrics` naming `secret`.
fn series_of(metrics: &pullsecret_injector::metrics::Metrics, secret: &str) -> Vec<String> {
    metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("secret=\"{secret}\"")))
        .map(str::to_owned)
        .collect()
}

/// A reload that drops a rule and a minted secret takes their series with it, the checker's
/// and the refresher's: a last failing result or a dead expiry time left behind would keep an
/// alert firing for good. Nothing here leaves loopback: the sources hold no entry for the
/// checked registry, or name a closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_drops_a_rule_or_a_minted_secret_drops_their_series() {
    use pullsecret_injector::config::Config;
    use pullsecret_injector::credential_check::{CheckArgs, Checker};
    use pullsecret_injector::metrics::Metrics;
    use pullsecret_injector::refresh::{CredentialArgs, Refresher};
    use pullsecret_injector::watch::ConfigStore;

    let api = fake_api::FakeApi::default();
    for name in ["dropped", "kept"] {
        api.put_secret(
            "psi",
            name,
            json!({ "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(docker_config("other.example", USER, PASSWORD)) } }),
        );
    }
    let plugin = format!(
        "{}/tests/plugins/good-provider.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let kept_rule = "  - match: 127.0.0.1:2/kept\n    secret: kept\n";
    let before = Config::from_yaml(&format!(
        "registries:\n  - match: 127.0.0.1:2/gone\n    secret: dropped\n{kept_rule}  - match: 127.0.0.1:1/minted\n    secret: minted\nsecrets:\n  minted:\n    credentialProvider: {{command: {plugin}}}\n"
    ))
    .unwrap()
    .0;
    let after = Config::from_yaml(&format!("registries:\n{kept_rule}"))
        .unwrap()
        .0;
    let store = Arc::new(ConfigStore::new(before));
    let metrics = Arc::new(Metrics::new());
    let http = HttpClient::new(Duration::from_secs(5)).unwrap();
    let checker = Checker::new(
        &api.client(),
        "psi".to_owned(),
        watched_sources(&api, "psi"),
        store.clone(),
        metrics.clone(),
        http.clone(),
        // The registry is on loopback, which a Pod off the node's network would not check.
        &CheckArgs {
            credential_check_interval: Duration::from_secs(3600),
            host_network: true,
        },
    );
    let refresher = Refresher::new(
        api.client(),
        "psi".to_owned(),
        store.clone(),
        metrics.clone(),
        http,
        CredentialArgs::default(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tasks = [
        tokio::spawn(checker.run(stopped())),
        tokio::spawn(refresher.run(stopped())),
    ];
    let wait = |what: &str, done: &dyn Fn() -> bool| wait_for(&metrics, what, done);
    let failing = |secret: &str, result: &str| {
        series_of(&metrics, secret).iter().any(|l| {
            l.starts_with("pullsecret_injector_credential_check{")
                && l.contains(&format!("result=\"{result}\""))
                && l.ends_with(" 1")
        })
    };
    wait("the checks and the minting", &|| {
        failing("dropped", "no_auth_entry")
            && failing("kept", "no_auth_entry")
            && failing("minted", "unreachable")
            && series_of(&metrics, "minted")
                .iter()
                .any(|l| l.starts_with("pullsecret_injector_credential_expiry_timestamp_seconds"))
    });

    store.store(after);
    wait("the dropped series to go", &|| {
        series_of(&metrics, "dropped").is_empty() && series_of(&metrics, "minted").is_empty()
    });
    // What the config still names stays.
    assert!(failing("kept", "no_auth_entry"), "{}", metrics.encode());
    assert!(
        series_of(&metrics, "kept")
            .iter()
            .any(|l| l.starts_with("pullsecret_injector_credential_check_timestamp_seconds")),
        "{}",
        metrics.encode()
    );

    // Stopped, the tasks take the rest of their series.
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    assert!(
        series_of(&metrics, "kept").is_empty(),
        "{}",
        metrics.encode()
    );
}

#[test]
fn node_local_registries_are_the_ones_a_pod_cannot_reach_by_name() {
    use pullsecret_injector::registry::is_node_local;
    for image in [
        "localhost/a",
        "localhost:5000/a",
        "127.0.0.1:5000/a",
        "127.1.2.3/a",
        "[::1]:5000/a",
        "host.docker.internal:5000/a",
        "host.k3d.internal/a",
        "host.minikube.internal:5000/a",
        "registry.localhost:5000/a",
        "Registry.LocalHost/a",
    ] {
        assert!(is_node_local(&ImageRef::parse(image).unwrap()), "{image}");
    }
    for image in [
        "ghcr.io/a",
        "10.0.0.5:5000/a",
        "[fd00::1]:5000/a",
        "localhost.example.com/a",
        "docker.internal/a",
        "host.docker.internal.example.com/a",
        "nginx",
    ] {
        assert!(!is_node_local(&ImageRef::parse(image).unwrap()), "{image}");
    }
}

/// A loopback listener that counts the connections made to it and drops each at once.
async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

/// A rule for a loopback registry: from a Pod's network the checker would dial the Pod itself,
/// so it asks nothing and says `node_local`, with no Event; sharing the node's network
/// (`--host-network`) it checks the registry as any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_local_registry_is_checked_only_on_the_host_network() {
    use pullsecret_injector::config::Config;
    use pullsecret_injector::credential_check::{CheckArgs, Checker};
    use pullsecret_injector::metrics::Metrics;
    use pullsecret_injector::watch::ConfigStore;

    for host_network in [false, true] {
        let (port, connections) = counting_listener().await;
        let host = format!("127.0.0.1:{port}");
        let api = fake_api::FakeApi::default();
        api.put_secret(
            "psi",
            "local-registry",
            json!({ "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(docker_config(&host, USER, PASSWORD)) } }),
        );
        let config = Config::from_yaml(&format!(
            "registries:\n  - match: {host}\n    secret: local-registry\n"
        ))
        .unwrap()
        .0;
        let metrics = Arc::new(Metrics::new());
        let checker = Checker::new(
            &api.client(),
            "psi".to_owned(),
            watched_sources(&api, "psi"),
            Arc::new(ConfigStore::new(config)),
            metrics.clone(),
            HttpClient::new(Duration::from_secs(5)).unwrap(),
            &CheckArgs {
                credential_check_interval: Duration::from_secs(3600),
                host_network,
            },
        )
        .with_min_gap(Duration::from_millis(200));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(checker.run(async move {
            let _ = stop_rx.await;
        }));
        let current = |metrics: &Metrics| {
            series_of(metrics, "local-registry").into_iter().find(|l| {
                l.starts_with("pullsecret_injector_credential_check{") && l.ends_with(" 1")
            })
        };
        wait_for(&metrics, "the check at start", &|| {
            current(&metrics).is_some()
        });
        let line = current(&metrics).unwrap();
        // A round ends with its Events sent; the stopped task has ended its round.
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        let events: Vec<Value> = api.state().events.clone();
        let failed = events.iter().any(|e| e["reason"] == "PullCredentialFailed");
        let dialled = connections.load(std::sync::atomic::Ordering::SeqCst);
        if host_network {
            // Checked: the registry was dialled, and dropping the connection is a failure.
            assert!(line.contains("result=\"unreachable\""), "{line}");
            assert!(dialled > 0, "the registry was not asked");
            assert!(failed, "no PullCredentialFailed Event: {events:?}");
        } else {
            assert!(line.contains("result=\"node_local\""), "{line}");
            assert_eq!(dialled, 0, "a node-local registry was dialled from the Pod");
            assert!(!failed, "node_local is not a failure: {events:?}");
        }
    }
}

/// The source Secrets' watch, run as the sync runs it on the leader, for a checker to read.
fn watched_sources(api: &fake_api::FakeApi, namespace: &str) -> pullsecret_injector::sync::Sources {
    let sources = pullsecret_injector::sync::Sources::default();
    let (watching, client, namespace) = (sources.clone(), api.client(), namespace.to_owned());
    tokio::spawn(async move { watching.watch(client, &namespace, |_| {}).await });
    sources
}
