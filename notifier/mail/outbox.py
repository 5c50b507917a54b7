"""Writes each message as an RFC 5322 ``.eml`` file that any mail client opens."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from email.policy import SMTP
from pathlib import Path

from notifier.mail.base import Backend, Message, Receipt, as_mime


class OutboxBackend(Backend):
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: Message, *, deadline: float = 0.0) -> Receipt:
        path = write_eml(message, self.directory)
        return Receipt(self.name, str(path))


def write_eml(message: Message, directory: Path) -> Path:
    """Write ``message`` to ``directory`` atomically; the name sorts by time and is unique."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"{stamp}-{message.notification_id}.eml"
    data = as_mime(message).as_bytes(policy=SMTP)
    # Write then rename, so a reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
