"""Prints each message to stderr (stdout carries the JSON log lines)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TextIO

from notifier.mail.base import Backend, Message, Receipt, as_mime
from notifier.mail.retry import RetrySettings


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """The console backend has no variables of its own."""

    @classmethod
    def from_env(cls, env: Mapping[str, str], problems: list[str], *, deployed: bool, chosen: bool) -> Self:
        return cls()

    @property
    def secrets(self) -> tuple[str, ...]:
        return ()

    @property
    def local_dir(self) -> Path | None:
        return None


class ConsoleBackend(Backend):
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, message: Message, *, deadline: float = 0.0) -> Receipt:
        stream = self._stream or sys.stderr
        for envelope in message.envelopes:
            stream.write(f"{as_mime(message, envelope).as_string()}\n{'-' * 72}\n")
        stream.flush()
        return Receipt(self.name, message.notification_id)


def console_backend(settings: ConsoleSettings, retry: RetrySettings) -> ConsoleBackend:
    """The factory named in notifier.mail.PROVIDERS."""
    return ConsoleBackend()
