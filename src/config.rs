//! The registries config: parsing and validation. Reloading it is the job of the `watch` module.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::credentials::Source;
use crate::image::ImageRef;
use crate::rules::{Rule, RuleError, RuleWarning};

/// A validated config: the rules in file order.
#[derive(Clone, Debug, Default)]
pub struct Config {
    rules: Vec<Rule>,
    /// Distinct secret names, in order of first appearance.
    secrets: Vec<String>,
    /// Credential sources of the secrets that are minted rather than copied.
    sources: BTreeMap<String, Source>,
    /// Each rule's probe image, if it names one.
    probes: Vec<Option<String>>,
    /// ServiceAccounts that also get the secrets in every opted-in namespace.
    service_accounts: Vec<String>,
}

/// A config that cannot be used, with the place and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a valid config: {0}")]
    Syntax(String),
    #[error("secrets.{name}: {reason}")]
    Source { name: String, reason: String },
    #[error("serviceAccounts: {0}")]
    ServiceAccount(String),
    #[error("rule {index} (match {source_match:?}): {error}")]
    Rule {
        /// 1-based position in `registries`.
        index: usize,
        source_match: String,
        error: RuleError,
    },
}

/// A warning about one rule, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    pub index: usize,
    pub source_match: String,
    pub warning: RuleWarning,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {} (match {:?}): {}",
            self.index, self.source_match, self.warning
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    registries: Option<Vec<RuleSpec>>,
    #[serde(default)]
    secrets: Option<BTreeMap<String, Source>>,
    #[serde(rename = "serviceAccounts", default)]
    service_accounts: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(rename = "match")]
    match_: String,
    secret: String,
    /// An image the background credential check asks the manifest of.
    #[serde(rename = "probeImage", default)]
    probe_image: Option<String>,
}

impl Config {
    /// Parses a config from YAML (JSON is YAML too). Returns the warnings beside it.
    pub fn from_yaml(text: &str) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        // An empty file is an empty config, not a YAML error.
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile {
                registries: None,
                secrets: None,
                service_accounts: None,
            }
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(one_line(&e)))?
        };
        let specs = file.registries.unwrap_or_default();
        let mut rules = Vec::with_capacity(specs.len());
        let mut warnings = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut rule_warnings = Vec::new();
            let rule =
                Rule::new(&spec.match_, &spec.secret, &mut rule_warnings).map_err(|error| {
                    ConfigError::Rule {
                        index: i + 1,
                        source_match: spec.match_.clone(),
                        error,
                    }
                })?;
            if let Some(probe) = &spec.probe_image {
                let bad = |reason: String| ConfigError::Rule {
                    index: i + 1,
                    source_match: spec.match_.clone(),
                    error: crate::rules::RuleError::BadProbe(reason),
                };
                let image = ImageRef::parse(probe).map_err(|e| bad(format!("{probe:?}: {e}")))?;
                if !rule.matches(&image) {
                    return Err(bad(format!("{probe:?} is not an image this rule matches")));
                }
            }
            warnings.extend(rule_warnings.into_iter().map(|warning| ConfigWarning {
                index: i + 1,
                source_match: spec.match_.clone(),
                warning,
            }));
            rules.push(rule);
        }
        if rules.is_empty() {
            warnings.push(ConfigWarning {
                index: 0,
                source_match: String::new(),
                warning: RuleWarning("`registries` is empty: no Pod will be changed".to_owned()),
            });
        }
        let mut secrets: Vec<String> = Vec::new();
        for rule in &rules {
            if !secrets.iter().any(|s| s == rule.secret()) {
                secrets.push(rule.secret().to_owned());
            }
        }
        let sources = file.secrets.unwrap_or_default();
        for (name, source) in &sources {
            let bad = |reason: String| ConfigError::Source {
                name: name.clone(),
                reason,
            };
            crate::rules::validate_secret_name(name).map_err(|e| bad(e.to_string()))?;
            source.validate().map_err(bad)?;
            if !secrets.contains(name) {
                warnings.push(ConfigWarning {
                    index: 0,
                    source_match: String::new(),
                    warning: RuleWarning(format!(
                        "secrets.{name}: no rule names this secret, so it is never minted"
                    )),
                });
            }
        }
        let mut service_accounts: Vec<String> = Vec::new();
        for name in file.service_accounts.unwrap_or_default() {
            // A ServiceAccount's name is a DNS subdomain, as a Secret's is.
            crate::rules::validate_secret_name(&name).map_err(|_| {
                ConfigError::ServiceAccount(format!("{name:?} is not a valid ServiceAccount name"))
            })?;
            if service_accounts.contains(&name) {
                return Err(ConfigError::ServiceAccount(format!(
                    "{name:?} is listed twice"
                )));
            }
            service_accounts.push(name);
        }
        let probes = specs.into_iter().map(|s| s.probe_image).collect();
        Ok((
            Self {
                rules,
                secrets,
                sources,
                probes,
                service_accounts,
            },
            warnings,
        ))
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// The ServiceAccounts that get every configured secret in opted-in namespaces, besides
    /// the Pods (for what reads pull secrets from a ServiceAccount: Knative, Tekton, kpack).
    pub fn service_accounts(&self) -> &[String] {
        &self.service_accounts
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every secret the config can inject, each once, in config order.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The registry keys a minted secret's `auths` get: the matches of the rules that name it,
    /// in normalized form (`host[:port][/path]`), each once.
    pub fn registry_keys(&self, secret: &str) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.secret() == secret) {
            let key = rule.key();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// The probe image of the rule at `index`, if it names one.
    pub fn probe_image(&self, index: usize) -> Option<&str> {
        self.probes.get(index).and_then(|p| p.as_deref())
    }

    /// The credential source of `secret`, when it is minted rather than copied.
    pub fn source(&self, secret: &str) -> Option<&Source> {
        self.sources.get(secret)
    }

    /// The minted secrets that rules name, with their sources, in config order.
    pub fn minted(&self) -> impl Iterator<Item = (&str, &Source)> {
        self.secrets
            .iter()
            .filter_map(|name| Some((name.as_str(), self.sources.get(name)?)))
    }

    /// Marks in `hits` (one flag per rule) the rules that match `image`; returns whether any
    /// rule does.
    pub fn mark_matches(&self, image: &ImageRef<'_>, hits: &mut [bool]) -> bool {
        let mut any = false;
        for (rule, hit) in self.rules.iter().zip(hits.iter_mut()) {
            // A rule already hit by another image matters only to tell whether this one matched.
            if (*hit && any) || !rule.matches(image) {
                continue;
            }
            *hit = true;
            any = true;
        }
        any
    }

    /// The secrets of the rules flagged in `hits`, in config order, each once.
    pub fn secrets_of<'c>(&'c self, hits: &[bool]) -> Vec<&'c str> {
        let mut out: Vec<&str> = Vec::new();
        for (rule, _) in self.rules.iter().zip(hits).filter(|(_, hit)| **hit) {
            if !out.contains(&rule.secret()) {
                out.push(rule.secret());
            }
        }
        out
    }

    /// The secrets `images` need, in config order, each once.
    pub fn secrets_for<'c, 'i>(
        &'c self,
        images: impl IntoIterator<Item = &'i ImageRef<'i>>,
    ) -> Vec<&'c str> {
        let mut hits = vec![false; self.rules.len()];
        for image in images {
            let _ = self.mark_matches(image, &mut hits);
        }
        self.secrets_of(&hits)
    }
}

/// The text of `e` with every run of whitespace (newlines included) folded to one space.
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
