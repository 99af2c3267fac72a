//! `create-secret`: the source pull Secret from registry credentials, as
//! `kubectl create secret docker-registry` makes it (and with several registries at once).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{ArgGroup, Args, ValueEnum};
use serde::Serialize;

use crate::names::DOCKER_CONFIG_JSON;
use crate::names::FIELD_MANAGER;
use crate::rules::validate_secret_name;

/// The username Artifact Registry and gcr.io take with a service-account JSON key.
pub const GCP_JSON_KEY_USER: &str = "_json_key";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credentials").required(true).args(["username", "gcp_json_key"])))]
#[command(group(ArgGroup::new("password_source").args(["password_stdin", "password_file"])))]
pub struct CreateSecretArgs {
    /// Name of the Secret (the `secret` of a config rule).
    #[arg(long, env = "PSI_NAME")]
    pub name: String,
    /// Namespace of the Secret; with --apply, defaults to the kubeconfig's namespace.
    #[arg(long, env = "PSI_NAMESPACE")]
    pub namespace: Option<String>,
    /// Registry the credentials are for, as it appears in image names (`ghcr.io`,
    /// `asia-northeast1-docker.pkg.dev`); repeat, or separate with commas, for several
    /// registries in one Secret.
    #[arg(
        long = "server",
        env = "PSI_SERVER",
        required = true,
        value_name = "HOST",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
    /// Registry username (needs --password-stdin or --password-file).
    #[arg(long, env = "PSI_USERNAME", requires = "password_source")]
    pub username: Option<String>,
    /// Read the password from standard input (a trailing newline is dropped).
    #[arg(long, env = "PSI_PASSWORD_STDIN")]
    pub password_stdin: bool,
    /// Read the password from a file (a trailing newline is dropped).
    #[arg(long, env = "PSI_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// A Google service-account JSON key: username `_json_key`, the key as password.
    #[arg(
        long,
        env = "PSI_GCP_JSON_KEY",
        value_name = "FILE",
        conflicts_with = "password_source"
    )]
    pub gcp_json_key: Option<PathBuf>,
    /// Output format of the manifest.
    #[arg(long, short = 'o', env = "PSI_OUTPUT", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Apply the Secret to the cluster (server-side apply) instead of printing it.
    #[arg(long, env = "PSI_APPLY")]
    pub apply: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// Credentials for every server of one Secret. Debug never shows the password.
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `.dockerconfigjson` content: the same credentials for every server.
fn docker_config_json(servers: &[String], credentials: &Credentials) -> String {
    crate::credentials::docker_config_json(servers.iter().map(|server| {
        (
            server.as_str(),
            credentials.username.as_str(),
            credentials.password.as_str(),
        )
    }))
}

/// The Secret manifest as kubectl prints it: fields in kubectl's order for the format.
pub fn manifest(
    name: &str,
    namespace: Option<&str>,
    servers: &[String],
    credentials: &Credentials,
    format: OutputFormat,
) -> serde_json::Result<String> {
    let data =
        base64::engine::general_purpose::STANDARD.encode(docker_config_json(servers, credentials));
    match format {
        OutputFormat::Yaml => {
            let mut out = String::new();
            out.push_str("apiVersion: v1\ndata:\n");
            out.push_str(&format!("  .dockerconfigjson: {data}\n"));
            out.push_str("kind: Secret\nmetadata:\n");
            out.push_str(&format!("  name: {}\n", name));
            if let Some(ns) = namespace {
                out.push_str(&format!("  namespace: {}\n", ns));
            }
            out.push_str(&format!("type: {DOCKER_CONFIG_JSON}\n"));
            Ok(out)
        }
        OutputFormat::Json => {
            let mut metadata = serde_json::Map::new();
            metadata.insert("name".into(), name.into());
            if let Some(ns) = namespace {
                metadata.insert("namespace".into(), ns.into());
            }
            // kubectl's JSON printer: 4-space indent, apiVersion-first field order.
            let secret = JsonSecret {
                kind: "Secret",
                api_version: "v1",
                metadata,
                data: BTreeMap::from([(".dockerconfigjson", data)]),
                type_: DOCKER_CONFIG_JSON,
            };
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            secret.serialize(&mut ser)?;
            let mut out = String::from_utf8(buf).map_err(serde::ser::Error::custom)?;
            out.push('\n');
            Ok(out)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonSecret<'a> {
    kind: &'a str,
    api_version: &'a str,
    metadata: serde_json::Map<String, serde_json::Value>,
    data: BTreeMap<&'a str, String>,
    #[serde(rename = "type")]
    type_: &'a str,
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

fn read_credentials(args: &CreateSecretArgs) -> anyhow::Result<Credentials> {
    if let Some(path) = &args.gcp_json_key {
        let key = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let parsed: serde_json::Value = serde_json::from_str(&key)
            .with_context(|| format!("{} is not a JSON key file", path.display()))?;
        if parsed.get("private_key").is_none() || parsed.get("client_email").is_none() {
            bail!(
                "{} is not a service-account key (no private_key or client_email)",
                path.display()
            );
        }
        return Ok(Credentials {
            username: GCP_JSON_KEY_USER.to_owned(),
            password: trim_newline(key),
        });
    }
    let username = args.username.clone().unwrap_or_default();
    let password = if let Some(path) = &args.password_file {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    } else if args.password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("cannot read the password from standard input")?;
        password
    } else {
        bail!("--username needs --password-stdin or --password-file");
    };
    let password = trim_newline(password);
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(Credentials { username, password })
}

pub async fn run(args: &CreateSecretArgs) -> anyhow::Result<ExitCode> {
    // Checked names print as plain YAML scalars, with no quoting to get wrong.
    validate_secret_name(&args.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    if let Some(ns) = &args.namespace
        && !is_dns_label(ns)
    {
        bail!("--namespace {ns:?} is not a valid namespace name");
    }
    let credentials = read_credentials(args)?;
    for server in &args.servers {
        if server.trim().is_empty() {
            bail!("--server must not be empty");
        }
    }
    if args.apply {
        return apply(args, &credentials).await;
    }
    let text = manifest(
        &args.name,
        args.namespace.as_deref(),
        &args.servers,
        &credentials,
        args.output,
    )?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn apply(args: &CreateSecretArgs, credentials: &Credentials) -> anyhow::Result<ExitCode> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, ObjectMeta, Patch, PatchParams};

    let client = kube::Client::try_default()
        .await
        .context("no cluster to apply to")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(args.name.clone()),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        type_: Some(DOCKER_CONFIG_JSON.to_owned()),
        string_data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            docker_config_json(&args.servers, credentials),
        )])),
        ..Secret::default()
    };
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    api.patch(
        &args.name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("cannot apply Secret {namespace}/{}", args.name))?;
    eprintln!("secret/{} applied in namespace {namespace}", args.name);
    Ok(ExitCode::SUCCESS)
}
