//! Whether a pull would succeed: the Registry HTTP API v2 flow the container runtime goes
//! through, with the credentials the kubelet would pick. `GET /v2/` → 401 with
//! `WWW-Authenticate` (Basic, or Bearer `realm`/`service`) → a token for
//! `repository:<path>:pull` → `HEAD` of the manifest with the OCI and Docker media types.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;

use crate::credentials::http::HttpClient;
use crate::image::{DOCKER_HUB, ImageRef};
use crate::keyring::Credential;

/// Docker Hub's API endpoint: images say `docker.io`, the API answers here.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// What a runtime accepts for a manifest, index first.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The outcome of a check, each with its own exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The manifest answered: the kubelet's pull would succeed.
    WouldPull,
    /// The registry or its token endpoint refused the credentials (401).
    BadCredentials,
    /// The credentials are good but may not pull this repository (403, or a token without
    /// the pull scope).
    NoPullRight,
    /// The repository, tag or digest does not exist.
    NotFound,
    /// The registry wants credentials and the secret has no entry the kubelet would use.
    NoAuthEntry,
    /// The registry did not answer.
    Unreachable,
    /// The registry's certificate is not trusted (see `--registry-ca`).
    TlsError,
    /// No rule matches the image: the webhook adds no secret.
    NoRule,
    /// Not checked: the registry is node-local ([`is_node_local`]) and this process does not
    /// share the node's network, so it would dial itself, not what the kubelet pulls from.
    /// Only the background checker says so; `check-pull`, run on the node, checks it.
    NodeLocal,
}

impl Verdict {
    pub const ALL: [Self; 9] = [
        Self::WouldPull,
        Self::BadCredentials,
        Self::NoPullRight,
        Self::NotFound,
        Self::NoAuthEntry,
        Self::Unreachable,
        Self::TlsError,
        Self::NoRule,
        Self::NodeLocal,
    ];

    pub fn exit_code(self) -> u8 {
        match self {
            Self::WouldPull => 0,
            Self::BadCredentials => 10,
            Self::NoPullRight => 11,
            Self::NotFound => 12,
            Self::NoAuthEntry => 13,
            Self::Unreachable => 14,
            Self::TlsError => 15,
            Self::NoRule => 16,
            // check-pull checks node-local registries, so never exits with this.
            Self::NodeLocal => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WouldPull => "would pull",
            Self::BadCredentials => "bad credentials",
            Self::NoPullRight => "no pull right on this repository",
            Self::NotFound => "tag or digest not found",
            Self::NoAuthEntry => "no auth entry the kubelet would use",
            Self::Unreachable => "registry unreachable",
            Self::TlsError => "TLS error",
            Self::NoRule => "no rule matches the image",
            Self::NodeLocal => "node-local registry, not checked off the node's network",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check's steps, for a person, and its verdict.
#[derive(Debug)]
pub struct Check {
    pub steps: Vec<String>,
    pub verdict: Verdict,
}

/// How to reach a registry.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub http: &'a HttpClient,
    /// Speak plain HTTP (local registries of k3s, Rancher Desktop, minikube).
    pub plain_http: bool,
}

/// The scheme and host the API of `image`'s registry answers on.
pub fn api_base(image: &ImageRef<'_>, plain_http: bool) -> String {
    let host = if image.domain() == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        image.domain()
    };
    let scheme = if plain_http { "http" } else { "https" };
    format!("{scheme}://{host}")
}

/// Whether a host speaks plain HTTP by default, as docker and containerd assume for loopback.
pub fn is_loopback(image: &ImageRef<'_>) -> bool {
    let host = image.host().trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Names the kubelet resolves on the node itself, to the node or its host machine, while a
/// Pod resolves them (if at all) to something else: Docker Desktop's and Rancher Desktop's
/// `host.docker.internal`, k3d's `host.k3d.internal`, minikube's `host.minikube.internal`.
const NODE_NAMES: [&str; 3] = [
    "host.docker.internal",
    "host.k3d.internal",
    "host.minikube.internal",
];

/// Whether `image`'s registry is reachable as named only from the node the kubelet runs on:
/// `localhost`, any `*.localhost` (RFC 6761: loopback), a loopback address (127.0.0.0/8,
/// `::1`), or one of [`NODE_NAMES`]; the port does not matter. From a Pod off the node's
/// network the same name is the Pod itself or nothing.
pub fn is_node_local(image: &ImageRef<'_>) -> bool {
    let host = image.host().to_ascii_lowercase();
    is_loopback(image)
        || host.ends_with(".localhost")
        || NODE_NAMES.contains(&host.trim_end_matches('.'))
}

/// Whether `image`'s registry answers TLS at all: an answer of any status, or a certificate
/// the client does not trust, says yes; a peer that is not speaking TLS says no.
pub async fn speaks_tls(http: &HttpClient, image: &ImageRef<'_>) -> bool {
    let url = format!("{}/v2/", api_base(image, false));
    match send(http, Method::GET, &url, None, None).await {
        Ok(_) => true,
        Err(error) => {
            let lower = error.to_ascii_lowercase();
            lower.contains("certificate") || lower.contains("unknownissuer")
        }
    }
}

/// Runs the v2 flow for `image` with `credential` (none: anonymous).
pub async fn check(
    endpoint: Endpoint<'_>,
    image: &ImageRef<'_>,
    credential: Option<&Credential>,
) -> Check {
    let mut steps = Vec::new();
    let verdict = flow(endpoint, image, credential, true, &mut steps).await;
    Check { steps, verdict }
}

/// The flow up to the credentials' acceptance, as `docker login` goes: `GET /v2/` with them
/// (Basic), or a token without a repository scope (Bearer). No manifest is asked for, so the
/// image's path does not matter. [`Verdict::WouldPull`] means the login works.
pub async fn login(endpoint: Endpoint<'_>, image: &ImageRef<'_>, credential: &Credential) -> Check {
    let mut steps = Vec::new();
    let verdict = flow(endpoint, image, Some(credential), false, &mut steps).await;
    Check { steps, verdict }
}

async fn flow(
    endpoint: Endpoint<'_>,
    image: &ImageRef<'_>,
    credential: Option<&Credential>,
    manifest_too: bool,
    steps: &mut Vec<String>,
) -> Verdict {
    let base = api_base(image, endpoint.plain_http);
    let reference = image.digest().or(image.tag()).unwrap_or("latest");
    let manifest = format!("{base}/v2/{}/manifests/{reference}", image.path());
    let basic = credential.map(|c| {
        let pair = format!("{}:{}", c.username, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    });

    let ping = match send(
        endpoint.http,
        Method::GET,
        &format!("{base}/v2/"),
        None,
        None,
    )
    .await
    {
        Ok(r) => r,
        Err(error) => {
            steps.push(format!("GET {base}/v2/: {error}"));
            return if is_tls_error(&error) {
                Verdict::TlsError
            } else {
                Verdict::Unreachable
            };
        }
    };
    steps.push(format!("GET {base}/v2/: {}", ping.status));
    let authorization = match (ping.status, ping.challenge.as_ref()) {
        (s, _) if s.is_success() => None,
        (StatusCode::UNAUTHORIZED, Some(Challenge::Basic)) => {
            if basic.is_none() {
                steps.push("the registry asks for Basic credentials".to_owned());
                return Verdict::NoAuthEntry;
            }
            if !manifest_too {
                let url = format!("{base}/v2/");
                return match send(endpoint.http, Method::GET, &url, basic.as_deref(), None).await {
                    Ok(answer) => {
                        steps.push(format!("GET {url} with the credentials: {}", answer.status));
                        match answer.status {
                            s if s.is_success() => Verdict::WouldPull,
                            StatusCode::UNAUTHORIZED => Verdict::BadCredentials,
                            StatusCode::FORBIDDEN => Verdict::NoPullRight,
                            _ => Verdict::Unreachable,
                        }
                    }
                    Err(error) => {
                        steps.push(format!("GET {url}: {error}"));
                        Verdict::Unreachable
                    }
                };
            }
            basic.clone()
        }
        (StatusCode::UNAUTHORIZED, Some(Challenge::Bearer { realm, service, .. })) => {
            let scope = format!("repository:{}:pull", image.path());
            // A login asks for no scope, as `docker login` does.
            let mut url = if manifest_too {
                format!("{realm}?scope={}", encode(&scope))
            } else {
                let account = credential.map(|c| c.username.as_str()).unwrap_or_default();
                format!("{realm}?account={}", encode(account))
            };
            if let Some(service) = service {
                url.push_str(&format!("&service={}", encode(service)));
            }
            let answer = match send(endpoint.http, Method::GET, &url, basic.as_deref(), None).await
            {
                Ok(r) => r,
                Err(error) => {
                    steps.push(format!("token {realm}: {error}"));
                    return if is_tls_error(&error) {
                        Verdict::TlsError
                    } else {
                        Verdict::Unreachable
                    };
                }
            };
            let who = if basic.is_some() {
                "with the credentials"
            } else {
                "anonymously"
            };
            steps.push(format!(
                "token for {scope} from {realm} {who}: {}",
                answer.status
            ));
            match answer.status {
                s if s.is_success() => {}
                StatusCode::UNAUTHORIZED if basic.is_some() => return Verdict::BadCredentials,
                StatusCode::UNAUTHORIZED => return Verdict::NoAuthEntry,
                StatusCode::FORBIDDEN => return Verdict::NoPullRight,
                _ => return Verdict::Unreachable,
            }
            let token: TokenAnswer = match serde_json::from_slice(&answer.body) {
                Ok(t) => t,
                Err(e) => {
                    steps.push(format!("the token endpoint's answer is not a token: {e}"));
                    return Verdict::Unreachable;
                }
            };
            if !manifest_too {
                return Verdict::WouldPull;
            }
            let token = token.token.or(token.access_token).unwrap_or_default();
            Some(format!("Bearer {token}"))
        }
        (status, _) => {
            steps.push(format!(
                "unexpected answer {status} without a usable challenge"
            ));
            return Verdict::Unreachable;
        }
    };

    let head = match send(
        endpoint.http,
        Method::HEAD,
        &manifest,
        authorization.as_deref(),
        Some(MANIFEST_TYPES),
    )
    .await
    {
        Ok(r) => r,
        Err(error) => {
            steps.push(format!("HEAD {manifest}: {error}"));
            return Verdict::Unreachable;
        }
    };
    steps.push(format!("HEAD {manifest}: {}", head.status));
    match head.status {
        s if s.is_success() => Verdict::WouldPull,
        StatusCode::NOT_FOUND => Verdict::NotFound,
        StatusCode::FORBIDDEN => Verdict::NoPullRight,
        // A Basic registry refusing the pair; a token without the pull scope.
        StatusCode::UNAUTHORIZED if matches!(ping.challenge, Some(Challenge::Basic)) => {
            Verdict::BadCredentials
        }
        // A token the registry does not take (expired, signed by another key) is the
        // credentials' fault; one without the pull scope is the repository's.
        StatusCode::UNAUTHORIZED => match &head.challenge {
            Some(Challenge::Bearer { error: Some(e), .. }) if e == "invalid_token" => {
                Verdict::BadCredentials
            }
            _ => Verdict::NoPullRight,
        },
        _ => Verdict::Unreachable,
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// RFC 6750's `error`: `invalid_token` (expired, not trusted) or `insufficient_scope`.
        error: Option<String>,
    },
}

struct Answer {
    status: StatusCode,
    challenge: Option<Challenge>,
    body: Bytes,
}

async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    authorization: Option<&str>,
    accept: Option<&str>,
) -> Result<Answer, String> {
    let mut request = Request::builder().method(method).uri(url);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(value) = accept {
        request = request.header(header::ACCEPT, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = http.send(request).await?;
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_challenge);
    Ok(Answer {
        status: response.status(),
        challenge,
        body: response.into_body(),
    })
}

/// `Basic realm="x"` or `Bearer realm="https://auth",service="registry",scope="..."`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut error = None;
    for part in split_params(params) {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            "error" => error = Some(v),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        error,
    })
}

/// Splits `a="x,y",b=z` on the commas outside quotes.
fn split_params(params: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in params.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&params[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&params[start..]);
    parts
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn is_tls_error(error: &str) -> bool {
    let lower = error.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer"]
        .iter()
        .any(|w| lower.contains(w))
}

/// The metric label of a verdict: the `result` of `credential_check`, each verdict of
/// [`Verdict::ALL`] once.
pub fn result_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::WouldPull => "ok",
        Verdict::BadCredentials => "bad_credentials",
        Verdict::NoPullRight => "no_pull_right",
        Verdict::NotFound => "not_found",
        Verdict::NoAuthEntry => "no_auth_entry",
        Verdict::Unreachable => "unreachable",
        Verdict::TlsError => "tls_error",
        Verdict::NoRule => "no_rule",
        Verdict::NodeLocal => "node_local",
    }
}
