"""Delivery backends behind one interface, and the one table of providers that picks one.

Adding a provider is one module (a settings class with ``from_env``, ``secrets`` and
``local_dir``, a backend, and a factory ``(settings, retry) -> Backend``) plus one line in
:data:`PROVIDERS`. A module is imported when it is chosen, or when one of its variables is set
beside another backend (to check it), so an instance loads only the provider it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from notifier import envvars
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
    "checked_settings",
    "create_backend",
    "provider_settings",
]


class ProviderSettings(Protocol):
    """What every provider's settings class offers (a frozen dataclass in its module)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values never to print: scrubbed from errors, redacted from the log."""
        ...

    @property
    def local_dir(self) -> Path | None:
        """Where local state (the ledger, dead letters) goes beside the mail; None: the core defaults."""
        ...


@dataclass(frozen=True, slots=True)
class Provider:
    module: str  # imported when this provider is chosen, or to check its variables when one is set
    settings: str  # class with from_env(env, problems, *, deployed, chosen) -> settings (ProviderSettings)
    factory: str  # callable (settings, retry: RetrySettings) -> Backend
    sends_mail: bool  # real mail to real people: the sender and recipients must be given
    selected_by: str | None = None  # when NOTIFY_BACKEND is unset, this variable being set chooses it
    secret_variables: tuple[str, ...] = ()  # redacted from start-up problems, even if not chosen
    # Every variable from_env reads: one of them set beside another backend still gets it checked.
    variables: tuple[str, ...] = ()


# The order is the order of selection when NOTIFY_BACKEND is unset.
PROVIDERS: dict[str, Provider] = {
    "sendgrid": Provider("notifier.mail.sendgrid", "SendGridSettings", "SendGridBackend", True,
                         "SENDGRID_API_KEY", ("SENDGRID_API_KEY",),
                         ("SENDGRID_API_KEY", "SENDGRID_API_HOST", "SENDGRID_TIMEOUT_SECONDS", "SENDGRID_SANDBOX",
                          "NOTIFY_KEY_SECRET")),
    "smtp": Provider("notifier.mail.smtp", "SmtpSettings", "SmtpBackend", True, "SMTP_URL", ("SMTP_PASSWORD",),
                     ("SMTP_URL", "SMTP_PASSWORD", "SMTP_TIMEOUT_SECONDS", "SENDGRID_TIMEOUT_SECONDS")),
    "outbox": Provider("notifier.mail.outbox", "OutboxSettings", "outbox_backend", False,
                       variables=("NOTIFY_OUTBOX_DIR",)),
    "console": Provider("notifier.mail.console", "ConsoleSettings", "console_backend", False),
}  # fmt: skip
DEFAULT_PROVIDER = "outbox"  # nothing selects another: local runs write .eml files


def provider_settings(
    name: str, env: Mapping[str, str], problems: list[str], *, deployed: bool, chosen: bool = True
) -> Any:
    """The settings of provider ``name`` read from ``env``; each problem appended names its variable.
    Not ``chosen``, only the checks that do not depend on being the backend run (format, numbers,
    a password in a URL): nothing is required."""
    settings_class = _attribute(PROVIDERS[name], "settings")
    return settings_class.from_env(env, problems, deployed=deployed, chosen=chosen)


def checked_settings(
    backend: str | None, env: Mapping[str, str], problems: list[str], *, deployed: bool
) -> ProviderSettings | None:
    """The settings of ``backend`` (None if there is none), every other provider's variables checked too:
    a mistyped SENDGRID_TIMEOUT_SECONDS, or a password in SMTP_URL, stops start-up whatever the backend.
    Unset, a provider's variables cannot be wrong, so its module is imported only when one is set."""
    chosen = None
    for name, provider in PROVIDERS.items():  # in table order, so the problems are too
        if name == backend:
            chosen = provider_settings(name, env, problems, deployed=deployed)
        elif any(envvars.text(env, var) for var in provider.variables):
            provider_settings(name, env, problems, deployed=deployed, chosen=False)
    return chosen


def create_backend(name: str, settings: ProviderSettings, retry: RetrySettings) -> Backend:
    """The backend of provider ``name``, built from its own settings and the core retry values."""
    factory: Callable[[ProviderSettings, RetrySettings], Backend] = _attribute(PROVIDERS[name], "factory")
    return factory(settings, retry)


def _attribute(provider: Provider, role: str) -> Any:
    return getattr(importlib.import_module(provider.module), getattr(provider, role))
