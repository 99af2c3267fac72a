//! The fast path of reading an AdmissionReview: one walk over the body that takes the few
//! fields the decision needs, borrowing them, and checks the syntax of everything else while
//! skipping it.
//!
//! It is deliberately narrower than serde_json. Whenever it meets something it does not treat
//! exactly as serde_json and the derived readers would (an escape in a key, a struct written
//! as an array, a duplicate field, a value of another type, deep nesting, a lone surrogate),
//! it gives up and the caller reads the body with serde_json instead, which also words the
//! errors. So it only has to be right when it answers, and the tests check that it then agrees
//! with serde_json field for field, and that it answers for every recorded review.

use std::borrow::Cow;

use super::{
    Annotations, ContainerIn, GroupKind, GroupResource, MetaIn, PodIn, RequestIn, ReviewIn,
    SecretRefIn, Str,
};
use crate::names::{INJECTED_ANNOTATION, MIRROR_ANNOTATION, SKIP_ANNOTATION};

/// Nesting deeper than this is left to serde_json, whose own limit is 128.
const MAX_DEPTH: usize = 100;

/// Reads `body` as an AdmissionReview of a Pod, or `None` to say: ask serde_json.
pub(super) fn review(body: &[u8]) -> Option<ReviewIn<'_, PodIn<'_>>> {
    let mut reader = Reader {
        b: body,
        i: 0,
        depth: 0,
    };
    let review = reader.review()?;
    reader.ws();
    (reader.i == body.len()).then_some(review)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

/// An object key as written, without its quotes.
#[derive(Clone, Copy)]
struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> Key<'a> {
    /// The key, when comparing its bytes means what serde_json's comparison of the decoded
    /// key would mean.
    fn plain(self) -> Option<&'a [u8]> {
        (!self.escaped && self.raw.is_ascii()).then_some(self.raw)
    }
}

/// Marks a field as seen; a second occurrence is an error for serde's derived readers.
fn once(seen: &mut u16, bit: u16) -> Option<()> {
    let first = *seen & bit == 0;
    *seen |= bit;
    first.then_some(())
}

impl<'a> Reader<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        // The API server sends compact JSON: whitespace is the exception.
        let c = *self.b.get(self.i)?;
        if c > b' ' {
            return Some(c);
        }
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `word` at the current position; callers have peeked past the whitespace.
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Reads an object, handing each key to `field`, which reads or skips its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, Key<'a>) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.enter()?;
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.eat(b'"')?;
                let (raw, escaped) = self.raw_str()?;
                self.eat(b':')?;
                field(self, Key { raw, escaped })?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Reads an array, calling `element` for each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.enter()?;
        if self.peek()? == b']' {
            self.i += 1;
        } else {
            loop {
                element(self)?;
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Skips any value, checking it as serde_json checks a value it ignores. A loop over a
    /// stack of open containers rather than recursion: this is where most bytes go by.
    fn skip(&mut self) -> Option<()> {
        // One bit per open container, innermost lowest: 1 for an object.
        let mut open: u128 = 0;
        let mut depth = 0;
        loop {
            // A value starts here.
            let mut opened = match self.peek()? {
                b'"' => {
                    self.i += 1;
                    self.raw_str()?;
                    false
                }
                c @ (b'{' | b'[') => {
                    self.i += 1;
                    depth += 1;
                    if self.depth + depth > MAX_DEPTH {
                        return None;
                    }
                    open = open << 1 | u128::from(c == b'{');
                    true
                }
                c @ (b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                    self.scalar(c)?;
                    false
                }
                _ => return None,
            };
            // After a value, or just inside a container: close what ends here, then find
            // where the next value starts.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let object = open & 1 == 1;
                let c = self.peek()?;
                if (c == b'}' && object) || (c == b']' && !object) {
                    self.i += 1;
                    open >>= 1;
                    depth -= 1;
                    opened = false;
                    continue;
                }
                if !opened {
                    if c != b',' {
                        return None;
                    }
                    self.i += 1;
                }
                if object {
                    self.eat(b'"')?;
                    self.raw_str()?;
                    self.eat(b':')?;
                }
                break;
            }
        }
    }

    /// A literal or a number, starting with `first`, the byte just peeked.
    fn scalar(&mut self, first: u8) -> Option<()> {
        match first {
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return None;
            }
            i = end;
        }
        self.i = i;
        Some(())
    }

    /// The raw bytes of a string whose opening quote was just read, and whether it has
    /// escapes. Checked as serde_json checks a string it skips: well-formed escapes, no
    /// control characters.
    #[inline(always)]
    fn raw_str(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        let end = start + plain_run(&self.b[start..]);
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return Some((&self.b[start..end], false));
        }
        self.i = end;
        self.escaped_str(start)
    }

    /// The rest of [`Self::raw_str`], for a string with escapes (or an error).
    #[inline(never)]
    fn escaped_str(&mut self, start: usize) -> Option<(&'a [u8], bool)> {
        let b = self.b;
        let mut escaped = false;
        loop {
            match *b.get(self.i)? {
                b'"' => {
                    let raw = &b[start..self.i];
                    self.i += 1;
                    return Some((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = b.get(self.i + 2..self.i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
            self.i += plain_run(&b[self.i..]);
        }
    }

    fn string(&mut self) -> Option<Str<'a>> {
        self.eat(b'"')?;
        let (raw, escaped) = self.raw_str()?;
        if escaped {
            unescape(raw).map(|s| Str(Cow::Owned(s)))
        } else {
            std::str::from_utf8(raw).ok().map(|s| Str(Cow::Borrowed(s)))
        }
    }

    /// `null` as `None`, anything else read by `read`.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Some(None)
        } else {
            read(self).map(Some)
        }
    }

    fn opt_string(&mut self) -> Option<Option<Str<'a>>> {
        self.opt(Self::string)
    }

    fn list<T>(&mut self, mut read: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut out = Vec::new();
        self.array(|r| {
            out.push(read(r)?);
            Some(())
        })?;
        Some(out)
    }

    fn review(&mut self) -> Option<ReviewIn<'a, PodIn<'a>>> {
        let mut out = ReviewIn {
            api_version: None,
            kind: None,
            request: None,
        };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"apiVersion" => {
                    once(&mut seen, 1)?;
                    out.api_version = r.opt_string()?;
                }
                b"kind" => {
                    once(&mut seen, 2)?;
                    out.kind = r.opt_string()?;
                }
                b"request" => {
                    once(&mut seen, 4)?;
                    out.request = r.opt(Self::request)?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    fn request(&mut self) -> Option<RequestIn<'a, PodIn<'a>>> {
        let mut out = RequestIn {
            uid: None,
            kind: None,
            resource: None,
            sub_resource: None,
            name: None,
            namespace: None,
            operation: None,
            dry_run: None,
            object: None,
        };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"uid" => {
                    once(&mut seen, 1)?;
                    out.uid = r.opt_string()?;
                }
                b"kind" => {
                    once(&mut seen, 2)?;
                    out.kind = r.opt(Self::group_kind)?;
                }
                b"resource" => {
                    once(&mut seen, 4)?;
                    out.resource = r.opt(Self::group_resource)?;
                }
                b"subResource" => {
                    once(&mut seen, 8)?;
                    out.sub_resource = r.opt_string()?;
                }
                b"name" => {
                    once(&mut seen, 16)?;
                    out.name = r.opt_string()?;
                }
                b"namespace" => {
                    once(&mut seen, 32)?;
                    out.namespace = r.opt_string()?;
                }
                b"operation" => {
                    once(&mut seen, 64)?;
                    out.operation = r.opt_string()?;
                }
                b"dryRun" => {
                    once(&mut seen, 128)?;
                    out.dry_run = r.opt(Self::bool)?;
                }
                b"object" => {
                    once(&mut seen, 256)?;
                    out.object = r.opt(Self::pod)?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    fn bool(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// `{"group": ..., <name>: ...}`: a GroupKind or a GroupResource, missing fields empty.
    fn group_and(&mut self, name: &[u8]) -> Option<(Str<'a>, Str<'a>)> {
        let (mut group, mut other) = (Str::default(), Str::default());
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"group" => {
                    once(&mut seen, 1)?;
                    group = r.string()?;
                }
                k if k == name => {
                    once(&mut seen, 2)?;
                    other = r.string()?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some((group, other))
    }

    fn group_kind(&mut self) -> Option<GroupKind<'a>> {
        let (group, kind) = self.group_and(b"kind")?;
        Some(GroupKind { group, kind })
    }

    fn group_resource(&mut self) -> Option<GroupResource<'a>> {
        let (group, resource) = self.group_and(b"resource")?;
        Some(GroupResource { group, resource })
    }

    fn pod(&mut self) -> Option<PodIn<'a>> {
        let mut out = PodIn {
            metadata: None,
            spec: None,
        };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"metadata" => {
                    once(&mut seen, 1)?;
                    out.metadata = r.opt(Self::metadata)?;
                }
                b"spec" => {
                    once(&mut seen, 2)?;
                    out.spec = r.opt(Self::spec)?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    fn metadata(&mut self) -> Option<MetaIn<'a>> {
        let mut out = MetaIn {
            name: None,
            generate_name: None,
            annotations: Annotations::default(),
        };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"name" => {
                    once(&mut seen, 1)?;
                    out.name = r.opt_string()?;
                }
                b"generateName" => {
                    once(&mut seen, 2)?;
                    out.generate_name = r.opt_string()?;
                }
                b"annotations" => {
                    once(&mut seen, 4)?;
                    out.annotations = r.opt(Self::annotations)?.unwrap_or_default();
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    /// As `Annotations`' own reader: no duplicate check, the last value wins.
    fn annotations(&mut self) -> Option<Annotations> {
        let mut out = Annotations {
            present: true,
            ..Annotations::default()
        };
        let skip = SKIP_ANNOTATION.as_bytes();
        let mirror = MIRROR_ANNOTATION.as_bytes();
        let injected = INJECTED_ANNOTATION.as_bytes();
        self.object(|r, key| {
            match key.plain()? {
                k if k == skip => out.skip = r.string()?.trim().eq_ignore_ascii_case("true"),
                k if k == mirror => {
                    r.skip()?;
                    out.mirror = true;
                }
                k if k == injected => out.injected = Some(r.string()?.into_owned()),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(out)
    }

    fn spec(&mut self) -> Option<super::SpecIn<'a>> {
        let mut out = super::SpecIn {
            containers: None,
            init_containers: None,
            ephemeral_containers: None,
            image_pull_secrets: None,
        };
        let mut seen = 0;
        let containers = |r: &mut Self| r.opt(|r| r.list(Self::container));
        self.object(|r, key| {
            match key.plain()? {
                b"containers" => {
                    once(&mut seen, 1)?;
                    out.containers = containers(r)?;
                }
                b"initContainers" => {
                    once(&mut seen, 2)?;
                    out.init_containers = containers(r)?;
                }
                b"ephemeralContainers" => {
                    once(&mut seen, 4)?;
                    out.ephemeral_containers = containers(r)?;
                }
                b"imagePullSecrets" => {
                    once(&mut seen, 8)?;
                    out.image_pull_secrets = r.opt(|r| r.list(Self::secret_ref))?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    fn container(&mut self) -> Option<ContainerIn<'a>> {
        let mut out = ContainerIn {
            name: None,
            image: None,
        };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"name" => {
                    once(&mut seen, 1)?;
                    out.name = r.opt_string()?;
                }
                b"image" => {
                    once(&mut seen, 2)?;
                    out.image = r.opt_string()?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }

    fn secret_ref(&mut self) -> Option<SecretRefIn<'a>> {
        let mut out = SecretRefIn { name: None };
        let mut seen = 0;
        self.object(|r, key| {
            match key.plain()? {
                b"name" => {
                    once(&mut seen, 1)?;
                    out.name = r.opt_string()?;
                }
                _ => r.skip()?,
            };
            Some(())
        })?;
        Some(out)
    }
}

/// How many bytes from the start of `s` need no attention inside a string: not a quote, a
/// backslash or a control character. Eight bytes at a time, as serde_json does it; the first
/// sixteen without a branch between the two words, since most strings of a review end there
/// and a loop exit that depends on each string's length is mispredicted.
#[inline(always)]
fn plain_run(s: &[u8]) -> usize {
    if let Some(head) = s.first_chunk::<16>() {
        let x = u128::from_le_bytes(*head);
        let flags = u128::from(flagged(x as u64)) | u128::from(flagged((x >> 64) as u64)) << 64;
        if flags != 0 {
            return flags.trailing_zeros() as usize / 8;
        }
        return 16 + plain_run_words(&s[16..]);
    }
    plain_run_words(s)
}

/// The high bit of each byte of `x` (eight bytes read little-endian) that needs attention in
/// a string is set: the byte is zero after the xor (quote, backslash) or below 0x20. Borrows
/// can set it in bytes above a true one, never below: the lowest set bit is always true.
#[inline(always)]
fn flagged(x: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (x.wrapping_sub(ONES * 0x20) & !x))
        & HIGH
}

/// [`plain_run`] a word at a time.
#[inline]
fn plain_run_words(s: &[u8]) -> usize {
    let (chunks, tail) = s.as_chunks::<8>();
    for (k, chunk) in chunks.iter().enumerate() {
        let flags = flagged(u64::from_le_bytes(*chunk));
        if flags != 0 {
            return k * 8 + flags.trailing_zeros() as usize / 8;
        }
    }
    let done = chunks.len() * 8;
    done + tail
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(tail.len())
}

/// Decodes a string's escapes (already checked well-formed). Surrogates are left to
/// serde_json, which pairs them.
fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.iter().position(|&c| c == b'\\') {
        out.push_str(std::str::from_utf8(&rest[..at]).ok()?);
        let (decoded, len) = match rest.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hex = std::str::from_utf8(rest.get(at + 2..at + 6)?).ok()?;
                (char::from_u32(u32::from_str_radix(hex, 16).ok()?)?, 6)
            }
            _ => return None,
        };
        out.push(decoded);
        rest = rest.get(at + len..)?;
    }
    out.push_str(std::str::from_utf8(rest).ok()?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("tests/data") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                let body = std::fs::read(&path).expect("fixture");
                out.push((path.display().to_string(), body));
            }
        }
        out.sort();
        assert!(out.len() >= 8, "fixtures missing from {}", dir.display());
        out
    }

    fn serde(body: &[u8]) -> Option<ReviewIn<'_, PodIn<'_>>> {
        serde_json::from_slice(body).ok()
    }

    /// The reader's contract: when it answers, serde_json answers the same.
    fn agrees(body: &[u8]) -> Result<(), String> {
        match review(body) {
            None => Ok(()),
            Some(fast) => match serde(body) {
                Some(slow) if slow == fast => Ok(()),
                Some(slow) => Err(format!("reader {fast:?}\nserde  {slow:?}")),
                None => Err(format!("reader accepted what serde_json refuses: {fast:?}")),
            },
        }
    }

    #[test]
    fn answers_every_recorded_review_as_serde_json_does() {
        for (name, body) in fixtures() {
            let fast = review(&body).unwrap_or_else(|| panic!("{name}: reader gave up"));
            assert_eq!(Some(fast), serde(&body), "{name}");
            // The same documents pretty-printed: whitespace everywhere.
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            let pretty = serde_json::to_vec_pretty(&value).expect("JSON");
            let fast = review(&pretty).unwrap_or_else(|| panic!("{name} pretty: reader gave up"));
            assert_eq!(Some(fast), serde(&pretty), "{name} pretty");
        }
    }

    /// A Job Pod review with `pod` as its object.
    fn with_pod(pod: &str) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"CREATE","object":{pod}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn reads_what_it_can_and_leaves_the_rest_to_serde_json() {
        let answered = [
            // Escapes in values are decoded; in skipped strings, checked.
            r#"{"metadata":{"name":"a\"b\\c\/d\u00e9\n"},"spec":{"containers":[{"image":"ghcr.io/acme/x\u003a1"}]}}"#,
            r#"{"metadata":{"labels":{"k":"\ud83d\ude00 \t\b\f\r"}},"spec":null}"#,
            // Every optional field null; empty containers.
            r#"{"metadata":{"name":null,"generateName":null,"annotations":null},"spec":{"containers":null,"initContainers":[],"imagePullSecrets":[{"name":null},{}]}}"#,
            r#"{"metadata":null,"spec":{}}"#,
            r#"{}"#,
            // Numbers, literals, nesting in skipped fields.
            r#"{"spec":{"priority":-0,"x":[1.5e10,0.25,-3E-2,true,false,null,{"a":[[[{}]]]}],"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}]}]}}"#,
            // Annotations: the last value wins, the mirror key whatever its value.
            r#"{"metadata":{"annotations":{"pullsecret-injector.io/skip":"false","pullsecret-injector.io/skip":" TRUE ","kubernetes.io/config.mirror":5,"pullsecret-injector.io/injected":"a,b"}}}"#,
            // Non-ASCII UTF-8 in values.
            r#"{"metadata":{"name":"café","labels":{"ключ":"値"}}}"#,
        ];
        for pod in answered {
            let body = with_pod(pod);
            assert!(review(&body).is_some(), "gave up on {pod}");
            agrees(&body).unwrap_or_else(|e| panic!("{pod}: {e}"));
        }

        let left_to_serde = [
            // An escaped key might name a field once decoded.
            r#"{"metadata":{"n\u0061me":"x"}}"#,
            // A duplicate field is an error for the derived readers.
            r#"{"metadata":{"name":"a","name":"b"}}"#,
            r#"{"spec":{},"spec":{}}"#,
            // A struct written as an array.
            r#"{"spec":{"containers":[["c","i"]]}}"#,
            // A lone surrogate, a wrong type, deep nesting.
            r#"{"metadata":{"name":"\ud800"}}"#,
            r#"{"metadata":{"name":5}}"#,
            r#"{"spec":{"containers":[null]}}"#,
            // Not JSON.
            r#"{"metadata":{"name":"a",}}"#,
            r#"{"spec":{"x":01}}"#,
            r#"{"spec":{"x":1.}}"#,
            r#"{"spec":{"x":"\x"}}"#,
            r#"{"spec":{"x":tru}}"#,
            "{\"spec\":{\"x\":\"a\u{1}b\"}}",
        ];
        for pod in left_to_serde {
            let body = with_pod(pod);
            assert!(review(&body).is_none(), "answered {pod}");
        }
        let deep = format!(
            r#"{{"spec":{{"x":{}{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(review(&with_pod(&deep)).is_none());
        let fine = format!(r#"{{"spec":{{"x":{}{}}}}}"#, "[".repeat(90), "]".repeat(90));
        assert!(review(&with_pod(&fine)).is_some());
        agrees(&with_pod(&fine)).unwrap_or_else(|e| panic!("{e}"));

        // Trailing bytes, truncation, and a body that is not an object at all.
        let good = with_pod("{}");
        assert!(review(&good).is_some());
        assert!(review(&[good.as_slice(), b" \n"].concat()).is_some());
        assert!(review(&[good.as_slice(), b" x"].concat()).is_none());
        assert!(review(&good[..good.len() - 1]).is_none());
        assert!(review(b"[]").is_none());
        assert!(review(b"").is_none());
    }

    /// Edits that break JSON in the ways a byte can: structure, quotes, escapes, literals,
    /// numbers, control characters and invalid UTF-8.
    fn edit() -> impl Strategy<Value = (prop::sample::Index, u8, u8)> {
        let bytes = prop::sample::select(
            b"{}[],:\"\\/0159-+.eEtrufalsn u\x00\x1f\x7f\xc3\xa9\xff".to_vec(),
        );
        (any::<prop::sample::Index>(), 0u8..4, bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Recorded reviews with bytes deleted, inserted, replaced or cut off: whatever the
        /// reader answers, serde_json answers the same.
        #[test]
        fn agrees_with_serde_json_on_damaged_reviews(
            which in any::<prop::sample::Index>(),
            edits in prop::collection::vec(edit(), 1..4),
        ) {
            let all = fixtures();
            let mut body = all[which.index(all.len())].1.clone();
            for (at, op, byte) in edits {
                let i = at.index(body.len() + 1);
                match op {
                    0 if i < body.len() => { body.remove(i); }
                    1 => body.insert(i, byte),
                    2 if i < body.len() => body[i] = byte,
                    _ => body.truncate(i),
                }
            }
            if let Err(e) = agrees(&body) {
                return Err(TestCaseError::fail(format!("{e}\nbody: {}", String::from_utf8_lossy(&body))));
            }
        }

        /// The word-at-a-time scan stops where a byte-by-byte one does, at every length and
        /// alignment (the first sixteen bytes take their own path).
        #[test]
        fn plain_run_stops_at_the_first_byte_needing_attention(
            s in prop::collection::vec(
                prop_oneof![
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                    3 => 0x20u8..=0xff,
                    40 => b'a'..=b'z',
                ],
                0..48,
            ),
            skip in 0usize..4,
        ) {
            let s = &s[skip.min(s.len())..];
            let expected = s
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(s.len());
            prop_assert_eq!(plain_run(s), expected);
        }
    }
}
