//! Amazon ECR: `GetAuthorizationToken` with the AWS default credential chain (IRSA web
//! identity, EKS Pod Identity, the environment, a profile), 12-hour tokens, username `AWS`.

use std::time::SystemTime;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_sdk_ecr::error::DisplayErrorContext;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use base64::Engine as _;
use serde::Deserialize;

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

/// Asks ECR for an authorization token, for `keys`.
pub async fn mint(ecr: &Ecr, keys: &[String]) -> Result<Minted, MintError> {
    let endpoint_name = ecr
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("ecr.{}.amazonaws.com", ecr.region));
    let fail = |message: String| MintError::Endpoint {
        endpoint: endpoint_name.clone(),
        message,
    };
    let minted_at = SystemTime::now();
    // rustls with ring, as the rest of the binary: no second TLS stack.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(ecr.region.clone()));
    if let Some(endpoint) = &ecr.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    let client = aws_sdk_ecr::Client::new(&sdk);
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
