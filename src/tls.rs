//! Serving certificates: loading PEM files, hot reload, and a self-signed localhost pair for
//! running without a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use clap::Args;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Hosts the self-signed certificate is made for.
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain, leaf first. Reloaded when it changes.
    #[arg(long, env = "PSI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "PSI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the CA of the self-signed certificate made when no --tls-cert is given
    /// [default: <temp dir>/pullsecret-injector/ca.crt].
    #[arg(long, env = "PSI_SELF_SIGNED_CA")]
    pub self_signed_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate and key files, when given.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// The serving certificate: from the files, or a fresh self-signed one for local use,
    /// whose CA is written where `--self-signed-ca` says.
    pub fn load(&self) -> anyhow::Result<CertifiedKey> {
        if let Some((cert, key)) = self.files() {
            return Ok(load_files(cert, key)?);
        }
        let pair = self_signed(LOCAL_HOSTS)?;
        let ca_path = self.self_signed_ca.clone().unwrap_or_else(|| {
            std::env::temp_dir()
                .join("pullsecret-injector")
                .join("ca.crt")
        });
        if let Some(dir) = ca_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&ca_path, &pair.ca_pem)
            .with_context(|| format!("cannot write {}", ca_path.display()))?;
        tracing::info!(
            ca = %ca_path.display(),
            hosts = ?LOCAL_HOSTS,
            "no --tls-cert given: serving a self-signed certificate; trust its CA with e.g. curl --cacert {}",
            ca_path.display()
        );
        Ok(certified_key(
            pair.cert_pem.as_bytes(),
            pair.key_pem.as_bytes(),
            "self-signed certificate",
            "self-signed key",
        )?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    #[error("bad PEM certificate in {0}: {1}")]
    BadCertificate(String, String),
    #[error("no usable PEM private key in {0}: {1}")]
    BadKey(String, String),
    #[error("certificate and key do not go together: {0}")]
    Mismatch(String),
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The process-wide rustls crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a certified key from a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
/// or SEC1). `cert_name`/`key_name` only label error messages.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate(cert_name.to_owned(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_name.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::BadKey(key_name.to_owned(), e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// Reads a certificate chain and key from files.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    certified_key(
        &read(cert)?,
        &read(key)?,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

/// Hands out the current certificate to each new handshake; swapped on reload, so
/// connections already open keep theirs and new ones get the new one.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// rustls config for the webhook port: TLS 1.3 and 1.2, ALPN h2 and http/1.1.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A throwaway CA and a serving certificate signed by it, PEM-encoded.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Makes a CA and an ECDSA P-256 serving certificate for `hosts` (DNS names or IP addresses)
/// valid for a year.
pub fn self_signed(hosts: &[&str]) -> Result<SelfSigned, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let validity = |params: &mut CertificateParams| {
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(365);
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "pullsecret-injector local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf =
        CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("localhost"),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut leaf);
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
