"""User agents: bot or not, browser family and device class, read once per distinct
string (cached) and then discarded; only the two labels are stored."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Crawlers, headless and automated browsers, HTTP libraries and monitors. Matched
# case-insensitively anywhere in the user agent.
_BOTS = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrape|headless|phantomjs|webdriver|selenium|puppeteer"
    r"|playwright|lighthouse|pagespeed|gtmetrix|pingdom|uptime|monitor|preview|archiver"
    r"|facebookexternalhit|embedly|quora link|whatsapp|telegram|discord|slack|bingpreview"
    r"|google-inspectiontool|feedfetcher|mediapartners|adsbot|apis-google|yandex|baidu"
    r"|curl/|wget/|python-|python/|aiohttp|httpx|okhttp|go-http-client|java/|libwww|perl"
    r"|ruby|php/|node-fetch|axios/|undici|postman|insomnia|http_request|scrapy|nutch",
    re.IGNORECASE,
)

# Order matters: Edge and Opera say "Chrome" too, Chrome says "Safari".
_BROWSERS = (
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Yandex Browser", re.compile(r"YaBrowser/")),
    ("Vivaldi", re.compile(r"Vivaldi/")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/|Chromium/")),
    ("Safari", re.compile(r"Safari/|AppleWebKit/")),
    ("Internet Explorer", re.compile(r"MSIE |Trident/")),
)
_TABLET = re.compile(r"iPad|Tablet|PlayBook|Silk/|Kindle|Nexus (7|9|10)\b", re.IGNORECASE)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android|Windows Phone|BlackBerry|Opera Mini")
_DESKTOP = re.compile(r"Windows NT|Macintosh|X11|Linux x86_64|CrOS")

MAX_LENGTH = 512


@dataclass(frozen=True, slots=True)
class Agent:
    bot: bool
    browser: str
    device: str  # desktop | mobile | tablet | other


@functools.lru_cache(maxsize=4096)
def classify(user_agent: str) -> Agent:
    """What an event needs from a user agent. An empty one is a bot (browsers always
    send one)."""
    if not user_agent.strip() or _BOTS.search(user_agent):
        return Agent(True, "Bot", "other")
    browser = next((name for name, pattern in _BROWSERS if pattern.search(user_agent)), "Other")
    if _TABLET.search(user_agent) or ("Android" in user_agent and "Mobile" not in user_agent):
        device = "tablet"
    elif _MOBILE.search(user_agent):
        device = "mobile"
    elif _DESKTOP.search(user_agent):
        device = "desktop"
    else:
        device = "other"
    return Agent(False, browser, device)
