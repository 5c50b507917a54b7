"""Dead letters as JSON files in a local folder (deployments without a state bucket, local runs)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notifier.ledger import DeadLetter, DeadLetters, encode_record, now_utc


class LocalDeadLetters(DeadLetters):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.location = str(directory)

    def put(self, notification_id: str, record: dict[str, Any]) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{notification_id}.json"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(encode_record({"created": now_utc().isoformat(), **record}))
        os.replace(tmp, path)  # a reader never sees half a file
        return str(path)

    def list(self) -> Iterator[DeadLetter]:
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else ():
            record = json.loads(path.read_text(encoding="utf-8"))
            yield DeadLetter(path.stem, record.get("created", ""), record)

    def remove(self, notification_id: str) -> None:
        (self.directory / f"{notification_id}.json").unlink(missing_ok=True)
