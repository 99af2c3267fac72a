//! Kubelet image credential provider plugins, run as the kubelet runs them: a
//! `credentialprovider.kubelet.k8s.io/v1` CredentialProviderRequest on stdin, a
//! CredentialProviderResponse on stdout. So the ECR, GCR, ACR and JFrog plugins people run on
//! nodes work here too. The response's `auth` map keys the credentials and its
//! `cacheDuration` says how long they hold.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MintError, Minted, Plugin, bounded_expiry};

pub const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";
/// How long credentials hold when the response names no `cacheDuration` (or zero).
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(3600);
/// Largest response read.
const MAX_OUTPUT: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    api_version: String,
    kind: String,
    cache_duration: Option<String>,
    #[serde(default)]
    auth: BTreeMap<String, AuthConfig>,
}

#[derive(Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// Asks the plugin for each registry key (a concrete image on it), and merges the answers.
pub async fn mint(
    plugin: &Plugin,
    keys: &[String],
    timeout: Duration,
) -> Result<Minted, MintError> {
    let fail = |message: String| MintError::Plugin {
        command: plugin.command.clone(),
        message,
    };
    let mut auths = BTreeMap::new();
    let mut expires_at: Option<SystemTime> = None;
    for key in keys {
        if key.contains(['*', '?', '[']) {
            return Err(fail(format!(
                "the rule {key:?} has a glob host: a credential provider is asked for a concrete image"
            )));
        }
        // A registry key is `host[:port][/path]`; the plugin is asked about an image under it.
        let image = format!("{key}/image");
        let started = SystemTime::now();
        let response = run(plugin, &image, timeout).await.map_err(&fail)?;
        let lifetime = response
            .cache_duration
            .as_deref()
            .map(parse_go_duration)
            .transpose()
            .map_err(|e| fail(format!("cacheDuration: {e}")))?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_CACHE_DURATION);
        // A remote value: bounded before it is added to a time.
        let until = bounded_expiry(started, lifetime).map_err(|e| {
            let given = response.cache_duration.as_deref().unwrap_or_default();
            fail(format!("cacheDuration {given:?}: {e}"))
        })?;
        if response.auth.is_empty() {
            return Err(fail(format!("no credentials for {image}")));
        }
        for (registry, auth) in response.auth {
            auths.insert(registry, (auth.username, auth.password));
        }
        expires_at = Some(expires_at.map_or(until, |e| e.min(until)));
    }
    Ok(Minted {
        auths,
        expires_at: expires_at.unwrap_or_else(|| SystemTime::now() + DEFAULT_CACHE_DURATION),
    })
}

async fn run(plugin: &Plugin, image: &str, timeout: Duration) -> Result<Response, String> {
    let request = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "CredentialProviderRequest",
        "image": image,
    })
    .to_string();
    let mut child = tokio::process::Command::new(&plugin.command)
        .args(&plugin.args)
        .envs(&plugin.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let exchange = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading stdin is judged by its exit status.
            let _ = stdin.write_all(request.as_bytes()).await;
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_OUTPUT)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("cannot read its output: {e}"))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("cannot wait for it: {e}"))?;
        Ok::<_, String>((status, out))
    };
    let (status, out) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}; killed"))??;
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    let response: Response = serde_json::from_slice(&out)
        .map_err(|e| format!("not a CredentialProviderResponse: {e}"))?;
    if response.kind != "CredentialProviderResponse" || response.api_version != API_VERSION {
        return Err(format!(
            "answered {} {}, expected {API_VERSION} CredentialProviderResponse",
            response.api_version, response.kind
        ));
    }
    Ok(response)
}

/// A Go `time.Duration` string as the kubelet's types print it (`6h0m0s`, `90s`, `1.5h`).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty".to_owned());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has a number without a unit"))?;
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration"))?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("{text:?} has an unknown unit {unit:?}")),
        };
        total += value * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
}
