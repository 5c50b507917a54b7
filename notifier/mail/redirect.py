"""NOTIFY_REDIRECT_TO (staging): every message goes to one address, which is told whom it was meant for."""

from __future__ import annotations

from dataclasses import replace

from notifier.addresses import Address, unique
from notifier.mail.base import Backend, Envelope, Message, Receipt
from notifier.mail.headers import one_line

ORIGINAL_RECIPIENTS = "X-Original-Recipients"
ORIGINAL_RECIPIENTS_LIMIT = 2000  # characters; a longer list is cut with "…" (the header is folded)


def redirected(message: Message, to: Address) -> Message:
    """``message`` as one copy to ``to``, the intended recipients named in a header."""
    intended = unique(a for e in message.envelopes for a in (*e.to, *e.cc, *e.bcc))
    header = one_line(", ".join(str(a) for a in intended), limit=ORIGINAL_RECIPIENTS_LIMIT)
    return replace(message, envelopes=(Envelope(to=(to,)),), headers={**message.headers, ORIGINAL_RECIPIENTS: header})


class RedirectBackend(Backend):
    """Sends through ``inner``, every message redirected to ``to``. The body's own note ("meant
    for ...") is the renderer's: it is told the recipients are redirected."""

    def __init__(self, inner: Backend, to: Address) -> None:
        self.inner = inner
        self.to = to
        self.name = inner.name  # logged as the backend that sends

    def send(self, message: Message, *, deadline: float) -> Receipt:
        return self.inner.send(redirected(message, self.to), deadline=deadline)
