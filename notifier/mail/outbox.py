"""Writes each message as an RFC 5322 ``.eml`` file that any mail client opens."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.policy import SMTP
from pathlib import Path
from typing import Self

from notifier import envvars
from notifier.mail.base import Backend, Envelope, Message, Receipt, as_mime
from notifier.mail.retry import RetrySettings


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    """Where the ``.eml`` files go (NOTIFY_OUTBOX_DIR); local runs keep their ledger beside them."""

    directory: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str], problems: list[str], *, deployed: bool, chosen: bool) -> Self:
        directory = Path(envvars.text(env, "NOTIFY_OUTBOX_DIR") or "outbox")
        if not chosen:  # only the outbox writes there: another backend leaves it alone
            return cls(directory)
        if deployed:
            problems.append(
                "NOTIFY_BACKEND: outbox on a deployed function (K_SERVICE is set) writes every email to the"
                " instance's scratch disk, where it is lost; use sendgrid or smtp, or console to only log them"
            )
        problems.extend(envvars.writable_directory_problems(directory, "NOTIFY_OUTBOX_DIR"))
        return cls(directory)

    @property
    def secrets(self) -> tuple[str, ...]:
        return ()

    @property
    def local_dir(self) -> Path | None:
        """The ledger and dead letters go beside the ``.eml`` files."""
        return self.directory


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


def outbox_backend(settings: OutboxSettings, retry: RetrySettings) -> OutboxBackend:
    """The factory named in notifier.mail.PROVIDERS: writing a file needs no retry."""
    return OutboxBackend(settings.directory)


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
