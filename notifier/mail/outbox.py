"""Writes each message as an RFC 5322 ``.eml`` file that any mail client opens."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from email.policy import SMTP
from pathlib import Path

from notifier.mail.base import Backend, Envelope, Message, Receipt, as_mime


class OutboxBackend(Backend):
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: Message, *, deadline: float = 0.0) -> Receipt:
        envelopes = message.envelopes
        paths = [
            write_eml(message, envelope, self.directory, f"-{i}" if len(envelopes) > 1 else "")
            for i, envelope in enumerate(envelopes, 1)
        ]
        return Receipt(self.name, ",".join(str(p) for p in paths))


def write_eml(message: Message, envelope: Envelope, directory: Path, suffix: str = "") -> Path:
    """Write one envelope's copy to ``directory`` atomically; the name sorts by time, is unique,
    and carries the notification id."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"{stamp}-{message.notification_id}{suffix}.eml"
    data = as_mime(message, envelope).as_bytes(policy=SMTP)
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
