//! Which `auths` entry of a pull secret the kubelet uses for an image: its docker-config
//! keyring (`pkg/credentialprovider/keyring.go`) applied to the secret's keys. Keys are read
//! as URLs (`https://` added when missing), `/v1/` and `/v2/` prefixes dropped, and tried
//! longest first (reverse order); every matching key's credentials are tried in that order,
//! and Docker Hub images fall back to the legacy `index.docker.io` key.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::image::ImageRef;
use crate::rules::Rule;

/// The key the kubelet keeps for Docker Hub's legacy entries (`https://index.docker.io/v1/`).
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// One credential of a pull secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The `auths` key as written in the secret.
    pub key: String,
    /// The key as the kubelet normalizes it: `host[/path]`.
    pub normalized: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    // The password never shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A pull secret's credentials, in the kubelet's lookup order.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: Vec<Credential>,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
}

impl Keyring {
    /// Reads a `.dockerconfigjson` (`{"auths": {...}}`) or a legacy `.dockercfg` (the map
    /// itself).
    pub fn from_docker_config(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let auths = if value.get("auths").is_some() {
            serde_json::from_value::<DockerConfigJson>(value)
                .map_err(|e| format!("not a docker config: {e}"))?
                .auths
        } else {
            serde_json::from_value(value).map_err(|e| format!("not a docker config: {e}"))?
        };
        let mut entries = Vec::new();
        for (key, entry) in auths {
            let (username, password) = match (entry.username, entry.password, entry.auth) {
                (Some(u), Some(p), _) if !u.is_empty() || !p.is_empty() => (u, p),
                (_, _, Some(auth)) => decode_auth(&auth)
                    .ok_or_else(|| format!("auths[{key:?}].auth is not base64 user:password"))?,
                _ => (String::new(), String::new()),
            };
            entries.push(Credential {
                normalized: normalize_key(&key),
                key,
                username,
                password,
            });
        }
        // The kubelet sorts its index in reverse: more specific keys first.
        entries.sort_by(|a, b| b.normalized.cmp(&a.normalized));
        Ok(Self { entries })
    }

    /// Every credential the kubelet would try for `image`, in its order.
    pub fn lookup(&self, image: &ImageRef<'_>) -> Vec<&Credential> {
        let found: Vec<&Credential> = self
            .entries
            .iter()
            .filter(|c| key_matches(&c.normalized, image))
            .collect();
        if !found.is_empty() {
            return found;
        }
        if image.domain() == crate::image::DOCKER_HUB {
            return self
                .entries
                .iter()
                .filter(|c| c.normalized == DEFAULT_REGISTRY_KEY)
                .collect();
        }
        Vec::new()
    }

    /// Whether the kubelet would find credentials here for the images `rule` matches: probed
    /// with an image under the rule's match. `None` for a rule with a glob host, which names
    /// no image to probe with.
    pub fn covers(&self, rule: &Rule) -> Option<bool> {
        if rule.host_labels().any(|(_, literal)| !literal) {
            return None;
        }
        let probe = format!("{}/image", rule.key());
        let image = ImageRef::parse(&probe).ok()?;
        Some(!self.lookup(&image).is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|c| c.key.as_str())
    }
}

fn decode_auth(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `https://host[:port]/v1/path/` → `host[:port]/path`, as the kubelet keys its index.
pub fn normalize_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, String::new()),
    };
    let path = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v1/"))
        .map_or(path.clone(), |p| format!("/{p}"));
    if path.is_empty() || path == "/" {
        host.to_owned()
    } else {
        format!("{host}{}", path.trim_end_matches('/'))
    }
}

/// Whether the keyring key `key` (normalized) applies to `image`: the kubelet's
/// `URLsMatchStr` (globs per host label, equal ports, which the rules implement) with its raw
/// string prefix on the path. `index.docker.io` applies only through the Docker Hub fallback.
fn key_matches(key: &str, image: &ImageRef<'_>) -> bool {
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    if host == DEFAULT_REGISTRY_KEY {
        return false;
    }
    let Ok(rule) = Rule::new(host, "keyring", &mut Vec::new()) else {
        return false;
    };
    rule.matches(image) && image.path().starts_with(path)
}
