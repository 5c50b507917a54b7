"""Prints each message to stderr (stdout carries the JSON log lines)."""

from __future__ import annotations

import sys
from typing import TextIO

from notifier.mail.base import Backend, Message, Receipt, as_mime


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
