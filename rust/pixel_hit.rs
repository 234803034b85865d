//! The pixel event body (`POST /api/v1/pixel/track`), parsed and validated in one pass.
//!
//! This is the fast twin of `parse_hit` in `core_api/pixel/ingest.py`, which stays the
//! authority: [`parse`] returns `None` for anything it does not take (every invalid
//! body, and valid ones outside the common case: non-ASCII URLs or names, whitespace
//! to strip, float properties), and the caller then runs the Python version, which
//! accepts or answers the documented 422. Whatever this returns equals what the Python
//! version returns for the same body (a property test in `tests/pixel` checks it).

use serde_json::{Map, Value};

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
#[derive(Debug, PartialEq, Eq)]
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

/// The parts of an absolute URL: (scheme, host, path, fragment), lower-case scheme and
/// host, no port or credentials; `None` when Python's `split_url` would say no, or when
/// the answer could depend on Unicode rules (any byte outside printable ASCII).
pub fn split_url(url: &str) -> Option<(String, String, &str, &str)> {
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
    let mut host = authority
        .rsplit('@')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !host.starts_with('[') {
        if let Some((name, port)) = host.split_once(':') {
            if !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            host.truncate(name.len());
        }
    }
    if !valid_host(&host) {
        return None;
    }
    let host = host.trim_end_matches('.').to_string();
    Some((scheme.to_ascii_lowercase(), host, path, fragment))
}

/// `[a-z0-9._\-]+` or `\[[0-9a-f:.]+\]`, the whole string.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.'));
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// A string field that needs no Unicode rule to validate or strip: present and a string,
/// within `limit` characters, printable ASCII with no space at either end. `Err(())`:
/// leave the body to the Python version.
fn plain<'a>(map: &'a Map<String, Value>, name: &str, limit: usize) -> Result<Option<&'a str>, ()> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(Some("")),
        Some(Value::String(s)) => {
            let bytes = s.as_bytes();
            let edges = [bytes[0], bytes[bytes.len() - 1]];
            let ok = s.len() <= limit
                && edges.iter().all(|b| b.is_ascii_graphic())
                && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
            if ok {
                Ok(Some(s))
            } else {
                Err(())
            }
        }
        Some(_) => Err(()),
    }
}

/// The properties as Python's `orjson.dumps` writes them, or `Err` to leave them to
/// Python (a wrong type or size is Python's 422 to give; floats are Python's to format).
fn properties(value: Option<&Value>) -> Result<Option<String>, ()> {
    let map = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(()),
    };
    if map.is_empty() {
        return Ok(None);
    }
    if map.len() > MAX_PROPS {
        return Err(());
    }
    for (key, item) in map {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_PROP_KEY || key.contains('\0') {
            return Err(());
        }
        let ok = match item {
            Value::String(s) => !s.contains('\0') && s.chars().count() <= MAX_PROP_VALUE,
            Value::Number(n) => n.is_i64(), // u64 above i64 and floats: Python's
            Value::Bool(_) | Value::Null => true,
            Value::Array(_) | Value::Object(_) => false,
        };
        if !ok {
            return Err(());
        }
    }
    let encoded = serde_json::to_string(map).map_err(|_| ())?;
    if encoded.chars().count() > MAX_PROPS_BYTES {
        return Err(());
    }
    Ok(Some(encoded))
}

/// The event in a track body, or `None`: the Python version decides (see the module).
pub fn parse(body: &[u8]) -> Option<Hit> {
    let map: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let known = [
        "event",
        "url",
        "referrer",
        "user_agent",
        "properties",
        "domain",
    ];
    if !map.keys().all(|k| known.contains(&k.as_str())) {
        return None;
    }
    let name = match plain(&map, "event", MAX_NAME).ok()? {
        None => PAGEVIEW.to_string(),
        Some("") => return None, // Python's 422
        Some(name) => name.to_string(),
    };
    let url = plain(&map, "url", MAX_URL).ok()??;
    let (scheme, host, path, fragment) = split_url(url)?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let referrer = match plain(&map, "referrer", MAX_URL).ok()? {
        None | Some("") => None,
        Some(r) => {
            split_url(r)?;
            Some(r.to_string())
        }
    };
    let user_agent = match plain(&map, "user_agent", MAX_USER_AGENT).ok()? {
        None | Some("") => None,
        Some(ua) => Some(ua.to_string()),
    };
    let domain = match plain(&map, "domain", MAX_DOMAIN).ok()? {
        None | Some("") => None,
        Some(d) => Some(d.to_ascii_lowercase()),
    };
    let props = properties(map.get("properties")).ok()?;
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
        host,
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
        let host = |u: &str| split_url(u).map(|p| p.1);
        assert_eq!(host("https://user:pw@A.test.:80/"), Some("a.test".into()));
        assert_eq!(host("https://[::1]/"), Some("[::1]".into()));
        assert_eq!(host("https://./"), Some("".into()));
        assert_eq!(host("https:///x"), None);
    }
}
