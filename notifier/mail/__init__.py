"""Delivery backends behind one interface; :func:`create_backend` picks one from settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.mail.base import Backend, DeliveryError, Message, Receipt

if TYPE_CHECKING:
    from notifier.config import Settings

__all__ = ["Backend", "DeliveryError", "Message", "Receipt", "create_backend"]


def create_backend(settings: Settings) -> Backend:
    # Imported here so an instance loads only the provider it uses.
    if settings.backend == "sendgrid":
        from notifier.mail.sendgrid import SendGridBackend

        return SendGridBackend(settings)
    if settings.backend == "smtp":
        from notifier.mail.smtp import SmtpBackend

        return SmtpBackend(settings)
    if settings.backend == "console":
        from notifier.mail.console import ConsoleBackend

        return ConsoleBackend()
    from notifier.mail.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)
