"""The CA certificates every outbound TLS connection trusts: what OpenSSL's default would trust,
found by hash in the system's certificate folder as a handshake needs one instead of parsed up
front where that folder holds the same certificates as the bundle (about 20 ms of every cold start).
"""

from __future__ import annotations

import os
import re
import ssl


def tls_context() -> ssl.SSLContext:
    """A verifying context trusting what OpenSSL's default would, the bundle (SSL_CERT_FILE's or
    the built-in one) and the hashed folder (SSL_CERT_DIR's or the built-in one), but finding the
    certificates by hash in the folder as a handshake needs one, instead of parsing the whole
    bundle up front (about 20 ms of every cold start for the ~150 certificates of a Debian or
    Ubuntu store), when the folder covers the bundle (:func:`_covers`). With no hashed folder,
    the whole default store."""
    paths = ssl.get_default_verify_paths()
    if not (paths.capath and _hashed_folder(paths.capath)):
        return ssl.create_default_context()
    context = ssl.create_default_context(capath=paths.capath)
    if paths.cafile and not _covers(paths.capath, paths.cafile):
        context.load_verify_locations(cafile=paths.cafile)
    return context


def _covers(folder: str, bundle: str) -> bool:
    """Whether the hashed ``folder`` holds every certificate of ``bundle``, as update-ca-certificates
    leaves /etc/ssl/certs: the bundle in that very folder (symlinks resolved) and not changed since
    the folder last was (the tool renames the new bundle in; appending by hand, with no rehash,
    makes the bundle the newer)."""
    real_folder, real_bundle = os.path.realpath(folder), os.path.realpath(bundle)
    if os.path.dirname(real_bundle) != real_folder:
        return False
    try:
        return os.stat(real_bundle).st_mtime_ns <= os.stat(real_folder).st_mtime_ns
    except OSError:
        return False


def _hashed_folder(folder: str) -> bool:
    """Whether ``folder`` holds certificates under OpenSSL's hash names (``1a2b3c4d.0``)."""
    try:
        with os.scandir(folder) as entries:
            return any(_HASH_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


_HASH_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")
