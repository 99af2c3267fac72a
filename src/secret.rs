//! `create-secret`: the source pull Secret from registry credentials, as
//! `kubectl create secret docker-registry` makes it (and with several registries at once).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{ArgGroup, Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::names::DOCKER_CONFIG_JSON;
use crate::names::FIELD_MANAGER;
use crate::rules::validate_secret_name;

/// The username Artifact Registry and gcr.io take with a service-account JSON key.
pub const GCP_JSON_KEY_USER: &str = "_json_key";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credentials").required(true).args(["username", "gcp_json_key", "from_docker_config"])))]
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
    /// Take each --server's credentials from a docker config: FILE, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; its `auths` entries, and
    /// its `credHelpers` and `credsStore` through their `docker-credential-<name>` helper
    /// (what `docker login` writes on a laptop). Only the named servers go in the Secret.
    #[arg(
        long,
        env = "PSI_FROM_DOCKER_CONFIG",
        value_name = "FILE",
        num_args = 0..=1,
        conflicts_with = "password_source"
    )]
    pub from_docker_config: Option<Option<PathBuf>>,
    /// Time limit of each docker credential helper call (with --from-docker-config).
    #[arg(long, env = "PSI_HELPER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub helper_timeout: Duration,
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

/// The `.dockerconfigjson` content: each server with its credentials.
fn docker_config_json(entries: &[(String, Credentials)]) -> String {
    crate::credentials::docker_config_json(entries.iter().map(|(server, credentials)| {
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
    entries: &[(String, Credentials)],
    format: OutputFormat,
) -> serde_json::Result<String> {
    let data = base64::engine::general_purpose::STANDARD.encode(docker_config_json(entries));
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
    for server in &args.servers {
        if server.trim().is_empty() {
            bail!("--server must not be empty");
        }
    }
    let entries = match &args.from_docker_config {
        Some(file) => {
            let path = docker_config_path(file.as_deref())?;
            from_docker_config(&path, &args.servers, args.helper_timeout).await?
        }
        None => {
            let credentials = read_credentials(args)?;
            args.servers
                .iter()
                .map(|server| {
                    let credentials = Credentials {
                        username: credentials.username.clone(),
                        password: credentials.password.clone(),
                    };
                    (server.clone(), credentials)
                })
                .collect()
        }
    };
    if args.apply {
        return apply(args, &entries).await;
    }
    let text = manifest(&args.name, args.namespace.as_deref(), &entries, args.output)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn apply(
    args: &CreateSecretArgs,
    entries: &[(String, Credentials)],
) -> anyhow::Result<ExitCode> {
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
            docker_config_json(entries),
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

// ---- --from-docker-config -------------------------------------------------------------------

/// The username a credential helper answers with when its secret is an identity token (an
/// OAuth2 refresh token the docker client trades for access tokens), not a password.
const IDENTITY_TOKEN_USER: &str = "<token>";
/// What a helper prints (with a non-zero exit) when it holds nothing for the server.
const NOT_FOUND: &str = "credentials not found";
/// More than any credentials: a helper that floods is cut off.
const MAX_HELPER_OUTPUT: u64 = 64 * 1024;

/// The docker config `--from-docker-config` reads: `given`, else `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`, where the docker client looks.
fn docker_config_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("--from-docker-config: no FILE given and neither DOCKER_CONFIG nor HOME is set")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// The parts of a docker config that hold credentials. No Debug: it holds secrets.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A credential helper's answer to `get` (`ServerURL` too, which is not needed).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// The registry a docker config key or a `--server` names: no scheme, no path, and Docker
/// Hub's several names as one (`https://index.docker.io/v1/` is the key `docker login` writes).
fn registry_of(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::image::DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// Each server's credentials from the docker config at `path`: its credential helper
/// (`credHelpers`, else `credsStore`) first, then its `auths` entry, as the docker client
/// does. Every server must resolve; an error names the server, never a secret.
async fn from_docker_config(
    path: &Path,
    servers: &[String],
    timeout: Duration,
) -> anyhow::Result<Vec<(String, Credentials)>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // serde_json's errors give a position, never the text: no secret reaches the message.
    let config: DockerConfigFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a docker config", path.display()))?;
    let mut out = Vec::new();
    for server in servers {
        let credentials = resolve(&config, server, timeout)
            .await
            .with_context(|| format!("--server {server} (from {})", path.display()))?;
        out.push((server.clone(), credentials));
    }
    Ok(out)
}

async fn resolve(
    config: &DockerConfigFile,
    server: &str,
    timeout: Duration,
) -> anyhow::Result<Credentials> {
    let registry = registry_of(server);
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| registry_of(key) == registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| registry_of(key) == registry)
        .map(|(_, name)| name)
        .or(config.creds_store.as_ref())
        .filter(|name| !name.is_empty());
    let mut not_found = None;
    if let Some(name) = helper {
        // The helper is asked for the key `docker login` stored, as the docker client asks.
        let url = match entry {
            Some((key, _)) => key.clone(),
            None if registry == crate::image::DOCKER_HUB => "https://index.docker.io/v1/".into(),
            None => server.to_owned(),
        };
        match ask_helper(name, &url, timeout).await? {
            Some(credentials) => return Ok(credentials),
            None => not_found = Some(name),
        }
    }
    if let Some((_, entry)) = entry
        && let Some(credentials) = credentials_of(entry)?
    {
        return Ok(credentials);
    }
    match not_found {
        Some(name) => bail!(
            "docker-credential-{name} has no credentials for it ({NOT_FOUND}), nor has an auths entry"
        ),
        None => bail!("no auths entry or credential helper has credentials for it"),
    }
}

/// An `auths` entry's credentials, if it holds any.
fn credentials_of(entry: &AuthEntry) -> anyhow::Result<Option<Credentials>> {
    if entry
        .identitytoken
        .as_deref()
        .is_some_and(|t| !t.is_empty())
    {
        bail!(IDENTITY_TOKEN_ERROR);
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password)
        && !username.is_empty()
        && !password.is_empty()
    {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        bail!("its auths entry's `auth` is not base64 of USER:PASSWORD");
    };
    Ok(Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

const IDENTITY_TOKEN_ERROR: &str = "the credentials are an identity token (an OAuth2 refresh token), which the kubelet cannot use from a pull Secret: log in with a username and a password or access token";

/// `docker-credential-<name> get` with `url` on stdin: the credentials, `None` when the helper
/// has none for it, or an error (it failed, did not answer within `timeout`, answered
/// nonsense). Its answer never goes into a message.
async fn ask_helper(
    name: &str,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<Option<Credentials>> {
    // The name comes from a file: it picks a program on PATH, never a path.
    if name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("credential helper name {name:?} is not a name");
    }
    let program = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program} (is it on PATH?)"))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let exchange = async {
        if let Some(mut stdin) = stdin {
            // A helper that exits without reading is judged by its exit status.
            let _ = stdin.write_all(url.as_bytes()).await;
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout {
                let _ = s.take(MAX_HELPER_OUTPUT).read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr {
                let _ = s.take(MAX_HELPER_OUTPUT).read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        (child.wait().await, out, err)
    };
    let (status, out, err) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{program} gave no answer within {timeout:?}; killed"))?;
    let status = status.with_context(|| format!("cannot wait for {program}"))?;
    if !status.success() {
        // Helpers print their error on stdout: what is missing, not a secret.
        let said: String = String::from_utf8_lossy(if out.is_empty() { &err } else { &out })
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        if said.contains(NOT_FOUND) {
            return Ok(None);
        }
        bail!("{program} get failed ({status}): {said}");
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|_| {
        anyhow::anyhow!("{program} get did not answer JSON with Username and Secret")
    })?;
    if answer.username == IDENTITY_TOKEN_USER {
        bail!("{program}: {IDENTITY_TOKEN_ERROR}");
    }
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: answer.username,
        password: answer.secret,
    }))
}
