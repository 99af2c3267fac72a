//! Amazon ECR: `GetAuthorizationToken` with the AWS default credential chain (IRSA web
//! identity, EKS Pod Identity, the environment, a profile), 12-hour tokens, username `AWS`.
//!
//! The SDK brings its own HTTP client. It is built from the same crates as ours (hyper-util's
//! client, hyper-rustls, rustls with ring: one version of each in the binary), but
//! aws-smithy-http-client cannot wrap a connector of our making, and an adapter of our
//! [`HttpClient`] to the SDK's connector trait would mean depending on
//! aws-smithy-runtime-api directly. So it keeps its own client, with our time limits.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ecr::error::DisplayErrorContext;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine as _;
use serde::Deserialize;

use super::http::{CONNECT_TIMEOUT, HttpClient};
use super::{MintError, Minted, bounded_until};

/// The username of an ECR authorization token.
pub const USERNAME: &str = "AWS";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ecr {
    pub region: String,
    /// The registries (AWS account ids) the token is for; empty: the caller's own.
    #[serde(default)]
    pub registry_ids: Vec<String>,
    /// Another ECR API endpoint (a VPC endpoint, FIPS, or a local emulator in tests).
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl Ecr {
    pub fn validate(&self) -> Result<(), String> {
        if self.region.is_empty() {
            return Err("region is empty".to_owned());
        }
        if let Some(bad) = self
            .registry_ids
            .iter()
            .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "registryIds: {bad:?} is not a 12-digit AWS account id"
            ));
        }
        Ok(())
    }
}

/// The ECR API clients of one [`HttpClient`], one per region and endpoint: built at the first
/// mint and kept, so renewals reuse the SDK's connections and its credential chain's cache
/// (IRSA web identity, Pod Identity) instead of starting over each time.
#[derive(Debug, Default)]
pub struct Clients(tokio::sync::Mutex<HashMap<(String, Option<String>), aws_sdk_ecr::Client>>);

impl Clients {
    async fn get(&self, ecr: &Ecr, timeout: Duration) -> aws_sdk_ecr::Client {
        let key = (ecr.region.clone(), ecr.endpoint.clone());
        // Held while a client loads, so two mints of one source build it once.
        let mut clients = self.0.lock().await;
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        let client = aws_sdk_ecr::Client::new(&sdk_config(ecr, timeout).load().await);
        clients.insert(key, client.clone());
        client
    }

    #[cfg(test)]
    async fn len(&self) -> usize {
        self.0.lock().await.len()
    }
}

/// The SDK settings of `ecr`: rustls with ring, as the rest of the binary (no second TLS
/// stack), and every call bounded: [`CONNECT_TIMEOUT`] to connect, and `timeout` for a whole
/// operation, retries and the credential chain's own calls included.
fn sdk_config(ecr: &Ecr, timeout: Duration) -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .operation_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .region(Region::new(ecr.region.clone()));
    if let Some(endpoint) = &ecr.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader
}

/// Asks ECR for an authorization token, for `keys`, with `http`'s client for this source.
pub async fn mint(ecr: &Ecr, keys: &[String], http: &HttpClient) -> Result<Minted, MintError> {
    let endpoint_name = ecr
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("ecr.{}.amazonaws.com", ecr.region));
    let fail = |message: String| MintError::Endpoint {
        endpoint: endpoint_name.clone(),
        message,
    };
    let minted_at = SystemTime::now();
    let client = http.ecr_clients().get(ecr, http.timeout()).await;
    #[allow(deprecated)] // registryIds is deprecated by AWS, and still honoured.
    let request = ecr
        .registry_ids
        .iter()
        .fold(client.get_authorization_token(), |r, id| r.registry_ids(id));
    let answer = request
        .send()
        .await
        .map_err(|e| fail(format!("GetAuthorizationToken: {}", DisplayErrorContext(e))))?;
    let data = answer
        .authorization_data()
        .first()
        .ok_or_else(|| fail("GetAuthorizationToken returned no authorization data".to_owned()))?;
    let token = data
        .authorization_token()
        .ok_or_else(|| fail("the authorization data has no token".to_owned()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| fail("the token is not base64".to_owned()))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| fail("the token is not text".to_owned()))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| fail("the token is not user:password".to_owned()))?;
    let expires_at = data
        .expires_at()
        .ok_or_else(|| fail("the authorization data has no expiry".to_owned()))?;
    // A remote value: bounded before the refresher does time arithmetic with it.
    let expires_at = SystemTime::try_from(*expires_at)
        .map_err(|e| e.to_string())
        .and_then(|t| bounded_until(minted_at, t))
        .map_err(|e| fail(format!("expiresAt {expires_at}: {e}")))?;
    Ok(Minted::for_keys(keys, user, password, expires_at))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn source(endpoint: String) -> Ecr {
        Ecr {
            region: "us-east-1".to_owned(),
            registry_ids: vec![],
            endpoint: Some(endpoint),
        }
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_is_given_up_on_within_the_time_limit() {
        // Accepts connections and reads nothing, answers nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let ecr = source(format!("http://{addr}"));
        let sdk = sdk_config(&ecr, Duration::from_millis(500))
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                "AKIAIOSFODNN7EXAMPLE",
                "not-a-real-secret-key",
                None,
                None,
                "test",
            ))
            .load()
            .await;
        let client = aws_sdk_ecr::Client::new(&sdk);
        let started = Instant::now();
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_authorization_token().send(),
        )
        .await
        .expect("bounded by the SDK's own time limit")
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        let text = DisplayErrorContext(&error).to_string();
        assert!(
            text.contains("timeout") || text.contains("timed out"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn one_client_per_region_and_endpoint() {
        let clients = Clients::default();
        let a = source("http://127.0.0.1:9".to_owned());
        let b = source("http://127.0.0.1:10".to_owned());
        for ecr in [&a, &a, &b, &a] {
            clients.get(ecr, Duration::from_secs(1)).await;
        }
        assert_eq!(clients.len().await, 2);
    }
}
