"""The scheduled flush's HTTP answer: ``main.py: flush_digests``, which Cloud Scheduler POSTs to
every minute (``deploy/deploy.sh flush``), as ``make sandbox``'s scheduler does locally.

Imported by the flush alone, never on the event path: its cold start stays as it was.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.ledger.base import LedgerError
from notifier.outcomes import RETRYING, SENT

if TYPE_CHECKING:
    from notifier.flush import Flushed
    from notifier.pipeline import Pipeline

METHOD = "POST"  # Cloud Scheduler's: a browser's GET, or a health check, flushes nothing
JSON = {"Content-Type": "application/json"}
Answer = tuple[str, int, dict[str, str]]


def answer(pipeline: Pipeline, method: str) -> Answer:
    """Flush what is due and say what came of it: 200 with counts; 503 when the held events could
    not even be listed (the next minute's run tries again); 405 for any method but POST."""
    if method != METHOD:
        return f"the flush runs on {METHOD} only (Cloud Scheduler's method)\n", 405, {"Allow": METHOD}
    try:
        results = pipeline.flush()
    except LedgerError as error:
        detail = f"the held events could not be listed: {error}"
        log.log(pipeline._log, logging.ERROR, f"flush: {detail}; the next scheduled flush tries again",
                outcome=RETRYING, error=str(error), ledger=pipeline.ledger.name)  # fmt: skip
        return _json({"error": "the held events could not be listed; see the function's log"}), 503, JSON
    except Exception as error:  # noqa: BLE001 - a bug of ours: said once, with its traceback
        log.log(pipeline._log, logging.ERROR, f"flush failed: {type(error).__name__}: {log.cut(str(error))}",
                exc_info=True, outcome=RETRYING)  # fmt: skip
        return _json({"error": "the flush failed; see the function's log"}), 500, JSON
    return _json(summary(results)), 200, JSON


def summary(results: Sequence[Flushed]) -> dict[str, Any]:
    """Counts only (no names, no addresses): runs, digests sent, the events they held, and how
    many runs ended in each outcome."""
    outcomes = Counter(result.outcome for result in results)
    return {
        "runs": len(results),
        "sent": outcomes[SENT],
        "events": sum(result.events for result in results if result.outcome == SENT),
        "outcomes": dict(sorted(outcomes.items())),
    }


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value) + "\n"
