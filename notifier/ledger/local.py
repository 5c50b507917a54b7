"""Dead letters as JSON files in a local folder (deployments without a state bucket, local runs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notifier.ledger.base import (
    DeadLetter,
    DeadLetters,
    UnreadableLetter,
    decode_letter,
    encode_record,
    now_utc,
    too_large,
)


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

    def list(self) -> Iterator[DeadLetter | UnreadableLetter]:
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else ():
            yield self._read(path)

    def _read(self, path: Path) -> DeadLetter | UnreadableLetter:
        """One file, read no further than the limit (a symlink to a device or a huge file included)."""
        try:
            if not path.is_file():
                return UnreadableLetter(path.stem, str(path), "not a regular file")
            if (size := path.stat().st_size) > self.max_bytes:
                return UnreadableLetter(path.stem, str(path), too_large(size, self.max_bytes))
            with path.open("rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as error:
            return UnreadableLetter(path.stem, str(path), f"cannot be read: {error.strerror or error}")
        return decode_letter(path.stem, str(path), data, self.max_bytes)

    def remove(self, notification_id: str) -> None:
        (self.directory / f"{notification_id}.json").unlink(missing_ok=True)
