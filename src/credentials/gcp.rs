//! Google credentials for Artifact Registry and gcr.io: an OAuth2 access token (username
//! `oauth2accesstoken`), minted from a service-account key (a JWT signed with the key,
//! exchanged at the key's `token_uri`), from the metadata server (GKE workload identity), or
//! from an external-account file (workload identity federation: a subject token exchanged at
//! STS, then optionally for a service account's token).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::http::HttpClient;
use super::{MintError, Minted, bounded_expiry, bounded_until};

/// The username Artifact Registry and gcr.io take with an access token.
pub const USERNAME: &str = "oauth2accesstoken";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime asked of the JWT assertion (Google's maximum).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Lifetime of a token whose answer has no `expires_in`: Google's tokens live an hour.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct ServiceAccountKey {
    #[serde(rename = "type")]
    type_: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    /// Any JSON number, checked by [`minted`]: a remote value, bounded before time arithmetic.
    expires_in: Option<serde_json::Number>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Mints from a service-account JSON key.
pub async fn mint_from_key(
    key_json: &[u8],
    keys: &[String],
    http: &HttpClient,
) -> Result<Minted, MintError> {
    let key: ServiceAccountKey = serde_json::from_slice(key_json)
        .map_err(|e| MintError::Key(format!("not a service-account JSON key: {e}")))?;
    if key.type_.as_deref().is_some_and(|t| t != "service_account") {
        return Err(MintError::Key(format!(
            "type {:?} is not service_account",
            key.type_.unwrap_or_default()
        )));
    }
    let token_uri = key
        .token_uri
        .clone()
        .unwrap_or_else(|| "https://oauth2.googleapis.com/token".to_owned());
    let now = SystemTime::now();
    let claims = Claims {
        iss: &key.client_email,
        scope: SCOPE,
        aud: &token_uri,
        iat: unix(now),
        exp: unix(now + ASSERTION_LIFETIME),
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    let signing = EncodingKey::from_rsa_pem(key.private_key.as_bytes())
        .map_err(|e| MintError::Key(format!("private_key is not an RSA PEM key: {e}")))?;
    let assertion = jsonwebtoken::encode(&header, &claims, &signing)
        .map_err(|e| MintError::Key(format!("cannot sign the assertion: {e}")))?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let answer: TokenAnswer = post_form(http, &token_uri, form, None).await?;
    minted(&token_uri, keys, answer, now)
}

/// Mints from the metadata server of the node (GKE workload identity, a GCE VM).
pub async fn mint_from_metadata(
    host: &str,
    keys: &[String],
    http: &HttpClient,
) -> Result<Minted, MintError> {
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
    let request = Request::get(&url)
        .header("Metadata-Flavor", "Google")
        .body(Full::new(Bytes::new()))
        .map_err(|e| endpoint(&url, e))?;
    let now = SystemTime::now();
    let answer: TokenAnswer = json_answer(http, &url, request).await?;
    minted(&url, keys, answer, now)
}

#[derive(Deserialize)]
struct ExternalAccount {
    #[serde(rename = "type")]
    type_: String,
    audience: String,
    subject_token_type: String,
    token_url: String,
    credential_source: CredentialSource,
    service_account_impersonation_url: Option<String>,
}

#[derive(Deserialize)]
struct CredentialSource {
    file: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    format: Option<SourceFormat>,
}

#[derive(Deserialize)]
struct SourceFormat {
    #[serde(rename = "type")]
    type_: String,
    subject_token_field_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImpersonatedToken {
    access_token: String,
    expire_time: String,
}

/// Mints from an external-account credential file (workload identity federation): the
/// subject token from a file or a URL, exchanged at STS, then for the service account's token
/// when the file names one to impersonate.
pub async fn mint_external_account(
    path: &str,
    keys: &[String],
    http: &HttpClient,
) -> Result<Minted, MintError> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| MintError::Key(format!("cannot read {path}: {e}")))?;
    let account: ExternalAccount = serde_json::from_slice(&text)
        .map_err(|e| MintError::Key(format!("{path} is not an external-account file: {e}")))?;
    if account.type_ != "external_account" {
        return Err(MintError::Key(format!(
            "{path}: type {:?} is not external_account",
            account.type_
        )));
    }
    let subject = subject_token(&account.credential_source, http).await?;
    let now = SystemTime::now();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        )
        .append_pair("audience", &account.audience)
        .append_pair("scope", SCOPE)
        .append_pair(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        )
        .append_pair("subject_token", &subject)
        .append_pair("subject_token_type", &account.subject_token_type)
        .finish();
    let federated: TokenAnswer = post_form(http, &account.token_url, form, None).await?;
    let Some(url) = account.service_account_impersonation_url else {
        return minted(&account.token_url, keys, federated, now);
    };
    let body = serde_json::json!({ "scope": [SCOPE], "lifetime": "3600s" }).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", federated.access_token),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| endpoint(&url, e))?;
    let token: ImpersonatedToken = json_answer(http, &url, request).await?;
    let expires_at = humantime::parse_rfc3339(&token.expire_time)
        .map_err(|e| e.to_string())
        .and_then(|t| bounded_until(now, t))
        .map_err(|e| endpoint(&url, format!("expireTime {:?}: {e}", token.expire_time)))?;
    Ok(Minted::for_keys(
        keys,
        USERNAME,
        &token.access_token,
        expires_at,
    ))
}

async fn subject_token(source: &CredentialSource, http: &HttpClient) -> Result<String, MintError> {
    let raw = match (&source.file, &source.url) {
        (Some(file), _) => tokio::fs::read(file)
            .await
            .map_err(|e| MintError::Key(format!("cannot read the subject token {file}: {e}")))?,
        (None, Some(url)) => {
            let mut request = Request::get(url);
            for (k, v) in &source.headers {
                request = request.header(k, v);
            }
            let request = request
                .body(Full::new(Bytes::new()))
                .map_err(|e| endpoint(url, e))?;
            let response = http.send(request).await.map_err(|e| endpoint(url, e))?;
            if !response.status().is_success() {
                return Err(endpoint(url, format!("HTTP {}", response.status())));
            }
            response.into_body().to_vec()
        }
        (None, None) => {
            return Err(MintError::Key(
                "credential_source names neither a file nor a url".to_owned(),
            ));
        }
    };
    match &source.format {
        Some(SourceFormat {
            type_,
            subject_token_field_name,
        }) if type_ == "json" => {
            let field = subject_token_field_name.as_deref().unwrap_or_default();
            let value: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| MintError::Key(format!("the subject token is not JSON: {e}")))?;
            value[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| MintError::Key(format!("the subject token has no field {field:?}")))
        }
        _ => Ok(String::from_utf8_lossy(&raw).trim().to_owned()),
    }
}

/// The credentials of a token endpoint's answer, minted at `now`; `expires_in` is checked and
/// bounded (see [`bounded_expiry`]) before it is added to a time.
fn minted(
    url: &str,
    keys: &[String],
    answer: TokenAnswer,
    now: SystemTime,
) -> Result<Minted, MintError> {
    let expires_at = match &answer.expires_in {
        None => bounded_expiry(now, DEFAULT_TOKEN_LIFETIME),
        Some(number) => expires_in(number).and_then(|lifetime| bounded_expiry(now, lifetime)),
    }
    .map_err(|e| {
        let given = answer
            .expires_in
            .as_ref()
            .map_or_else(|| "(none)".to_owned(), ToString::to_string);
        endpoint(url, format!("expires_in {given}: {e}"))
    })?;
    Ok(Minted::for_keys(
        keys,
        USERNAME,
        &answer.access_token,
        expires_at,
    ))
}

/// `expires_in` (seconds, whole or not) as a lifetime.
fn expires_in(number: &serde_json::Number) -> Result<Duration, String> {
    if let Some(secs) = number.as_u64() {
        return Ok(Duration::from_secs(secs));
    }
    match number.as_f64() {
        Some(secs) if secs < 0.0 => Err("negative".to_owned()),
        Some(secs) => Duration::try_from_secs_f64(secs)
            .map_err(|_| "longer than any credential lives".to_owned()),
        None => Err("not a number of seconds".to_owned()),
    }
}

fn endpoint(url: &str, message: impl std::fmt::Display) -> MintError {
    MintError::Endpoint {
        endpoint: url.to_owned(),
        message: message.to_string(),
    }
}

async fn post_form<T: serde::de::DeserializeOwned>(
    http: &HttpClient,
    url: &str,
    form: String,
    bearer: Option<&str>,
) -> Result<T, MintError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| endpoint(url, e))?;
    json_answer(http, url, request).await
}

/// The JSON answer of a token endpoint; an error names the status and the endpoint's own
/// `error`/`error_description`, never what was sent.
async fn json_answer<T: serde::de::DeserializeOwned>(
    http: &HttpClient,
    url: &str,
    request: Request<Full<Bytes>>,
) -> Result<T, MintError> {
    let response = http.send(request).await.map_err(|e| endpoint(url, e))?;
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let detail: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let reason = [&detail["error"], &detail["error_description"]]
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(": ");
        return Err(endpoint(url, format!("HTTP {status} {reason}").trim_end()));
    }
    serde_json::from_slice(&body).map_err(|e| endpoint(url, format!("unexpected answer: {e}")))
}
