//! The outbound HTTP client: registries, token endpoints, the metadata server, and the ECR API
//! clients built on the same settings. HTTPS with rustls and ring (and plain HTTP for the
//! metadata server and local endpoints), a connect timeout and a time limit on every request,
//! and bodies read up to a bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer read from a token endpoint.
const MAX_BODY: usize = 1 << 20;
/// Longest wait for a TCP connection (and never longer than the request's own limit): a host
/// that drops SYNs is reported as unreachable, not as slow.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// The ECR API clients, one per region and endpoint, with this client's time limits.
    ecr: Arc<super::ecr::Clients>,
}

impl HttpClient {
    /// The system's roots; an error if it has none.
    pub fn new(timeout: Duration) -> std::io::Result<Self> {
        let roots = native_roots();
        if roots.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no CA certificates in the system's store",
            ));
        }
        Ok(Self::with_tls(timeout, tls_config(roots)?))
    }

    /// The system's roots and the CA certificates of `extra_ca` (PEM), for a registry behind a
    /// private CA.
    pub fn with_extra_ca(timeout: Duration, extra_ca: &[u8]) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = native_roots();
        let mut added = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(extra_ca) {
            let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a CA certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err("no certificate in the CA file".to_owned());
        }
        let tls = tls_config(roots).map_err(|e| e.to_string())?;
        Ok(Self::with_tls(timeout, tls))
    }

    /// The one place the connector is built: TLS from `tls`, HTTP/1.1, the connect timeout.
    fn with_tls(timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut tcp = HttpConnector::new();
        // The HTTPS connector wrapped around it speaks both schemes.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT.min(timeout)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
            ecr: Arc::default(),
        }
    }

    /// The limit on each request, connecting and reading the body included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn ecr_clients(&self) -> &super::ecr::Clients {
        &self.ecr
    }

    /// Sends `request`; the status and the body, or why there is none.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Bytes>, String> {
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {}", chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("cannot read the answer: {e}"))?
                .to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }
}

/// The system's CA certificates; the unreadable ones are skipped.
fn native_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system CA certificate could not be read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(
            ignored,
            "system CA certificates that do not parse were skipped"
        );
    }
    roots
}

/// rustls with ring, as the rest of the binary: no second TLS stack.
fn tls_config(roots: rustls::RootCertStore) -> std::io::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// An error with its causes, `a: b: c` (hyper's own message alone says only "Connect").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
