"""One thread per process that shuts the sockets of reads still running at their deadline.

A socket timeout bounds each read, not a whole answer or request body: a peer sending one byte a
second never idles. Shutting the socket down makes a read blocked on it return at once, on its own
thread, with no thread hop per request. Used for every outbound request (notifier.httpclient) and
for request bodies at the HTTP edge (notifier.http).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from notifier.log import get_logger, log


def watching(sock: socket.socket | Callable[[], socket.socket | None], deadline: float) -> _Watch:
    """``with watching(sock, deadline) as watch:`` the socket is shut down if the block is still
    running at ``deadline`` (a ``time.monotonic()`` value); ``watch.fired`` then says so. ``sock``
    may be a function returning the socket at that moment (a connection that opens or reopens
    inside the block), or None when there is none."""
    return _WATCHDOG.watching(sock, deadline)


class _Watchdog:
    """Shuts the sockets of requests that outlive their deadline."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Empty, with no thread yet; also in a forked child, where the thread did not survive."""
        self._watched: dict[int, _Watch] = {}
        self._wakes_at = float("inf")
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def watching(self, sock: socket.socket, deadline: float) -> _Watch:
        return _Watch(self, sock, deadline)

    def add(self, watch: _Watch) -> None:
        with self._changed:
            self._watched[id(watch)] = watch
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="request-deadlines", daemon=True)
                thread.start()
                self._thread = thread
            if watch.deadline < self._wakes_at:  # rare: deadlines mostly come later than the ones watched
                self._changed.notify()

    def remove(self, watch: _Watch) -> None:
        with self._changed:
            self._watched.pop(id(watch), None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for key, watch in list(self._watched.items()):
                    if watch.deadline <= now:
                        del self._watched[key]
                        watch.fired = True
                        _fire(watch)
                self._wakes_at = min((w.deadline for w in self._watched.values()), default=float("inf"))
                self._changed.wait(None if self._wakes_at == float("inf") else self._wakes_at - now)


class _Watch:
    def __init__(
        self, watchdog: _Watchdog, sock: socket.socket | Callable[[], socket.socket | None], deadline: float
    ) -> None:
        self._watchdog, self.sock, self.deadline = watchdog, sock, deadline
        self.fired = False

    def __enter__(self) -> _Watch:
        self._watchdog.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._watchdog.remove(self)


def _fire(watch: _Watch) -> None:
    """Shut the watch's socket; whatever goes wrong, the thread lives on for every other watch."""
    try:
        _shut(watch.sock() if callable(watch.sock) else watch.sock)
    except Exception as error:  # noqa: BLE001 - one odd socket must not end every deadline in the process
        log(get_logger(), logging.ERROR, "could not cut a request off at its deadline", error=repr(error))


def _shut(sock: object) -> None:
    # socket.socket's own shutdown, not SSLSocket's: that one drops the TLS state first, and a
    # thread still writing could then send plaintext. This wakes the blocked read; the request fails.
    for _ in range(_LAYERS):  # TLS inside TLS (an https:// proxy): urllib3's SSLTransport wraps a socket
        if sock is None or isinstance(sock, socket.socket):
            break
        sock = getattr(sock, "socket", None)
    if not isinstance(sock, socket.socket):  # None: nothing open (yet); the connect timeout bounds that step
        return
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_LAYERS = 4  # wrappers looked through for the socket under them


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._reset)
