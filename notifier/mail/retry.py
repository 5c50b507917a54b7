"""The retry policy every delivery backend uses, declared once (tenacity)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

MIN_ATTEMPT_SECONDS = 1.0  # never start an attempt that could not finish before the deadline


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How a backend retries within one invocation (config.py reads them and holds the defaults)."""

    max_attempts: int  # NOTIFY_MAX_ATTEMPTS
    max_backoff: float  # NOTIFY_MAX_BACKOFF_SECONDS: seconds between retries, at most


def retry_policy(
    *,
    transient: Callable[[BaseException], bool],
    max_attempts: int,
    max_backoff: float,
    deadline: float,
    sleep: Callable[[float], None],
    wait_first: Callable[[RetryCallState], float | None] | None = None,
) -> Retrying:
    """Retry what ``transient`` says, with jittered exponential backoff (or what ``wait_first``
    says, e.g. a rate limit's reset), at most ``max_attempts`` times and never past ``deadline``
    (a ``time.monotonic()`` value)."""
    backoff = wait_random_exponential(multiplier=0.5, max=max_backoff)

    def wait(state: RetryCallState) -> float:
        chosen = wait_first(state) if wait_first else None
        return backoff(state) if chosen is None else chosen

    return Retrying(
        retry=retry_if_exception(transient),
        wait=wait,
        stop=stop_after_attempt(max_attempts) | stop_before_delay(deadline - time.monotonic() - MIN_ATTEMPT_SECONDS),
        sleep=sleep,
        reraise=True,
    )


class RetryingSender:
    """A backend that retries with :func:`retry_policy`; ``sleep`` is swapped by tests."""

    def __init__(self, retry: RetrySettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self._retry = retry
        self.sleep = sleep

    def _retrying(
        self,
        transient: Callable[[BaseException], bool],
        deadline: float,
        wait_first: Callable[[RetryCallState], float | None] | None = None,
    ) -> Retrying:
        return retry_policy(
            transient=transient, max_attempts=self._retry.max_attempts, max_backoff=self._retry.max_backoff,
            deadline=deadline, sleep=self.sleep, wait_first=wait_first,
        )  # fmt: skip
