"""Client-side rate limiting for an LLM endpoint: requests and tokens per minute.

One :class:`RateLimiter` is shared by every concurrent request of a backend.
Both limits are token buckets sized so that no rolling window (a minute, or
``window_s``) ever holds more than the limit: a small burst allowance
(``burst_s`` worth of the rate, at most a tenth of the limit) and a refill rate
of the rest, spread evenly, with a safety ``margin`` for clock skew and network
jitter between this client and the server's counter. Requests therefore go out
evenly rather than in a burst at the top of the minute, which is also what
servers that quantise their limits per second want.

Tokens are estimated before a request (its prompt characters / 4 plus the
completion cap) and reconciled with the usage the server reports afterwards.
The server's own ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` headers
clamp what the buckets allow, and stop new requests until the reset when the
server says nothing is left, so the client slows down before it is refused.
A ``Retry-After`` from a 429 pauses everyone, not just the refused request.

Time comes from ``clock`` and waiting from ``sleep`` (both injectable), so the
arithmetic is tested with a fake clock and no real sleeps.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None) -> float | None:
    """Seconds of an ``x-ratelimit-reset-*`` value: "6m0s", "1s", "20ms", "1h2m3.5s", or a bare number of seconds."""
    if value is None:
        return None
    value = value.strip().lower()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(value):
        if m.start() != pos:
            return None
        n = float(m.group(1))
        total += n * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[m.group(2)]
        pos = m.end()
    return total if pos == len(value) and pos > 0 else None


class TokenBucket:
    """``capacity`` units, refilled at ``rate`` a second. A take may leave it in debt when the
    cost is above the capacity (one request larger than the burst still goes, once the bucket is full)."""

    def __init__(self, capacity: float, rate: float, now: float):
        self.capacity = float(capacity)
        self.rate = float(rate)
        self.level = float(capacity)
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` may be taken (0: now)."""
        self.refill(now)
        need = min(cost, self.capacity) - self.level
        return 0.0 if need <= 1e-9 else need / self.rate

    def take(self, cost: float, now: float) -> None:
        self.refill(now)
        self.level -= cost

    def give(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def clamp(self, most: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.level, most)


def _bucket_for(limit: int, window_s: float, burst_s: float, margin: float, now: float) -> TokenBucket:
    # any window of window_s then holds at most burst + rate * window_s <= limit
    burst = max(1, min(math.floor(limit * burst_s / window_s), limit // 10))
    rate = max(limit - burst, 1) / (window_s * (1 + margin))
    return TokenBucket(burst, rate, now)


@dataclass
class Ticket:
    """What one request took from the limiter; hand it back to :meth:`RateLimiter.settle`."""

    tokens: int
    at: float


class RateLimiter:
    """Requests and tokens per ``window_s`` (60 s: per minute), shared by all concurrent requests."""

    def __init__(
        self,
        requests_per_window: int,
        tokens_per_window: int,
        *,
        window_s: float = 60.0,
        burst_s: float = 1.0,
        margin: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        if requests_per_window < 1 or tokens_per_window < 1 or window_s <= 0:
            raise ValueError("rate limits and window must be positive")
        self.requests_per_window = requests_per_window
        self.tokens_per_window = tokens_per_window
        self.window_s = window_s
        self.clock = clock
        self._sleep = sleep or asyncio.sleep
        now = clock()
        self.requests = _bucket_for(requests_per_window, window_s, burst_s, margin, now)
        self.tokens = _bucket_for(tokens_per_window, window_s, burst_s, margin, now)
        self.blocked_until = now  # set by the server's headers and by Retry-After
        self.waited_s = 0.0  # total time requests spent waiting here (for diagnostics)
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- pure arithmetic (testable without an event loop) -------------------------------------
    def delay(self, tokens: int) -> float:
        """Seconds before a request estimated at ``tokens`` may start (0: now)."""
        now = self.clock()
        return max(self.blocked_until - now, self.requests.wait(1, now), self.tokens.wait(tokens, now), 0.0)

    def try_acquire(self, tokens: int) -> Ticket | None:
        if self.delay(tokens) > 0:
            return None
        now = self.clock()
        self.requests.take(1, now)
        self.tokens.take(tokens, now)
        return Ticket(tokens, now)

    def settle(self, ticket: Ticket, actual_tokens: int | None) -> None:
        """Replace a request's token estimate by what the server reports it used."""
        if actual_tokens is None:
            return
        now = self.clock()
        diff = ticket.tokens - actual_tokens
        if diff > 0:
            self.tokens.give(diff, now)
        elif diff < 0:
            self.tokens.take(-diff, now)
        ticket.tokens = actual_tokens

    def pause(self, seconds: float) -> None:
        """No request starts for ``seconds`` (a Retry-After applies to everyone sharing the limit)."""
        self.blocked_until = max(self.blocked_until, self.clock() + max(0.0, seconds))

    def observe_headers(self, headers: Mapping[str, str], next_tokens: int = 1) -> None:
        """Follow the server's ``x-ratelimit-*`` headers: never allow more than it says remain, and wait
        for its reset when what remains would not cover the next request (``next_tokens``)."""
        now = self.clock()
        for bucket, kind, need in ((self.requests, "requests", 1), (self.tokens, "tokens", next_tokens)):
            raw = headers.get(f"x-ratelimit-remaining-{kind}")
            try:
                remaining = float(raw) if raw is not None else None
            except ValueError:
                remaining = None
            if remaining is None:
                continue
            bucket.clamp(remaining, now)
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining < need and reset:
                self.blocked_until = max(self.blocked_until, now + reset)

    # -- async ----------------------------------------------------------------------------
    async def acquire(self, tokens: int) -> Ticket:
        """Wait until a request of ``tokens`` may start, then take it. Waiters are served first come, first served."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            while True:
                ticket = self.try_acquire(tokens)
                if ticket is not None:
                    return ticket
                wait = self.delay(tokens)
                self.waited_s += wait
                await self._sleep(wait)
