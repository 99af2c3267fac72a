//! `check-pull IMAGE`: will the kubelet's pull of this image work? Which rule matches and which
//! secret it injects (the webhook's own matcher), which `auths` entry the kubelet would use
//! (its keyring), then the registry's v2 flow with those credentials, and a verdict with an
//! exit status of its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;

use crate::config::Config;
use crate::credentials::http::HttpClient;
use crate::image::ImageRef;
use crate::keyring::Keyring;
use crate::registry::{self, Endpoint, Verdict};

/// Exit statuses, for `--help`.
pub const EXIT_CODES: &str = "Exit status: 0 would pull; 10 bad credentials; 11 no pull right on this repository; 12 tag or digest not found; 13 no auth entry the kubelet would use; 14 registry unreachable; 15 TLS error (see --registry-ca); 16 no rule matches the image; 1 the check itself failed (config, secret, arguments).";

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct CheckPullArgs {
    /// The image, as a Pod names it (`nginx:1.27`, `ghcr.io/acme/api@sha256:...`).
    pub image: String,
    /// Registries config (YAML).
    #[arg(long, env = "PSI_CONFIG")]
    pub config: PathBuf,
    /// The pull secret: a Secret manifest (YAML or JSON) or a `.dockerconfigjson` file.
    #[arg(
        long,
        env = "PSI_SECRET_FILE",
        conflicts_with = "namespace",
        required_unless_present = "namespace"
    )]
    pub secret_file: Option<PathBuf>,
    /// Read the injected secrets from this namespace of the cluster (the kubeconfig's).
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
    /// CA certificates (PEM) the registry's certificate is signed by.
    #[arg(long, env = "PSI_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,
    /// Speak plain HTTP to this registry (`host:port`); loopback hosts always do. Repeatable,
    /// or comma-separated.
    #[arg(long, env = "PSI_PLAIN_HTTP", value_delimiter = ',')]
    pub plain_http: Vec<String>,
    /// Time limit of each request.
    #[arg(long, env = "PSI_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: &CheckPullArgs) -> anyhow::Result<ExitCode> {
    let (config, _) = Config::load(&args.config)?;
    let image = ImageRef::parse(&args.image)
        .with_context(|| format!("{:?} is not an image reference", args.image))?;
    println!("image: {image}");
    let matching: Vec<String> = config
        .rules()
        .iter()
        .filter(|r| r.matches(&image))
        .map(ToString::to_string)
        .collect();
    let secrets = config.secrets_for([&image]);
    if secrets.is_empty() {
        println!("rule: none of the {} rule(s) matches", config.rules().len());
        return Ok(finish(Verdict::NoRule));
    }
    for rule in &matching {
        println!("rule: {rule}");
    }
    println!("secrets injected: {}", secrets.join(", "));

    let keyrings = load_keyrings(args, &secrets).await?;
    let http = match &args.registry_ca {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            HttpClient::with_extra_ca(args.timeout, &pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => HttpClient::new(args.timeout).context("cannot load the system's TLS roots")?,
    };
    let mut endpoint = Endpoint {
        http: &http,
        plain_http: args.plain_http.iter().any(|h| h == image.domain()),
    };
    // Like docker and containerd, a loopback registry that does not speak TLS is spoken
    // to over plain HTTP.
    if !endpoint.plain_http && registry::is_loopback(&image) {
        endpoint.plain_http = !registry::speaks_tls(&http, &image).await;
    }
    // The kubelet tries every matching entry of every secret, in order.
    let credentials: Vec<_> = keyrings
        .iter()
        .flat_map(|(secret, ring)| ring.lookup(&image).into_iter().map(move |c| (secret, c)))
        .collect();
    if credentials.is_empty() {
        let keys: Vec<&str> = keyrings.iter().flat_map(|(_, r)| r.keys()).collect();
        println!(
            "auth entry: none of the secrets' keys ({}) applies to {}",
            if keys.is_empty() {
                "none".to_owned()
            } else {
                keys.join(", ")
            },
            image.domain()
        );
        let anonymous = registry::check(endpoint, &image, None).await;
        print_steps(&anonymous.steps);
        let verdict = match anonymous.verdict {
            Verdict::WouldPull => {
                println!("the registry lets anyone pull this image");
                Verdict::WouldPull
            }
            Verdict::Unreachable | Verdict::TlsError | Verdict::NotFound => anonymous.verdict,
            _ => Verdict::NoAuthEntry,
        };
        return Ok(finish(verdict));
    }
    let mut first = None;
    for (secret, credential) in credentials {
        println!(
            "auth entry: {:?} of secret {secret} (user {})",
            credential.key, credential.username
        );
        let check = registry::check(endpoint, &image, Some(credential)).await;
        print_steps(&check.steps);
        if check.verdict == Verdict::WouldPull {
            return Ok(finish(Verdict::WouldPull));
        }
        println!("  -> {}", check.verdict);
        first.get_or_insert(check.verdict);
    }
    Ok(finish(first.unwrap_or(Verdict::NoAuthEntry)))
}

fn print_steps(steps: &[String]) {
    for step in steps {
        println!("  {step}");
    }
}

fn finish(verdict: Verdict) -> ExitCode {
    println!("verdict: {verdict}");
    ExitCode::from(verdict.exit_code())
}

/// Each injected secret's keyring: from `--secret-file` (for the first secret), or read from
/// the cluster.
async fn load_keyrings(
    args: &CheckPullArgs,
    secrets: &[&str],
) -> anyhow::Result<Vec<(String, Keyring)>> {
    if let Some(path) = &args.secret_file {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let ring = keyring_of_file(&text).with_context(|| path.display().to_string())?;
        if secrets.len() > 1 {
            println!(
                "note: {} secrets are injected; --secret-file stands for the first, {}",
                secrets.len(),
                secrets[0]
            );
        }
        return Ok(vec![(secrets[0].to_owned(), ring)]);
    }
    keyrings_from_cluster(args.namespace.as_deref(), secrets).await
}

/// The keyrings of `secrets` as they are in `namespace` (the kubeconfig's by default); a
/// secret that is not there is said so and left out.
pub async fn keyrings_from_cluster(
    namespace: Option<&str>,
    secrets: &[&str],
) -> anyhow::Result<Vec<(String, Keyring)>> {
    let client = kube::Client::try_default()
        .await
        .context("no cluster to read the secrets from (or give --secret-file)")?;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = match namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::default_namespaced(client),
    };
    let mut out = Vec::new();
    for secret in secrets {
        match api.get_opt(secret).await? {
            Some(s) => {
                let data = s.data.unwrap_or_default();
                let bytes = data
                    .get(".dockerconfigjson")
                    .or_else(|| data.get(".dockercfg"))
                    .map(|b| b.0.clone())
                    .unwrap_or_default();
                let ring = Keyring::from_docker_config(&bytes)
                    .map_err(|e| anyhow::anyhow!("Secret {secret}: {e}"))?;
                out.push(((*secret).to_owned(), ring));
            }
            None => println!("secret {secret}: not in the namespace (the sync has not copied it)"),
        }
    }
    Ok(out)
}

/// A Secret manifest (YAML or JSON, `data` or `stringData`) or a docker config file.
pub fn keyring_of_file(text: &[u8]) -> anyhow::Result<Keyring> {
    let value: serde_json::Value = serde_yaml_ng::from_slice(text).context("not YAML or JSON")?;
    if value.get("kind").and_then(|k| k.as_str()) != Some("Secret") {
        return Keyring::from_docker_config(text).map_err(|e| anyhow::anyhow!(e));
    }
    for key in [".dockerconfigjson", ".dockercfg"] {
        if let Some(plain) = value.pointer(&format!("/stringData/{}", key.replace('/', "~1"))) {
            let plain = plain.as_str().unwrap_or_default();
            return Keyring::from_docker_config(plain.as_bytes()).map_err(|e| anyhow::anyhow!(e));
        }
        if let Some(encoded) = value.get("data").and_then(|d| d.get(key)) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_str().unwrap_or_default())
                .context("data is not base64")?;
            return Keyring::from_docker_config(&bytes).map_err(|e| anyhow::anyhow!(e));
        }
    }
    bail!("the Secret has no .dockerconfigjson or .dockercfg")
}
