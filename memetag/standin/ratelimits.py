"""Discord's per-route rate limits, as the stand-in answers them.

Every API response carries the complete set of headers Discord sends (``X-RateLimit-Limit``,
``-Remaining``, ``-Reset``, ``-Reset-After`` and ``-Bucket``), so discord.py's ``Ratelimit``
learns each bucket's size and, when it runs dry, waits for the reset before it sends again.
A request that arrives while its bucket is empty gets Discord's 429 (``Via`` header, JSON body
with ``retry_after``), which discord.py retries.

A bucket is one route (method and path template) and its major parameter (the channel, guild,
webhook or interaction in the path): two channels never share one. Every route has
``DEFAULT_LIMIT`` requests a ``DEFAULT_PER_S`` window unless a test sets its own with
:meth:`RateLimits.set`; the default is generous enough that a test's pace is the bot's, and a
test that wants Discord's own limits (a message a second in a channel, a reaction a quarter
second) sets them. It is not wide enough for a benchmark on fast cores (a burst of 100 images
there tags ~80 a second): ``bench/bot.py`` opens every bucket wider.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from dataclasses import dataclass

DEFAULT_LIMIT = 50
DEFAULT_PER_S = 1.0
# Path parameters Discord counts as major: each value has buckets of its own (a webhook's or an
# interaction's token stands for the webhook).
MAJOR_PARAMETERS = ("channel_id", "guild_id", "interaction_id", "token")


@dataclass(frozen=True)
class BucketRule:
    """``limit`` requests per ``per_s`` seconds for the requests matching it."""

    method: str  # "PUT", or shell wildcards: "*" for every method
    pattern: str  # relative to /api/v10, shell wildcards: "/channels/*/messages/*/reactions/*"
    limit: int
    per_s: float

    def matches(self, method: str, path: str) -> bool:
        return fnmatch.fnmatchcase(method, self.method) and fnmatch.fnmatchcase(path, self.pattern)


@dataclass
class _Window:
    used: int = 0
    resets_at: float = 0.0  # time.monotonic()


@dataclass(frozen=True)
class Verdict:
    """One request counted in its bucket: the headers to answer with, and whether it is over."""

    headers: dict[str, str]  # the X-RateLimit-* set; a 429 adds its own (rest.rate_limited)
    retry_after: float | None  # seconds until the bucket resets, when the request is over


class RateLimits:
    """The stand-in's buckets (``StandinDiscord.rate_limits``)."""

    def __init__(self) -> None:
        self.rules: list[BucketRule] = []
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self.refused = 0  # requests answered 429 because their bucket was empty

    def set(self, method: str, pattern: str, *, limit: int, per_s: float) -> BucketRule:
        """From now on, ``limit`` requests per ``per_s`` seconds for ``method`` + ``pattern``
        (both may be shell wildcards; the last rule set for a request wins)."""
        if limit < 1 or per_s <= 0:
            raise ValueError("a bucket needs a limit of at least 1 and a positive window")
        rule = BucketRule(method.upper(), pattern, limit, per_s)
        self.rules.append(rule)
        return rule

    def take(self, method: str, route: str, major: str, path: str) -> Verdict:
        """Count one request to ``route`` (its path template) for the major parameter value
        ``major``; ``path`` (the request's own, relative to /api/v10) picks the rule."""
        limit, per_s = DEFAULT_LIMIT, DEFAULT_PER_S
        for rule in reversed(self.rules):
            if rule.matches(method, path):
                limit, per_s = rule.limit, rule.per_s
                break
        now = time.monotonic()
        window = self._windows.setdefault((method, route, major), _Window())
        if now >= window.resets_at:
            window.used, window.resets_at = 0, now + per_s
        over = window.used >= limit
        if not over:
            window.used += 1
        else:
            self.refused += 1
        reset_after = max(0.0, window.resets_at - now)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - window.used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(f"{method} {route}".encode()).hexdigest()[:16],
        }
        return Verdict(headers, reset_after if over else None)
