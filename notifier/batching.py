"""A rule's digest or cap, as ``notify.toml`` gives it: the one value the rule keys build, and their
limits. Apart from :mod:`notifier.digest` so that reading rules does not load the digest machinery
(a cold start of a deployment without digests pays for neither)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GROUP_FIELDS = ("bucket", "folder", "kind")  # what `group_by` may name
MIN_WINDOW = 60.0  # the flush runs once a minute: a shorter window would not close sooner
MAX_WINDOW = 86400.0  # a held event waits at most a day: the platform's own redelivery horizon
MAX_CAP = 10_000  # max_emails: more single emails than this per period is no cap
DEFAULT_MAX_WAIT = 3600.0  # digest_max_wait when not set (never less than the digest itself)


@dataclass(frozen=True, slots=True)
class Batching:
    """A rule's digest or cap (the ``digest``, ``digest_max_wait``, ``group_by`` and ``max_emails``
    keys). ``cap`` None: a digest of every event, windows of ``window`` seconds merged up to
    ``max_wait``; else the first ``cap`` events of each ``window`` are sent alone."""

    window: float
    max_wait: float
    group_by: tuple[str, ...] = ()
    cap: int | None = None

    @classmethod
    def digest(cls, window: float, max_wait: float | None = None, group_by: Iterable[str] = ()) -> Batching:
        wait = max(window, DEFAULT_MAX_WAIT) if max_wait is None else max_wait
        return cls(window, wait, tuple(group_by))

    @classmethod
    def capped(cls, count: int, period: float, group_by: Iterable[str] = ()) -> Batching:
        return cls(period, period, tuple(group_by), count)
