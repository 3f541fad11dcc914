"""The client-side rate limiter, with a fake clock: no real sleeps."""

from __future__ import annotations

import asyncio
from bisect import bisect_right

import pytest

from medfilip.extraction.ratelimit import RateLimiter, parse_reset


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)


def limiter(rpm: int, tpm: int = 10**9, **kw) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rpm, tpm, clock=clock, sleep=clock.sleep, **kw), clock


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(bisect_right(times, t + window - 1e-9) - i for i, t in enumerate(times))


def run_requests(
    lim: RateLimiter, clock: FakeClock, n: int, tokens: int = 1, concurrency: int = 8, actual: int | None = None
) -> list[float]:
    """n requests by `concurrency` workers; each settles with `actual` tokens right after starting."""
    starts: list[float] = []

    async def main() -> None:
        remaining = iter(range(n))

        async def worker() -> None:
            for _ in remaining:
                ticket = await lim.acquire(tokens)
                starts.append(clock())
                lim.settle(ticket, actual)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(main())
    return starts


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("12", 12.0),
        ("1m30s", 90.0),
        (" 250ms ", 0.25),
    ],
)
def test_parse_reset_formats(value, seconds):
    assert parse_reset(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "5x", "1s2"])
def test_parse_reset_rejects_garbage(value):
    assert parse_reset(value) is None


def test_requests_never_exceed_the_limit_in_any_rolling_window():
    lim, clock = limiter(60)
    t0 = clock()
    starts = run_requests(lim, clock, 600)
    assert max_in_window(starts, 60.0) <= 60
    span = starts[-1] - t0
    # evenly spread at ~the limit: 600 requests at 60/min take about 10 minutes, not more
    assert 600 / (span / 60) >= 0.95 * 60
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) < 1.1  # no stall at the top of a minute: requests go out evenly


def test_a_small_window_scales_the_limit():
    lim, clock = limiter(20, window_s=1.0)
    starts = run_requests(lim, clock, 200)
    assert max_in_window(starts, 1.0) <= 20
    assert 200 / (starts[-1] - starts[0]) >= 0.85 * 20


def test_token_estimates_are_reconciled_with_actual_usage():
    # 2,000 tokens estimated a request, 10,000 a minute: 5 requests a minute without reconciliation
    lim, clock = limiter(1000, 10_000)
    starts = run_requests(lim, clock, 50, tokens=2000)
    assert max_in_window(starts, 60.0) <= 5
    # the server reports 500 used: the 1,500 held back are given back, 20 a minute fit
    lim, clock = limiter(1000, 10_000)
    starts = run_requests(lim, clock, 100, tokens=2000, actual=500)
    assert 17 <= 100 / ((starts[-1] - starts[0]) / 60) <= 21


def test_a_request_larger_than_the_burst_still_goes():
    lim, clock = limiter(100, 1000)  # burst of tokens: 16
    starts = run_requests(lim, clock, 3, tokens=900, concurrency=1)
    assert len(starts) == 3 and starts[-1] - starts[0] < 2 * 60


def test_server_headers_clamp_and_pause():
    lim, clock = limiter(600)
    assert lim.delay(1) == 0
    lim.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"})
    assert lim.delay(1) == pytest.approx(2.0)
    clock.t += 2.0
    assert lim.delay(1) == 0

    lim, clock = limiter(600, 10**6)
    lim.observe_headers({"x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "6m0s"}, next_tokens=800)
    assert lim.delay(800) == pytest.approx(360.0)

    lim, clock = limiter(6000)  # a burst of 100, but the server says 3 remain
    lim.observe_headers({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "20ms"})
    granted = [lim.try_acquire(1) is not None for _ in range(5)]
    assert granted == [True, True, True, False, False]


def test_retry_after_pauses_everyone():
    lim, clock = limiter(600)
    lim.pause(1.5)
    assert lim.delay(1) == pytest.approx(1.5)
    starts = run_requests(lim, clock, 3)
    assert min(starts) >= 1000.0 + 1.5


def test_waiters_are_served_in_order():
    lim, clock = limiter(60)
    order: list[int] = []

    async def main() -> None:
        async def one(i: int) -> None:
            await lim.acquire(1)
            order.append(i)

        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert order == list(range(20))
