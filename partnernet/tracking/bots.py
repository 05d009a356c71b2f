"""Bot detection for tracking links and pixels (CONTRACT §1). PURE: standard library only.

A click is a bot click when it is a ``HEAD`` request, has no or a blank
``User-Agent``, or its agent names a known crawler, link-preview fetcher,
uptime checker or command-line / library HTTP client. Matching is a
case-insensitive substring test against :data:`BOT_TOKENS`.

Speed (issue 7): the tokens are compiled into one regular expression shaped like
a trie (tokens sharing a prefix share one branch), so each position of the agent
is tried against a few branches instead of all ~150 tokens, and the answer for
an agent string is remembered (an LRU of :data:`AGENT_CACHE_SIZE` agents of at
most :data:`AGENT_CACHE_MAX_LEN` characters): the same few browser agents make
most clicks.

The list is deliberately explicit: a generic ``"bot"`` substring would flag
humans (Android phones such as ``CUBOT``), and in-app browsers (Instagram,
Facebook ``FBAN``, TikTok, LinkedIn app, Snapchat, LINE) carry real people, so
none of their tokens is here.

Why our own list and not a library (measured on this code base, per agent string not
in the cache): ``crawlerdetect`` (the CrawlerDetect patterns) takes about 1.4 ms per
agent and ``crawler-user-agents`` (1,500 regular expressions) about 0.3 ms, against
about 7 us for this trie; neither names Mimecast, Proofpoint or Symantec, and
``crawler-user-agents`` flags the Android build ``AP3A.240617.008``, which real phones
(and their Instagram in-app browser) carry. The tokens below are literal strings taken
from those lists and from the vendors' documented agents, grouped by kind; adding one is
a one-line change with a test in ``tests/unit/test_tracking_bots.py``.
"""

from __future__ import annotations

import functools
import re

# CONTRACT §1 and the replay rules (R03) name the first block; the rest are
# well-known crawlers, preview fetchers, monitors and CLI/library clients.
BOT_TOKENS: tuple[str, ...] = (
    # named by the contract / replay rules
    "googlebot", "bingbot", "facebookexternalhit", "twitterbot", "slackbot", "whatsapp",
    "telegrambot", "discordbot", "linkedinbot", "uptimerobot", "curl/",
    # search and AI crawlers
    "adsbot-google", "mediapartners-google", "feedfetcher-google", "google-inspectiontool",
    "googleother", "storebot-google", "apis-google", "duplexweb-google", "google-safety",
    "bingpreview", "msnbot", "adidxbot", "applebot", "yandexbot", "yandex.com/bots", "baiduspider",
    "duckduckbot", "yahoo! slurp", "sogou web spider", "exabot", "petalbot", "seznambot",
    "ahrefsbot", "semrushbot", "mj12bot", "dotbot", "rogerbot", "blexbot", "dataforseobot",
    "bytespider", "gptbot", "chatgpt-user", "oai-searchbot", "claudebot", "claude-web",
    "anthropic-ai", "perplexitybot", "ccbot", "amazonbot", "facebookbot", "meta-externalagent",
    "ia_archiver", "archive.org_bot", "coccocbot", "qwantify",
    # social and chat link-preview fetchers
    "facebookcatalog", "pinterestbot", "redditbot", "embedly", "iframely", "skypeuripreview",
    "vkshare", "quora link preview", "flipboardproxy", "nuzzel", "bitlybot",
    "snap url preview", "mastodon/", "pleroma", "akkoma", "misskey/", "bluesky cardyb",
    "cardyb/", "zoominfobot", "outbrain", "yahoocachesystem", "googleimageproxy",
    "slack-imgproxy", "kakaotalk-scrap", "line-poker",
    # uptime checkers and validators
    "pingdom", "statuscake", "site24x7", "uptime-kuma", "betteruptime", "newrelicpinger",
    "datadog/synthetics", "checkly", "freshping", "hetrixtools", "w3c_validator",
    "w3c-checklink", "chrome-lighthouse", "gtmetrix", "headlesschrome", "phantomjs",
    # email link scanners and safe-link rewriters (CONTRACT §1, v2): Microsoft Office and
    # Outlook (desktop, Mac and mobile clients' own fetches, Safe Links, the link preview
    # service), Mimecast, Barracuda, Proofpoint, Symantec / Broadcom; a person who clicks in
    # a mail client arrives in a browser with that browser's own agent
    "ms-office", "msoffice", "microsoft office", "microsoft outlook", "macoutlook/", "outlook-ios/",
    "outlook-android/", "safelinks", "microsoftpreview/", "microsoft-webdav-miniredir", "mimecast",
    "barracuda", "proofpoint", "symantec", "broadcom",
    # messenger link previews (besides the chat apps above)
    "viber",
    # command-line tools and HTTP libraries
    "wget/", "httpie/", "python-requests/", "python-urllib/", "python-urllib3/", "python-httplib2", "python-httpx/", "aiohttp/",
    "go-http-client/", "java/", "apache-httpclient/", "libwww-perl/", "lwp::simple",
    "lwp-trivial", "postmanruntime/", "insomnia/", "axios/", "node-fetch/", "undici",
    "got (https://github.com/sindresorhus/got)", "ruby/", "faraday v", "guzzlehttp/",
    "php/", "winhttp", "powershell/", "scrapy/", "httpclient/", "libcurl/",
)


AGENT_CACHE_SIZE = 4096
AGENT_CACHE_MAX_LEN = 512


def trie_pattern(tokens) -> str:
    """A regular expression matching exactly where one of ``tokens`` (literal strings) starts:
    the tokens merged into a trie, each node an alternation of its escaped next characters.
    A token that is a prefix of another ends its branch (the shorter one already matches).
    ``re.search(trie_pattern(t), s)`` finds a match iff some token is a substring of ``s``."""
    root: dict = {}
    for token in tokens:
        if not token:
            raise ValueError("empty bot token")
        node = root
        for ch in token:
            node = node.setdefault(ch, {})
        node[""] = {}

    def branch(node: dict) -> str:
        if "" in node:
            return ""
        alts = [re.escape(ch) + branch(child) for ch, child in sorted(node.items())]
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return branch(root)


_BOT_RE = re.compile(trie_pattern(BOT_TOKENS))


def _agent_is_bot(user_agent: str) -> bool:
    ua = user_agent.strip().lower()
    return not ua or _BOT_RE.search(ua) is not None


_cached_agent_is_bot = functools.lru_cache(maxsize=AGENT_CACHE_SIZE)(_agent_is_bot)


def is_bot_agent(user_agent: str | None) -> bool:
    """True when ``user_agent`` is missing, blank, or contains (case-insensitive) one of
    :data:`BOT_TOKENS`. Answers for agents up to :data:`AGENT_CACHE_MAX_LEN` characters are
    cached per process (the answer depends on the string alone)."""
    if user_agent is None:
        return True
    if len(user_agent) <= AGENT_CACHE_MAX_LEN:
        return _cached_agent_is_bot(user_agent)
    return _agent_is_bot(user_agent)


def is_bot(method: str, user_agent: str | None) -> bool:
    """True for a bot request (CONTRACT §1): a ``HEAD`` request, no or a blank
    ``User-Agent``, or a known bot, preview or command-line agent (:func:`is_bot_agent`)."""
    if (method or "").upper() == "HEAD":
        return True
    return is_bot_agent(user_agent)
