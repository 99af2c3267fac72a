//! Container image references, parsed as the distribution project does
//! (`reference/normalize.go`, `reference/regexp.go`), so that the registry host we match on is
//! the one the container runtime will pull from.
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path
//! domain      := host [ ":" port ]          host: DNS name, IPv4, or "[" IPv6 "]"
//! path        := component ( "/" component )*
//! component   := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag         := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest      := algorithm ":" hex{32,}
//! ```
//!
//! The first path component is a registry host only if it contains `.` or `:`, is
//! `localhost`, or has an uppercase letter; otherwise the image is on Docker Hub.

use std::borrow::Cow;
use std::fmt;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";
/// The legacy Docker Hub domain, rewritten to [`DOCKER_HUB`] as distribution does.
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// Longest `domain/path` distribution accepts.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A parsed, normalized image reference. Borrowed from the input where normalization does not
/// change it, so parsing the images of a Pod allocates only for Docker Hub short names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef<'a> {
    domain: Cow<'a, str>,
    /// Length of the host in `domain`: a port, if any, follows it after a ':'. Rules ask for
    /// host and port once per rule, so the split is made once, here.
    host_len: usize,
    path: Cow<'a, str>,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Why an image string is not a valid reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("empty image reference")]
    Empty,
    #[error("image name is longer than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("a 64-character hexadecimal string is an image ID, not a repository name")]
    IdentifierOnly,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid registry host {0:?}")]
    InvalidDomain(String),
    #[error("invalid repository path component {0:?}")]
    InvalidPath(String),
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedDigest(String),
}

impl<'a> ImageRef<'a> {
    /// Parses and normalizes `s` like distribution's `ParseNormalizedNamed`.
    pub fn parse(s: &'a str) -> Result<Self, ImageError> {
        if s.is_empty() {
            return Err(ImageError::Empty);
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ImageError::IdentifierOnly);
        }

        let (domain, remainder) = split_domain(s);

        // Only the repository part must be lowercase: the tag may not be (`name:Latest`).
        let remote_name = split_once_ascii(&remainder, b':').map_or(&*remainder, |(n, _)| n);
        if remote_name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ImageError::Uppercase);
        }

        let (name_part, digest) = match split_once_ascii(&remainder, b'@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (remainder.as_ref(), None),
        };
        let (path, tag) = match rsplit_once_ascii(name_part, b':') {
            // A ':' after the last '/' starts a tag; the path itself has no ':'.
            Some((path, tag)) if !tag.bytes().any(|b| b == b'/') => (path, Some(tag)),
            _ => (name_part, None),
        };

        let host_len = validate_domain(&domain)?;
        validate_path(path)?;
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ImageError::NameTooLong);
        }
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if let Some(digest) = digest {
            validate_digest(digest)?;
        }

        let path = match remainder {
            Cow::Borrowed(r) => Cow::Borrowed(&r[..path.len()]),
            Cow::Owned(ref r) => Cow::Owned(r[..path.len()].to_owned()),
        };
        // Tag and digest always lie at the end of the input, so they can borrow from it.
        let tail = |part: Option<&str>| part.map(|p| &s[s.len() - p.len()..]);
        let digest_in_s = tail(digest);
        let tag_in_s = tag.map(|t| {
            let end = s.len() - digest.map_or(0, |d| d.len() + 1);
            &s[end - t.len()..end]
        });
        Ok(Self {
            domain,
            host_len,
            path,
            tag: tag_in_s,
            digest: digest_in_s,
        })
    }

    /// The registry, with its port if it has one: `docker.io`, `localhost:5000`, `[::1]:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The registry host without the port.
    pub fn host(&self) -> &str {
        &self.domain[..self.host_len]
    }

    /// The registry port, if the reference names one.
    pub fn port(&self) -> Option<&str> {
        self.domain.get(self.host_len + 1..)
    }

    /// The repository path on the registry: `library/nginx`, `acme/jobs/nightly`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest
    }
}

impl fmt::Display for ImageRef<'_> {
    /// The fully qualified name the runtime pulls: `docker.io/library/nginx:1.27`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `host:port` (`[v6]:port` too) into host and port. The input is a domain already
/// checked by [`validate_domain`], or a rule's host.
pub fn split_port(domain: &str) -> (&str, Option<&str>) {
    let bracket_end = if domain.starts_with('[') {
        domain.bytes().position(|b| b == b']').map_or(0, |i| i + 1)
    } else {
        0
    };
    match domain[bracket_end..].bytes().rposition(|b| b == b':') {
        Some(i) => (
            &domain[..bracket_end + i],
            Some(&domain[bracket_end + i + 1..]),
        ),
        None => (domain, None),
    }
}

/// `s.split_once(c)` for an ASCII `c`, as a plain byte scan: on strings as short as image
/// references, the char searcher's memchr and memcmp cost more than the search itself.
fn split_once_ascii(s: &str, c: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == c)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `s.rsplit_once(c)` for an ASCII `c`; see [`split_once_ascii`].
fn rsplit_once_ascii(s: &str, c: u8) -> Option<(&str, &str)> {
    let i = s.bytes().rposition(|b| b == c)?;
    Some((&s[..i], &s[i + 1..]))
}

/// distribution's `splitDockerDomain`.
fn split_domain(s: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    let Some((maybe_domain, rest)) = split_once_ascii(s, b'/') else {
        return (
            Cow::Borrowed(DOCKER_HUB),
            Cow::Owned(format!("{OFFICIAL_REPO_PREFIX}{s}")),
        );
    };
    let (domain, remote) = if maybe_domain == LEGACY_DOCKER_HUB {
        (DOCKER_HUB, rest)
    } else if maybe_domain == "localhost"
        || maybe_domain
            .bytes()
            .any(|b| b == b'.' || b == b':' || b.is_ascii_uppercase())
    {
        (maybe_domain, rest)
    } else {
        (DOCKER_HUB, s)
    };
    if domain == DOCKER_HUB && !remote.bytes().any(|b| b == b'/') {
        return (
            Cow::Borrowed(DOCKER_HUB),
            Cow::Owned(format!("{OFFICIAL_REPO_PREFIX}{remote}")),
        );
    }
    (Cow::Borrowed(domain), Cow::Borrowed(remote))
}

/// Checks `host[:port]` and returns the length of the host.
fn validate_domain(domain: &str) -> Result<usize, ImageError> {
    let bad = || ImageError::InvalidDomain(domain.to_owned());
    let (host, port) = split_port(domain);
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(v6) = host.strip_prefix('[') {
        let inner = v6.strip_suffix(']').ok_or_else(bad)?;
        if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        return Ok(host.len());
    }
    if host.is_empty()
        || !host
            .as_bytes()
            .split(|&b| b == b'.')
            .all(is_domain_component)
    {
        return Err(bad());
    }
    Ok(host.len())
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(b: &[u8]) -> bool {
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn validate_path(path: &str) -> Result<(), ImageError> {
    for component in path.as_bytes().split(|&b| b == b'/') {
        if !is_path_component(component) {
            let component = String::from_utf8_lossy(component).into_owned();
            return Err(ImageError::InvalidPath(component));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(b: &[u8]) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
    }
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), ImageError> {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidTag(tag.to_owned()))
    }
}

/// `algorithm ":" hex`, where the algorithm must be one go-digest knows and the hex has the
/// length of its hash (go-digest's `Digest.Validate`).
fn validate_digest(digest: &str) -> Result<(), ImageError> {
    let bad = || ImageError::InvalidDigest(digest.to_owned());
    let (algorithm, hex) = split_once_ascii(digest, b':').ok_or_else(bad)?;
    let algorithm_ok = algorithm
        .as_bytes()
        .split(|b| matches!(b, b'+' | b'.' | b'-' | b'_'))
        .all(|b| {
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ImageError::UnsupportedDigest(algorithm.to_owned())),
    };
    // go-digest requires the encoded part to be lowercase hex of the exact length.
    if hex.len() != expected_len || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    Ok(())
}
