"""Limits on failed sign-ins, counted with the ``limits`` library in the workers' shared state.

Three counters, so that one person's mistakes or one attacker's guesses lock out as few others
as possible: an account from one address (the strictest: a forgotten password locks only that
account on that machine), an account from everywhere (guessing spread over many addresses), and
an address over every account (password spraying). Behind a trusted reverse proxy the address
is the client's own, from its ``X-Forwarded-For``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from dashboards.config import DashboardSettings


@dataclass
class SignInLimiter:
    """Refuses sign-in attempts after too many recent failures; says how long to wait."""

    storage: Storage
    per_account_and_address: int
    per_account: int
    per_address: int
    window_s: int
    _limiter: FixedWindowRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(self.storage)

    @classmethod
    def from_settings(cls, storage: Storage, settings: DashboardSettings) -> SignInLimiter:
        """The limiter the settings describe, over ``storage``."""
        return cls(
            storage,
            settings.max_failed_signins,
            settings.max_failed_signins_per_account,
            settings.max_failed_signins_per_address,
            settings.signin_window_s,
        )

    def _counters(self, user: str, address: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        def item(amount: int, namespace: str) -> RateLimitItem:
            return RateLimitItemPerSecond(amount, self.window_s, namespace=namespace)

        return [
            (item(self.per_account_and_address, "signin-account-address"), (user, address)),
            (item(self.per_account, "signin-account"), (user,)),
            (item(self.per_address, "signin-address"), (address,)),
        ]

    def retry_after(self, user: str, address: str) -> float:
        """Seconds before another attempt is allowed for this user from this address (0: now)."""
        now = time.time()
        waits = [
            self._limiter.get_window_stats(item, *ids).reset_time - now
            for item, ids in self._counters(user, address)
            if not self._limiter.test(item, *ids)
        ]
        return max(waits, default=0.0)

    def failed(self, user: str, address: str) -> None:
        """Count a failed attempt."""
        for item, ids in self._counters(user, address):
            self._limiter.hit(item, *ids)

    def succeeded(self, user: str, address: str) -> None:
        """Forget this account's failures from this address once it signs in from there."""
        item, ids = self._counters(user, address)[0]
        self._limiter.clear(item, *ids)
