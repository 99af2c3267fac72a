//! Registry rules and how an image is matched against them.
//!
//! Hosts are matched as the kubelet's docker-config keyring does
//! (`pkg/credentialprovider/keyring.go`, `URLsMatch`): same number of labels, each label a
//! `path.Match` glob, ports equal. That way the Secret we inject is the one the kubelet will
//! then pick for the image. Paths differ on purpose: a prefix matches whole segments only.

use std::fmt;

use crate::image::{self, DOCKER_HUB, ImageRef};

/// One `{match, secret}` entry of the config, validated and compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    secret: String,
    /// Host labels, IPv6 brackets removed (as Go's `net.SplitHostPort` does).
    labels: Vec<Glob>,
    port: Option<String>,
    /// Repository path prefix without slashes at either end; empty for a whole registry.
    path: String,
}

/// Why a rule cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`match` is empty")]
    EmptyMatch,
    #[error("`secret` is empty")]
    EmptySecret,
    #[error(
        "`secret` {0:?} is not a valid Secret name (lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter or digit)"
    )]
    InvalidSecretName(String),
    #[error("host label {label:?} is not a valid pattern: {reason}")]
    BadPattern { label: String, reason: &'static str },
    #[error("host {0:?} has an empty label")]
    EmptyLabel(String),
    #[error("port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error(
        "path {0:?} is not a repository path (lowercase letters, digits, '.', '_', '-', separated by '/')"
    )]
    BadPath(String),
    #[error("scheme {0:?} is not supported: registries are matched by host and path")]
    BadScheme(String),
    #[error("probeImage {0}")]
    BadProbe(String),
}

/// Something legal that probably does not do what the author meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleWarning(pub String);

impl fmt::Display for RuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rule {
    /// Validates and compiles one rule. Spellings the kubelet accepts in a docker config key
    /// (`https://` scheme, trailing `/`, `/v1/` or `/v2/` suffix, `index.docker.io`) are
    /// normalized the way the kubelet normalizes them, with a warning so the config can be
    /// cleaned up.
    pub fn new(
        source: &str,
        secret: &str,
        warnings: &mut Vec<RuleWarning>,
    ) -> Result<Self, RuleError> {
        let mut warn = |msg: String| warnings.push(RuleWarning(msg));
        validate_secret_name(secret)?;
        let mut rest = source.trim();
        if rest.is_empty() {
            return Err(RuleError::EmptyMatch);
        }
        if let Some((scheme, after)) = rest.split_once("://") {
            if scheme != "https" && scheme != "http" {
                return Err(RuleError::BadScheme(scheme.to_owned()));
            }
            warn(format!(
                "the {scheme}:// scheme is ignored: images name no scheme; write {after:?}"
            ));
            rest = after;
        }
        let (host_port, mut path) = rest.split_once('/').unwrap_or((rest, ""));
        if path.ends_with('/') {
            warn("trailing '/' is ignored".to_owned());
            path = path.trim_end_matches('/');
        }
        // The kubelet treats `host/v1/` and `host/v2/` as the bare host.
        for api in ["v1", "v2"] {
            if path == api || path.starts_with(&format!("{api}/")) {
                warn(format!(
                    "the /{api}/ API prefix is ignored, as the kubelet ignores it"
                ));
                path = path[api.len()..].trim_start_matches('/');
            }
        }
        if !path.is_empty() && !is_repository_path(path) {
            return Err(RuleError::BadPath(path.to_owned()));
        }

        let (host, port) = image::split_port(host_port);
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0 && !port.starts_with('0'))
        {
            return Err(RuleError::BadPort(port.to_owned()));
        }
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = match host {
            "index.docker.io" => {
                warn(format!(
                    "index.docker.io is Docker Hub; images are normalized to {DOCKER_HUB}, so this rule matches {DOCKER_HUB}"
                ));
                DOCKER_HUB
            }
            "registry-1.docker.io" => {
                warn(format!(
                    "registry-1.docker.io is Docker Hub's API endpoint: no image reference normalizes to it, so this rule matches only images written with that host; use {DOCKER_HUB} for Docker Hub"
                ));
                host
            }
            _ => host,
        };
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            warn(format!(
                "host {host:?} has uppercase letters: the kubelet compares hosts case-sensitively, so it matches only images written the same way"
            ));
        }
        let labels = host
            .split('.')
            .map(|label| {
                if label.is_empty() {
                    Err(RuleError::EmptyLabel(host.to_owned()))
                } else {
                    Glob::new(label)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if port.is_none() && labels.len() == 1 && labels[0].is_literal() && host != "localhost" {
            warn(format!(
                "host {host:?} has no '.' or port: images name it as a registry only if it is `localhost`, so `{host}/x` would mean Docker Hub's {host}/x"
            ));
        }

        Ok(Self {
            secret: secret.to_owned(),
            labels,
            port: port.map(str::to_owned),
            path: path.to_owned(),
        })
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The host's labels in normalized form, each with whether it is a plain string (no glob).
    pub fn host_labels(&self) -> impl Iterator<Item = (&str, bool)> {
        self.labels.iter().map(|l| (l.source.as_str(), l.literal))
    }

    /// The port the rule requires, if any.
    pub fn port(&self) -> Option<&str> {
        self.port.as_deref()
    }

    /// The repository path prefix, without slashes at either end; empty for a whole registry.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether this rule applies to `image`.
    pub fn matches(&self, image: &ImageRef<'_>) -> bool {
        if self.port.as_deref() != image.port() {
            return false;
        }
        let host = image.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        // Bytes, not `split('.')`: the char searcher costs more than these short scans.
        let mut labels = host.as_bytes().split(|&b| b == b'.');
        for glob in &self.labels {
            match labels.next() {
                Some(label) if glob.matches(label) => {}
                _ => return false,
            }
        }
        if labels.next().is_some() {
            return false;
        }
        let path = image.path();
        self.path.is_empty()
            || (path.starts_with(&self.path)
                && matches!(path.as_bytes().get(self.path.len()), None | Some(b'/')))
    }
}

impl Rule {
    /// The match in normalized form, `host[:port][/path]`: also the docker config key a minted
    /// secret gets for this rule.
    pub fn key(&self) -> String {
        let host = self
            .labels
            .iter()
            .map(|l| l.source.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let mut out = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        if let Some(port) = &self.port {
            out.push(':');
            out.push_str(port);
        }
        if !self.path.is_empty() {
            out.push('/');
            out.push_str(&self.path);
        }
        out
    }
}

/// What a host label of a valid image reference is made of: a DNS label's characters, and an
/// IPv6 literal's (the inside of its brackets, one label to the kubelet).
/// Each with the class that stands for any of them.
const DNS_LABEL: (&str, &str) = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-",
    r"[A-Za-z0-9\-]",
);
const IPV6: (&str, &str) = ("0123456789ABCDEFabcdef:", "[0-9A-Fa-f:]");

impl Rule {
    /// An RE2 pattern matching exactly the registry hosts [`Rule::matches`] accepts, as an
    /// image reference writes them (an IPv6 host in brackets); `None` when no valid image
    /// host can match. Each glob is rewritten over the characters a label can hold, so a `*`
    /// or a class never reaches across a `.`, a port or a path.
    pub fn host_regex(&self) -> Option<String> {
        let dns: Option<Vec<String>> = self.labels.iter().map(|l| l.to_regex(DNS_LABEL)).collect();
        let dns = dns.map(|labels| labels.join(r"\."));
        // An IPv6 host has no '.': it is one label.
        let v6 = match self.labels.as_slice() {
            [label] => label.to_regex(IPV6).map(|l| format!(r"\[{l}\]")),
            _ => None,
        };
        match (dns, v6) {
            (Some(dns), Some(v6)) => Some(format!("(?:{dns}|{v6})")),
            (dns, v6) => dns.or(v6),
        }
    }
}

impl fmt::Display for Rule {
    /// The rule in its normalized form: `host[:port][/path] -> secret`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.key(), self.secret)
    }
}

/// Secret names are DNS subdomains (RFC 1123).
pub fn validate_secret_name(name: &str) -> Result<(), RuleError> {
    if name.is_empty() {
        return Err(RuleError::EmptySecret);
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(RuleError::InvalidSecretName(name.to_owned()));
    }
    Ok(())
}

fn is_repository_path(path: &str) -> bool {
    // Reuse the image grammar: a path is valid if `registry.invalid/<path>` parses as exactly it.
    let probe = format!("registry.invalid/{path}");
    ImageRef::parse(&probe).is_ok_and(|r| r.path() == path && r.tag().is_none())
}

/// One host label compiled from Go's `path.Match` syntax: `*`, `?`, `[abc]`, `[a-z]`, `[^a]`,
/// and `\` to escape.
#[derive(Clone, Debug)]
struct Glob {
    source: String,
    tokens: Vec<Token>,
    /// No glob characters and no escapes: plain string equality.
    literal: bool,
}

#[derive(Clone, Debug)]
enum Token {
    Char(char),
    Any,
    Star,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    fn new(pattern: &str) -> Result<Self, RuleError> {
        let bad = |reason| RuleError::BadPattern {
            label: pattern.to_owned(),
            reason,
        };
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '\\' => Token::Char(chars.next().ok_or_else(|| bad("ends with '\\'"))?),
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let mut ranges = Vec::new();
                    loop {
                        match chars.peek() {
                            None => return Err(bad("'[' is not closed")),
                            Some(']') if !ranges.is_empty() => {
                                chars.next();
                                break;
                            }
                            _ => {}
                        }
                        let lo =
                            class_char(&mut chars).ok_or_else(|| bad("bad character class"))?;
                        let hi = if chars.next_if_eq(&'-').is_some() {
                            class_char(&mut chars)
                                .ok_or_else(|| bad("bad range in character class"))?
                        } else {
                            lo
                        };
                        if lo > hi {
                            return Err(bad("range in character class is reversed"));
                        }
                        ranges.push((lo, hi));
                    }
                    Token::Class { negated, ranges }
                }
                c if c.is_ascii_alphanumeric() || c == '-' || c == ':' => Token::Char(c),
                _ => {
                    return Err(bad(
                        "hosts have only letters, digits, '-' and glob characters",
                    ));
                }
            };
            tokens.push(token);
        }
        let literal = tokens.iter().all(|t| matches!(t, Token::Char(_))) && !pattern.contains('\\');
        Ok(Self {
            source: pattern.to_owned(),
            tokens,
            literal,
        })
    }

    /// The label as an RE2 pattern over `chars` (the characters the label may hold, listed
    /// in full, and the class of them all); `None` when it needs a character outside them.
    fn to_regex(&self, (chars, all): (&str, &str)) -> Option<String> {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Char(c) if chars.contains(*c) => out.push(*c),
                Token::Char(_) => return None,
                Token::Any => out.push_str(all),
                Token::Star => {
                    out.push_str(all);
                    out.push('*');
                }
                Token::Class { negated, ranges } => {
                    let members = chars.chars().filter(|c| {
                        ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated
                    });
                    let class = class_of(members);
                    if class == "[]" {
                        return None;
                    }
                    out.push_str(&class);
                }
            }
        }
        Some(out)
    }

    fn is_literal(&self) -> bool {
        self.literal
    }

    fn matches(&self, label: &[u8]) -> bool {
        if self.literal {
            return self.source.as_bytes() == label;
        }
        // Image hosts are ASCII (the reference grammar sees to it): match bytes, no allocation.
        label.is_ascii() && match_tokens(&self.tokens, label)
    }
}

/// `chars` as an RE2 character class, each listed (`-` escaped).
fn class_of(chars: impl Iterator<Item = char>) -> String {
    let mut out = String::from("[");
    for c in chars {
        if c == '-' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(']');
    out
}

/// A class member as Go's `getEsc` reads it: `-` and `]` must be escaped.
fn class_char(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<char> {
    match chars.next()? {
        '-' | ']' => None,
        '\\' => chars.next(),
        c => Some(c),
    }
}

fn match_tokens(tokens: &[Token], text: &[u8]) -> bool {
    let (mut t, mut s) = (0, 0);
    // Backtracking point of the last `*`: (token after it, text position it resumes from).
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        let step = match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t + 1, s));
                t += 1;
                continue;
            }
            Some(Token::Char(c)) => *c == char::from(text[s]),
            Some(Token::Any) => true,
            Some(Token::Class { negated, ranges }) => {
                let c = char::from(text[s]);
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
            None => false,
        };
        if step {
            t += 1;
            s += 1;
        } else if let Some((after_star, from)) = star {
            t = after_star;
            s = from + 1;
            star = Some((after_star, from + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| matches!(tok, Token::Star))
}
