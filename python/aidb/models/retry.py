"""Backoff for transient provider failures (429, 5xx, timeouts, dropped
connections): exponential with jitter, honouring Retry-After, bounded."""

import email.utils
import random
import time
from dataclasses import dataclass


class TransientFailure(Exception):
    """One request failed in a way that may succeed if tried again later."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    max_retries: int = 5          # retries after the first attempt
    base_delay: float = 0.5       # seconds before the first retry
    max_delay: float = 30.0       # cap of the exponential part
    max_retry_after: float = 120.0  # a server asking for longer is capped here

    def delay(self, attempt, retry_after=None):
        """Seconds to wait before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff = min(self.base_delay * (2 ** attempt), self.max_delay)
        return backoff * random.uniform(0.8, 1.2)


def parse_retry_after(value):
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
