//! The pixel's common case, decided in one call: site rules, bot filter, privacy
//! headers, visitor and session ids, sampling and the buffer push.
//!
//! This is a cache of `PixelIngest._decide` (`core_api/pixel/ingest.py`), which stays the
//! authority. The gate answers only from what Python taught it: sites (per host, at an
//! invalidation-log head), user-agent classes and today's keys. Anything else (an unknown
//! host or agent, a stale head, a new day, a glob in the excluded paths, an origin or a
//! header that needs Unicode rules, every error) is [`Verdict::Defer`], and Python decides,
//! then teaches the gate what it learnt. Nothing is changed by a deferred call.

use std::collections::HashMap;

use crate::pixel::{Event, EventBuffer, Sessions};
use crate::pixel_hit::{trim_by, url_parts, Hit};

pub const DAY_MS: i64 = 86_400_000;
/// Bounds of the learnt tables (the Python caches are bounded alike); cleared when full.
pub const MAX_SITES: usize = 10_000;
pub const MAX_AGENTS: usize = 4_096;
const PAGEVIEW: &str = "pageview";

/// What the gate knows of an enabled site (`Site` in `core_api/pixel/sites.py`).
#[derive(Clone, Debug)]
pub struct SiteRule {
    pub id: i64,
    pub workspace_id: i64,
    pub domain: String,
    pub allowed_origins: Vec<String>,
    pub honor_dnt: bool,
    pub pageviews: bool,
    pub events: bool,
    pub sessions: bool,
    pub sample_rate: f64,
    /// The excluded paths, each without trailing `/` (prefixes only: a site with a glob
    /// is never learnt).
    pub excluded_prefixes: Vec<String>,
}

impl SiteRule {
    /// `Site.allows_origin(host)` for a host that `url_parts` produced, lower-cased.
    fn allows(&self, host: &str) -> bool {
        let host = if normalized(host) { host } else { "" };
        if host == self.domain || host.strip_prefix("www.") == Some(self.domain.as_str()) {
            return true;
        }
        self.allowed_origins.iter().any(|allowed| {
            if let Some(suffix) = allowed.strip_prefix('*').filter(|s| s.starts_with('.')) {
                host.ends_with(suffix) && host.len() > suffix.len()
            } else {
                host == allowed
            }
        })
    }

    /// `privacy.excluded(path, patterns)` for prefix patterns.
    fn excludes(&self, path: &str) -> bool {
        self.excluded_prefixes.iter().any(|base| {
            path == base
                || (path.starts_with(base.as_str()) && path[base.len()..].starts_with('/'))
                || (base.is_empty() && path.starts_with('/'))
        })
    }
}

/// Whether `normalize_host` keeps a host that `url_parts` produced (lower-cased): it
/// refuses IPv6 literals, over-long names and empty or over-long labels.
fn normalized(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('[')
        && host.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

/// A user agent's class (`Agent` in `core_api/pixel/useragent.py`).
#[derive(Clone, Debug)]
pub struct AgentClass {
    pub bot: bool,
    pub browser: String,
    pub device: String,
}

/// The parts of the request the rules read besides the body (never stored).
pub struct Request<'a> {
    pub ip: &'a str,
    /// The `User-Agent` header as sent (used when the body names none).
    pub user_agent: &'a [u8],
    pub origin: Option<&'a [u8]>,
    pub dnt: Option<&'a [u8]>,
    pub gpc: Option<&'a [u8]>,
    pub now_ms: i64,
    /// The invalidation log's head now: learnt sites are valid only at the head they were
    /// learnt at.
    pub head: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Buffered; the site's workspace (usage) and the events now pending.
    Tracked {
        workspace_id: i64,
        pending: usize,
    },
    /// A bot: counted per site and day by the caller, not stored.
    Bot {
        site_id: i64,
    },
    DoNotTrack,
    ExcludedPath,
    FeatureDisabled,
    SampledOut,
    /// The buffer is full: 503.
    Full,
    /// Python decides (the gate changed nothing).
    Defer,
}

#[derive(Default)]
pub struct Gate {
    head: u64,
    sites: HashMap<String, SiteRule>,
    agents: HashMap<Vec<u8>, AgentClass>,
    day: i64,
    keys: Option<([u8; 16], Option<[u8; 16]>)>,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn `host`'s site as read at log head `head`. False (nothing learnt) for a head
    /// older than one already seen, or a site whose excluded paths hold a glob.
    pub fn learn_site(&mut self, host: &str, head: u64, site: SiteRule) -> bool {
        if !self.at_head(head)
            || site
                .excluded_prefixes
                .iter()
                .any(|p| p.contains(['*', '?', '[']))
        {
            return false;
        }
        if self.sites.len() >= MAX_SITES {
            self.sites.clear();
        }
        let mut site = site;
        for prefix in &mut site.excluded_prefixes {
            prefix.truncate(prefix.trim_end_matches('/').len());
        }
        self.sites.insert(host.to_owned(), site);
        true
    }

    /// Learn a user agent's class (ASCII agents only: others are hashed from Python's
    /// text, which the raw header bytes would not match).
    pub fn learn_agent(&mut self, user_agent: &str, class: AgentClass) {
        if !user_agent.is_ascii() {
            return;
        }
        if self.agents.len() >= MAX_AGENTS {
            self.agents.clear();
        }
        self.agents.insert(user_agent.as_bytes().to_vec(), class);
    }

    /// Today's key and yesterday's (if kept) for UTC day `day`.
    pub fn learn_keys(&mut self, day: i64, today: [u8; 16], previous: Option<[u8; 16]>) {
        self.day = day;
        self.keys = Some((today, previous));
    }

    /// Forget everything learnt (the salts were rotated or the process is resetting).
    pub fn forget(&mut self) {
        self.sites.clear();
        self.agents.clear();
        self.keys = None;
    }

    /// True when `head` is the current head; a newer head clears the learnt sites.
    fn at_head(&mut self, head: u64) -> bool {
        if head > self.head {
            self.head = head;
            self.sites.clear();
        }
        head == self.head
    }

    /// `_decide` for `hit`, from what was learnt; on `Tracked` the hit's name, path and
    /// properties were moved into the buffered event.
    pub fn decide(
        &mut self,
        hit: &mut Hit,
        req: &Request<'_>,
        sessions: &mut Sessions,
        buffer: &mut EventBuffer,
    ) -> Verdict {
        if !self.at_head(req.head) {
            return Verdict::Defer;
        }
        let Some(site) = self.sites.get(hit.domain.as_deref().unwrap_or(&hit.host)) else {
            return Verdict::Defer;
        };
        if hit.domain.is_some() && !site.allows(&hit.host) {
            return Verdict::Defer; // 403 from Python
        }
        match origin_host(req.origin) {
            Err(()) => return Verdict::Defer,
            Ok(Some(origin)) if origin != hit.host && !site.allows(&origin) => {
                return Verdict::Defer; // 403 from Python
            }
            Ok(_) => {}
        }
        let user_agent = match hit.user_agent.as_deref().filter(|ua| !ua.is_empty()) {
            Some(ua) => ua.as_bytes(),
            None => req.user_agent,
        };
        let Some(agent) = self.agents.get(user_agent) else {
            return Verdict::Defer;
        };
        if agent.bot {
            return Verdict::Bot { site_id: site.id };
        }
        if site.honor_dnt && (req.dnt.is_some() || req.gpc.is_some()) {
            match (is_one(req.dnt), is_one(req.gpc)) {
                (Some(dnt), Some(gpc)) if dnt || gpc => return Verdict::DoNotTrack,
                (Some(_), Some(_)) => {}
                _ => return Verdict::Defer, // a byte outside ASCII: Python's strip rules
            }
        }
        if site.excludes(&hit.path) {
            return Verdict::ExcludedPath;
        }
        if !(if hit.name == PAGEVIEW {
            site.pageviews
        } else {
            site.events
        }) {
            return Verdict::FeatureDisabled;
        }
        if buffer.is_full() {
            return Verdict::Full;
        }
        let Some((key, previous)) = self
            .keys
            .as_ref()
            .filter(|_| self.day == req.now_ms.div_euclid(DAY_MS))
        else {
            return Verdict::Defer;
        };
        let source = match hit.referrer.as_deref() {
            None => None,
            Some(referrer) => match referrer_source(site, &hit.host, referrer) {
                Ok(source) => source,
                Err(()) => return Verdict::Defer,
            },
        };
        let ip = req.ip.as_bytes();
        let (visitor, session) =
            sessions.identify(key, previous.as_ref(), site.id, ip, user_agent, req.now_ms);
        let rate = site.sample_rate;
        if rate < 1.0 && ((visitor as u64) & 0xFFFF_FFFF) as f64 >= rate * 4_294_967_296.0 {
            return Verdict::SampledOut;
        }
        let event = Event {
            site_id: site.id,
            ts: req.now_ms,
            name: std::mem::take(&mut hit.name),
            path: std::mem::take(&mut hit.path),
            referrer_source: source,
            visitor_id: visitor,
            session_id: site.sessions.then_some(session),
            browser: agent.browser.clone(),
            device: agent.device.clone(),
            props: hit.props.take(),
        };
        if !buffer.push(event) {
            return Verdict::Full;
        }
        Verdict::Tracked {
            workspace_id: site.workspace_id,
            pending: buffer.pending(),
        }
    }
}

/// `host_of(origin)`: Ok(None) for no origin, "" or "null"; Err when only Python's
/// `split_url` can say (bytes outside printable ASCII, or a form it may accept).
fn origin_host(origin: Option<&[u8]>) -> Result<Option<String>, ()> {
    let Some(origin) = origin.filter(|o| !o.is_empty() && *o != b"null") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(origin).map_err(|_| ())?;
    url_host(text).map(Some)
}

/// The lower-cased host of a URL as `host_of` reads it; Err where only Python can say.
fn url_host(url: &str) -> Result<String, ()> {
    let (_, host, _, _) = url_parts(url).ok_or(())?;
    Ok(host.to_ascii_lowercase())
}

/// `PixelIngest._source`: the referrer's host without `www.`, None for internal
/// navigation.
fn referrer_source(site: &SiteRule, page_host: &str, referrer: &str) -> Result<Option<String>, ()> {
    if referrer == "null" {
        return Ok(None);
    }
    let host = url_host(referrer)?;
    let source = bare(&host);
    if source == bare(page_host) || site.allows(source) {
        return Ok(None);
    }
    Ok(Some(source.to_owned()))
}

fn bare(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

/// `value.strip() == "1"` (None when absent); `None` for a byte outside ASCII, whose
/// whitespace rules are Python's.
fn is_one(value: Option<&[u8]>) -> Option<bool> {
    let Some(value) = value else {
        return Some(false);
    };
    if !value.is_ascii() {
        return None;
    }
    // str.isspace() in ASCII: \t \n \v \f \r, the separators \x1c-\x1f, and space.
    let value = trim_by(value, |b| matches!(b, b'\t'..=b'\r' | 0x1c..=0x1f | b' '));
    Some(value == b"1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel_hit::parse;

    fn site() -> SiteRule {
        SiteRule {
            id: 7,
            workspace_id: 3,
            domain: "example.com".into(),
            allowed_origins: vec!["*.cdn.example.net".into(), "partner.org".into()],
            honor_dnt: true,
            pageviews: true,
            events: true,
            sessions: true,
            sample_rate: 1.0,
            excluded_prefixes: vec!["/admin/".into()],
        }
    }

    fn chrome() -> AgentClass {
        AgentClass {
            bot: false,
            browser: "Chrome".into(),
            device: "desktop".into(),
        }
    }

    fn request(origin: Option<&'static [u8]>) -> Request<'static> {
        Request {
            ip: "203.0.113.9",
            user_agent: b"Mozilla/5.0 Chrome/120",
            origin,
            dnt: None,
            gpc: None,
            now_ms: 5 * DAY_MS + 1_000,
            head: 1,
        }
    }

    fn taught() -> Gate {
        let mut gate = Gate::new();
        assert!(gate.learn_site("example.com", 1, site()));
        gate.learn_agent("Mozilla/5.0 Chrome/120", chrome());
        gate.learn_keys(5, [1; 16], None);
        gate
    }

    fn run(gate: &mut Gate, body: &str, req: &Request<'_>) -> (Verdict, EventBuffer) {
        let mut hit = parse(body.as_bytes()).expect("a common-case body");
        let mut sessions = Sessions::new(100, 1_800_000);
        let mut buffer = EventBuffer::new(10);
        (
            gate.decide(&mut hit, req, &mut sessions, &mut buffer),
            buffer,
        )
    }

    const PAGE: &str = r#"{"url":"https://example.com/a?q=1","referrer":"https://www.news.org/x"}"#;

    #[test]
    fn tracks_a_learnt_page_view() {
        let (verdict, mut buffer) =
            run(&mut taught(), PAGE, &request(Some(b"https://example.com")));
        assert_eq!(
            verdict,
            Verdict::Tracked {
                workspace_id: 3,
                pending: 1
            }
        );
        let event = &buffer.take(1).events[0];
        assert_eq!(
            (event.site_id, event.name.as_str(), event.path.as_str()),
            (7, "pageview", "/a")
        );
        assert_eq!(event.referrer_source.as_deref(), Some("news.org"));
        assert_eq!(
            (event.browser.as_str(), event.device.as_str()),
            ("Chrome", "desktop")
        );
    }

    #[test]
    fn defers_what_it_was_not_taught() {
        let req = request(None);
        assert_eq!(run(&mut Gate::new(), PAGE, &req).0, Verdict::Defer); // no site
        let mut gate = taught();
        gate.learn_keys(4, [1; 16], None);
        assert_eq!(run(&mut gate, PAGE, &req).0, Verdict::Defer); // yesterday's keys
        let mut gate = taught();
        let stale = Request {
            head: 2,
            ..request(None)
        };
        assert_eq!(run(&mut gate, PAGE, &stale).0, Verdict::Defer); // the log moved
        assert!(!gate.learn_site("example.com", 1, site())); // an older read is refused
        let other_agent = Request {
            user_agent: b"curl/8",
            ..request(None)
        };
        assert_eq!(run(&mut taught(), PAGE, &other_agent).0, Verdict::Defer);
    }

    #[test]
    fn leaves_errors_to_python() {
        let foreign = request(Some(b"https://evil.test"));
        assert_eq!(run(&mut taught(), PAGE, &foreign).0, Verdict::Defer);
        let unicode = request(Some("https://ex\u{e4}mple.com".as_bytes()));
        assert_eq!(run(&mut taught(), PAGE, &unicode).0, Verdict::Defer);
        let allowed = request(Some(b"https://a.cdn.example.net"));
        assert!(matches!(
            run(&mut taught(), PAGE, &allowed).0,
            Verdict::Tracked { .. }
        ));
        let parent = request(Some(b"https://cdn.example.net"));
        assert_eq!(run(&mut taught(), PAGE, &parent).0, Verdict::Defer);
    }

    #[test]
    fn applies_the_site_rules_in_order() {
        let mut req = request(None);
        req.dnt = Some(b" 1\t");
        assert_eq!(run(&mut taught(), PAGE, &req).0, Verdict::DoNotTrack);
        req.dnt = Some(b"1\xa0");
        assert_eq!(run(&mut taught(), PAGE, &req).0, Verdict::Defer);
        let req = request(None);
        let admin = r#"{"url":"https://example.com/admin"}"#;
        assert_eq!(run(&mut taught(), admin, &req).0, Verdict::ExcludedPath);
        let admins = r#"{"url":"https://example.com/administrator"}"#;
        assert!(matches!(
            run(&mut taught(), admins, &req).0,
            Verdict::Tracked { .. }
        ));
        let mut gate = taught();
        gate.learn_agent(
            "Mozilla/5.0 Chrome/120",
            AgentClass {
                bot: true,
                ..chrome()
            },
        );
        assert_eq!(run(&mut gate, PAGE, &req).0, Verdict::Bot { site_id: 7 });
        let mut gate = Gate::new();
        gate.learn_site(
            "example.com",
            1,
            SiteRule {
                sample_rate: 0.0,
                ..site()
            },
        );
        gate.learn_agent("Mozilla/5.0 Chrome/120", chrome());
        gate.learn_keys(5, [1; 16], None);
        assert_eq!(run(&mut gate, PAGE, &req).0, Verdict::SampledOut);
    }

    #[test]
    fn a_glob_site_is_never_learnt() {
        let mut gate = Gate::new();
        let glob = SiteRule {
            excluded_prefixes: vec!["/blog/*".into()],
            ..site()
        };
        assert!(!gate.learn_site("example.com", 1, glob));
    }

    #[test]
    fn strips_like_python() {
        assert_eq!(is_one(Some(b"\x1f1\x0b")), Some(true));
        assert_eq!(is_one(Some(b"1 0")), Some(false));
        assert_eq!(is_one(Some(b"")), Some(false));
        assert_eq!(is_one(None), Some(false));
    }
}
