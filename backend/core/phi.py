"""PHI sealed at rest: AES-256-GCM under a key from CXRQ_PHI_KEY. In core because every floor seals:
the DICOM return path (dicomnet), a job's client reference (jobs), the stored SR (interop).

One authenticated ciphertext per job: `version (1 byte) | key id (8 bytes) | nonce (12) | ciphertext+tag`.
The job id is the associated data, so a ciphertext copied onto another job's row does not open.
CXRQ_PHI_KEY is a comma-separated list of url-safe base64 32-byte keys (`manage.py dicom_sender
phi-key` prints a new one): the first seals, every one opens, so a key is rotated by putting the
new one first and keeping the old one until its return paths are gone (retention). The key id
(the first 8 bytes of the key's SHA-256) picks the key without trying each.

Without CXRQ_PHI_KEY (development and tests only: production settings refuse to start) the key
is derived from DJANGO_SECRET_KEY with HKDF, so a development database stays readable across
restarts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

VERSION = b"\x01"
KEY_ID_BYTES = 8
NONCE_BYTES = 12
_HEADER = len(VERSION) + KEY_ID_BYTES + NONCE_BYTES


class PhiUnreadable(Exception):
    """A sealed value that no configured key opens (a key removed too early, or tampering)."""


@dataclass(frozen=True)
class PhiKey:
    key_id: bytes
    aead: AESGCM


def parse_key(text: str) -> bytes:
    """A url-safe base64 key of 32 bytes (what `new_key` makes); ImproperlyConfigured otherwise."""
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii") + b"==")
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured("CXRQ_PHI_KEY: each key must be 32 bytes in url-safe base64")
    return raw


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _development_key() -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cxrq return-path phi v1").derive(
        settings.SECRET_KEY.encode()
    )


@lru_cache(maxsize=4)
def _keys(configured: tuple[str, ...], secret_key: str) -> tuple[PhiKey, ...]:  # noqa: ARG001 - cache key
    raws = [parse_key(text) for text in configured] if configured else [_development_key()]
    return tuple(PhiKey(key_id=hashlib.sha256(raw).digest()[:KEY_ID_BYTES], aead=AESGCM(raw)) for raw in raws)


def keys() -> tuple[PhiKey, ...]:
    return _keys(tuple(settings.PHI_KEYS), settings.SECRET_KEY)


def seal(values: dict[str, str], *, context: str) -> bytes:
    """The values as one ciphertext under the first key, bound to `context` (the job id)."""
    key = keys()[0]
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return VERSION + key.key_id + nonce + key.aead.encrypt(nonce, plain, context.encode())


def open_sealed(sealed: bytes, *, context: str) -> dict[str, str]:
    sealed = bytes(sealed)
    if len(sealed) <= _HEADER or sealed[:1] != VERSION:
        raise PhiUnreadable("not a sealed value")
    key_id, nonce = sealed[1 : 1 + KEY_ID_BYTES], sealed[1 + KEY_ID_BYTES : _HEADER]
    for key in keys():
        if key.key_id == key_id:
            try:
                return json.loads(key.aead.decrypt(nonce, sealed[_HEADER:], context.encode()))
            except InvalidTag:
                raise PhiUnreadable("the sealed value does not open under its key") from None
    raise PhiUnreadable("sealed under a key that is no longer configured")


def key_id_of(sealed: bytes) -> str:
    return bytes(sealed)[1 : 1 + KEY_ID_BYTES].hex()


@lru_cache(maxsize=4)
def _identifier_key(configured: tuple[str, ...], secret_key: str) -> bytes:  # noqa: ARG001 - cache key
    raw = parse_key(configured[0]) if configured else _development_key()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cxrq identifier hash v1").derive(raw)


def identifier_hash(*parts: str) -> str:
    """HMAC-SHA256 of the parts under a key derived from the sealing key: the same identifier gives
    the same hash (so it can be matched and grouped) without being readable or guessable from the
    hash. A new first key (rotation) gives new hashes."""
    key = _identifier_key(tuple(settings.PHI_KEYS), settings.SECRET_KEY)
    return hmac.new(key, chr(31).join(parts).encode(), hashlib.sha256).hexdigest()
