//! The pixel event body (`POST /api/v1/pixel/track`), parsed and validated in one pass.
//!
//! This is the fast twin of `parse_hit` in `core_api/pixel/ingest.py`, which stays the
//! authority: [`parse`] returns `None` for anything it does not take (every invalid
//! body, and valid ones outside the common case: non-ASCII URLs or names, whitespace
//! to strip, float properties), and the caller then runs the Python version, which
//! accepts or answers the documented 422. Whatever this returns equals what the Python
//! version returns for the same body (a property test in `tests/pixel` checks it).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub const MAX_URL: usize = 2048;
pub const MAX_NAME: usize = 120;
pub const MAX_DOMAIN: usize = 253;
pub const MAX_USER_AGENT: usize = 512;
pub const MAX_PROPS: usize = 30;
pub const MAX_PROP_KEY: usize = 64;
pub const MAX_PROP_VALUE: usize = 500;
pub const MAX_PROPS_BYTES: usize = 2048;
const PAGEVIEW: &str = "pageview";

/// A validated event, field for field the Python `Hit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub name: String,
    pub url: String,
    pub host: String,
    pub path: String,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub props: Option<String>,
    pub domain: Option<String>,
}

/// Whether the fast path takes a body of this `Content-Type` (absent: empty): JSON or
/// `text/plain` (what `sendBeacon` sends), parameters ignored, as the Python route
/// decides (`split(";")[0].strip().lower()`, ASCII whitespace).
pub fn accepts_content_type(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or(b"");
    // bytes.strip(): ASCII whitespace including \x0b, which trim_ascii keeps
    let media = trim_by(media, |b| {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
    });
    media.is_empty()
        || media.eq_ignore_ascii_case(b"application/json")
        || media.eq_ignore_ascii_case(b"text/plain")
}

/// `value` without the leading and trailing bytes `space` matches (Python's `strip`
/// has one whitespace set for `bytes` and another for `str`: callers pass theirs).
pub fn trim_by(value: &[u8], space: impl Fn(&u8) -> bool) -> &[u8] {
    let start = value.iter().position(|b| !space(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// A `Content-Length` of ASCII digits within `max`; `None` otherwise (absent, malformed,
/// or too large: the Falcon route answers 411 or 413).
pub fn content_length(value: &[u8], max: usize) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = std::str::from_utf8(value).ok()?.trim_start_matches('0');
    if digits.len() > 19 {
        return None; // beyond u64: too large
    }
    let n: u64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    usize::try_from(n).ok().filter(|&n| n <= max)
}

/// The parts of an absolute URL as written: (scheme, host, path, fragment), the host
/// without credentials, port or trailing dots; `None` when Python's `split_url` would
/// say no, or when the answer could depend on Unicode rules (any byte outside printable
/// ASCII). Python lower-cases the scheme and host; callers do (nothing is allocated here).
pub fn url_parts(url: &str) -> Option<(&str, &str, &str, &str)> {
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return None; // no space, control or non-ASCII character (Python's \s is Unicode)
    }
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.bytes();
    if !chars.next()?.is_ascii_alphabetic()
        || !chars.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
    {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, tail) = tail.split_at(path_end);
    let fragment = match tail.strip_prefix('?') {
        Some(query) => query.split_once('#').map_or("", |(_, f)| f),
        None => tail.strip_prefix('#').unwrap_or(""),
    };
    let mut host = authority.rsplit('@').next().unwrap_or("");
    if !host.starts_with('[') {
        if let Some((name, port)) = host.split_once(':') {
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            host = name;
        }
    }
    if !valid_host(host) {
        return None;
    }
    Some((scheme, host.trim_end_matches('.'), path, fragment))
}

/// `[a-z0-9._\-]+` or `\[[0-9a-f:.]+\]`, the whole string, once lower-cased.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A string field that needs no Unicode rule to validate or strip: within `limit`
/// characters, printable ASCII with no space at either end. `Err(())`: leave the body to
/// the Python version.
fn plain<'s>(value: &'s Option<Cow<'_, str>>, limit: usize) -> Result<Option<&'s str>, ()> {
    let Some(s) = value.as_deref() else {
        return Ok(None);
    };
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Ok(Some(""));
    };
    let ok = s.len() <= limit
        && first.is_ascii_graphic()
        && last.is_ascii_graphic()
        && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(Some(s))
    } else {
        Err(())
    }
}

/// The body's fields, borrowed from it where no escape had to be decoded. Unknown
/// fields, duplicated fields and wrong types fail to parse: Python's to answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    referrer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    domain: Option<Cow<'a, str>>,
    #[serde(borrow)]
    properties: Option<Props<'a>>,
}

/// A property value this parser takes: anything else (floats, integers beyond 64 bits,
/// arrays, objects) fails the parse, and Python decides.
enum Prop<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Null,
}

impl<'de: 'a, 'a> Deserialize<'de> for Prop<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropVisitor;
        impl<'de> Visitor<'de> for PropVisitor {
            type Value = Prop<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a 64-bit integer, a boolean or null")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Prop<'de>, E> {
                Ok(Prop::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prop<'de>, E> {
                Ok(Prop::Str(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Prop<'de>, E> {
                Ok(Prop::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Prop<'de>, E> {
                i64::try_from(v).map(Prop::Int).map_err(E::custom)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Prop<'de>, E> {
                Ok(Prop::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Prop<'de>, E> {
                Ok(Prop::Null)
            }
        }
        deserializer.deserialize_any(PropVisitor)
    }
}

/// The properties object, in the body's order. A repeated key fails the parse (Python
/// keeps the first position and the last value; it decides those).
struct Props<'a>(Vec<(Cow<'a, str>, Prop<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PropsVisitor;
        impl<'de> Visitor<'de> for PropsVisitor {
            type Value = Props<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props<'de>, A::Error> {
                let mut items: Vec<(Cow<'de, str>, Prop<'de>)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<Cow<'de, str>, Prop<'de>>()? {
                    if items.len() >= MAX_PROPS || items.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom("too many or repeated keys"));
                    }
                    items.push((key, value));
                }
                Ok(Props(items))
            }
        }
        deserializer.deserialize_map(PropsVisitor)
    }
}

/// The properties as Python's `orjson.dumps` writes them (compact, in order, the same
/// string escapes), or `Err` to leave them to Python (a size it refuses).
fn properties(props: Option<&Props<'_>>) -> Result<Option<String>, ()> {
    let Some(Props(items)) = props else {
        return Ok(None);
    };
    if items.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    for (i, (key, value)) in items.iter().enumerate() {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_PROP_KEY || key.contains('\0') {
            return Err(());
        }
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key.as_ref()).map_err(|_| ())?;
        out.push(b':');
        match value {
            Prop::Str(s) => {
                if s.contains('\0') || s.chars().count() > MAX_PROP_VALUE {
                    return Err(());
                }
                serde_json::to_writer(&mut out, s.as_ref()).map_err(|_| ())?;
            }
            Prop::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Prop::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Prop::Null => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    let encoded = String::from_utf8(out).map_err(|_| ())?;
    if encoded.chars().count() > MAX_PROPS_BYTES {
        return Err(());
    }
    Ok(Some(encoded))
}

/// The event in a track body, or `None`: the Python version decides (see the module).
pub fn parse(body: &[u8]) -> Option<Hit> {
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    let name = match plain(&body.event, MAX_NAME).ok()? {
        None => PAGEVIEW.to_string(),
        Some("") => return None, // Python's 422
        Some(name) => name.to_string(),
    };
    let url = plain(&body.url, MAX_URL).ok()??;
    let (scheme, host, path, fragment) = url_parts(url)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let referrer = match plain(&body.referrer, MAX_URL).ok()? {
        None | Some("") => None,
        Some(r) => {
            url_parts(r)?;
            Some(r.to_string())
        }
    };
    let user_agent = match plain(&body.user_agent, MAX_USER_AGENT).ok()? {
        None | Some("") => None,
        Some(ua) => Some(ua.to_string()),
    };
    let domain = match plain(&body.domain, MAX_DOMAIN).ok()? {
        None | Some("") => None,
        Some(d) => Some(d.to_ascii_lowercase()),
    };
    let props = properties(body.properties.as_ref()).ok()?;
    let mut path = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    if fragment.starts_with('/') || fragment.starts_with("!/") {
        path.push('#');
        path.push_str(fragment);
    }
    path.truncate(MAX_URL); // ASCII: bytes are characters
    Some(Hit {
        name,
        url: url.to_string(),
        host: host.to_ascii_lowercase(),
        path,
        referrer,
        user_agent,
        props,
        domain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(body: &str) -> Option<Hit> {
        parse(body.as_bytes())
    }

    #[test]
    fn a_pageview_with_everything() {
        let h = hit(
            r#"{"event":"Signup","url":"https://Shop.Example.com:8443/a/b?x=1#/route",
            "referrer":"https://www.google.com/","user_agent":"UA/1","domain":"Shop.Example.com",
            "properties":{"plan":"pro","n":3,"ok":true,"none":null}}"#,
        )
        .unwrap();
        assert_eq!(h.name, "Signup");
        assert_eq!(h.host, "shop.example.com");
        assert_eq!(h.path, "/a/b#/route");
        assert_eq!(h.referrer.as_deref(), Some("https://www.google.com/"));
        assert_eq!(h.domain.as_deref(), Some("shop.example.com"));
        assert_eq!(
            h.props.as_deref(),
            Some(r#"{"plan":"pro","n":3,"ok":true,"none":null}"#)
        );
    }

    #[test]
    fn defaults() {
        let h = hit(r#"{"url":"http://a.test"}"#).unwrap();
        assert_eq!((h.name.as_str(), h.path.as_str()), ("pageview", "/"));
        assert_eq!(
            (h.referrer, h.user_agent, h.props, h.domain),
            (None, None, None, None)
        );
        let h = hit(r#"{"url":"http://a.test/x#section","referrer":"","properties":{}}"#).unwrap();
        assert_eq!((h.path.as_str(), h.referrer, h.props), ("/x", None, None));
    }

    #[test]
    fn everything_else_is_left_to_python() {
        for body in [
            r#"[]"#,
            r#"{"url":"ftp://a.test/"}"#,
            r#"{"url":" https://a.test/"}"#,
            r#"{"url":"https://a.test/é"}"#,
            r#"{"url":"https://a.test:x/"}"#,
            r#"{"url":"https://a b/"}"#,
            r#"{"url":"https://[::1]:80/"}"#,
            r#"{"url":"https://a.test/","extra":1}"#,
            r#"{"url":"https://a.test/","event":""}"#,
            r#"{"url":"https://a.test/","event":7}"#,
            r#"{"url":"https://a.test/","referrer":"not a url"}"#,
            r#"{"url":"https://a.test/","properties":{"f":1.5}}"#,
            r#"{"url":"https://a.test/","properties":{"n":9223372036854775808}}"#,
            r#"{"url":"https://a.test/","properties":{"o":{}}}"#,
            r#"{"url":"https://a.test/","properties":[]}"#,
            r#"{"event":"x"}"#,
            r#"{"url":"https://a.test/"#,
        ] {
            assert_eq!(hit(body), None, "{body}");
        }
    }

    #[test]
    fn hosts() {
        fn host(u: &str) -> Option<&str> {
            url_parts(u).map(|p| p.1)
        }
        assert_eq!(host("https://user:pw@A.test.:80/"), Some("A.test"));
        assert_eq!(host("https://[::1]/"), Some("[::1]"));
        assert_eq!(host("https://[::A]/"), Some("[::A]"));
        assert_eq!(host("https://./"), Some(""));
        assert_eq!(host("https:///x"), None);
        assert_eq!(host("https://[::g]/"), None);
    }

    #[test]
    fn content_type_and_length_as_the_route_decides() {
        for ok in [
            &b""[..],
            b"text/plain;charset=UTF-8",
            b" Application/JSON ; x=1",
            b"TEXT/PLAIN",
        ] {
            assert!(accepts_content_type(ok), "{ok:?}");
        }
        for no in [
            &b"text/html"[..],
            b"application/jsonx",
            b"multipart/form-data; a=b",
        ] {
            assert!(!accepts_content_type(no), "{no:?}");
        }
        assert_eq!(content_length(b"150", 8192), Some(150));
        assert_eq!(content_length(b"000", 8192), Some(0));
        assert_eq!(content_length(b"8193", 8192), None);
        assert_eq!(content_length(b"99999999999999999999999", 8192), None);
        for bad in [&b""[..], b"-1", b"1 ", b"+5", b"\xd9\xa1"] {
            assert_eq!(content_length(bad, 8192), None, "{bad:?}");
        }
    }
}
