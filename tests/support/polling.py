"""Polling with a deadline: how tests and benchmarks wait for asynchronous
work (workers, servers, clusters) without sleeping for a guessed time."""

import time


def wait_for(condition, timeout=30.0, interval=0.05, message="condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
