"""Delivery backends behind one interface, and the one table of providers that picks one.

Adding a provider is one module (a settings class with ``from_env`` and ``secrets``, a backend,
and a factory ``(settings, retry) -> Backend``) plus one line in :data:`PROVIDERS`. Each module is
imported only when it is chosen, so an instance loads only the provider it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from notifier.mail.base import Backend, DeliveryError, Message, Receipt
from notifier.mail.retry import RetrySettings

__all__ = [
    "DEFAULT_PROVIDER",
    "PROVIDERS",
    "Backend",
    "DeliveryError",
    "Message",
    "Provider",
    "ProviderSettings",
    "Receipt",
    "RetrySettings",
    "create_backend",
    "provider_settings",
]


class ProviderSettings(Protocol):
    """What every provider's settings class offers (a frozen dataclass in its module)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values never to print: scrubbed from errors, redacted from the log."""
        ...


@dataclass(frozen=True, slots=True)
class Provider:
    module: str  # imported only when this provider is chosen
    settings: str  # class with from_env(env, problems, *, deployed) -> settings, and .secrets
    factory: str  # callable (settings, retry: RetrySettings) -> Backend
    sends_mail: bool  # real mail to real people: the sender and recipients must be given
    selected_by: str | None = None  # when NOTIFY_BACKEND is unset, this variable being set chooses it
    secret_variables: tuple[str, ...] = ()  # redacted from start-up problems, even if not chosen


# The order is the order of selection when NOTIFY_BACKEND is unset.
PROVIDERS: dict[str, Provider] = {
    "sendgrid": Provider("notifier.mail.sendgrid", "SendGridSettings", "SendGridBackend", True,
                         "SENDGRID_API_KEY", ("SENDGRID_API_KEY",)),
    "smtp": Provider("notifier.mail.smtp", "SmtpSettings", "SmtpBackend", True, "SMTP_URL", ("SMTP_PASSWORD",)),
    "outbox": Provider("notifier.mail.outbox", "OutboxSettings", "outbox_backend", False),
    "console": Provider("notifier.mail.console", "ConsoleSettings", "console_backend", False),
}  # fmt: skip
DEFAULT_PROVIDER = "outbox"  # nothing selects another: local runs write .eml files


def provider_settings(name: str, env: Mapping[str, str], problems: list[str], *, deployed: bool) -> Any:
    """The settings of provider ``name`` read from ``env``; each problem appended names its variable."""
    settings_class = _attribute(PROVIDERS[name], "settings")
    return settings_class.from_env(env, problems, deployed=deployed)


def create_backend(name: str, settings: ProviderSettings, retry: RetrySettings) -> Backend:
    """The backend of provider ``name``, built from its own settings and the core retry values."""
    factory: Callable[[ProviderSettings, RetrySettings], Backend] = _attribute(PROVIDERS[name], "factory")
    return factory(settings, retry)


def _attribute(provider: Provider, role: str) -> Any:
    return getattr(importlib.import_module(provider.module), getattr(provider, role))
