"""kombu transports that several processes can share, and that survive a message they cannot read.

The broker carries wake-ups only: the database is the queue, and the worker's sweeper re-sends a
wake-up that was lost. So a message nobody can decode is worth one WARNING line and nothing more;
kombu's virtual transports instead raise from the consumer's event loop, which Celery treats as an
unrecoverable error and stops the worker (and `make run` with it).

- `AtomicFilesystemTransport` (the embedded default, `filesystem://`): kombu's filesystem
  transport creates a message file and then writes into it, while a consumer in another process may
  already be listing, moving and reading it (kombu issue #1551): an empty or half-written read is a
  JSONDecodeError. Here a message is written to a hidden file and renamed into the queue folder
  (rename is atomic on one filesystem), and a consumer claims a file by renaming it into the
  processed folder on the same filesystem (kombu's `shutil.move` to /tmp copies when /tmp is
  another filesystem, and two consumers then copy into the same path).
- `TolerantRedisTransport` (`redis://`, `rediss://`): kombu's own, dropping an envelope it cannot
  decode instead of raising.

Settings choose them through CELERY_BROKER_TRANSPORT (backend/settings/base.py); the URL's scheme
stays the one operators write.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.utils.objects import cached_property

logger = logging.getLogger(__name__)

# The prefix of a message file being written: `_get` only takes names "<stamp>_<uuid>.<queue>.msg".
_WRITING_PREFIX = ".writing-"


class UndecodableMessage(ValueError):
    """A broker message whose envelope is not one kombu wrote."""


def decode_envelope(raw: bytes | str) -> dict[str, Any]:
    """The message dict kombu's virtual channel expects, or UndecodableMessage: JSON, an object
    with a properties object carrying a delivery tag, and a body its encoding can decode."""
    try:
        payload = loads(bytes_to_str(raw))
    except (ValueError, TypeError) as exc:
        raise UndecodableMessage(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(payload, dict):
        raise UndecodableMessage("not an object")
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        raise UndecodableMessage("no properties.delivery_tag")
    body = payload.get("body")
    if body is not None and not isinstance(body, str):
        raise UndecodableMessage("body is not a string")
    if body and properties.get("body_encoding") == "base64":
        try:
            base64.b64decode(str_to_bytes(body), validate=True)
        except ValueError:
            raise UndecodableMessage("body is not base64") from None
    return payload


def log_dropped(*, transport: str, queue: str, reason: str) -> None:
    logger.warning(
        "event=broker_message_dropped transport=%s queue=%s reason=%r "
        "(undecodable wake-up; the queue sweeper re-sends lost ones)",
        transport,
        queue,
        reason,
    )


class AtomicFilesystemChannel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Write the whole message under a hidden name, then rename it into the queue folder:
        a consumer sees the complete file or nothing."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        writing = os.path.join(self.data_folder_out, _WRITING_PREFIX + name)
        try:
            with open(writing, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.rename(writing, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        """The oldest message of `queue`, claimed by an atomic rename (another consumer that lost
        the race moves on to the next file); an undecodable one is logged and dropped."""
        wanted = f"{queue}.msg"
        claimed_dir = self.processed_folder
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.startswith(".") or filename.partition(".")[2] != wanted:
                continue
            # A name of this consumer's own: two consumers never read each other's file.
            claimed = os.path.join(claimed_dir, f"{filename}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            except OSError as exc:
                raise ChannelError(f"Cannot claim file {filename!r} from queue.") from exc
            try:
                with open(claimed, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            finally:
                if not self.store_processed:
                    with contextlib.suppress(OSError):
                        os.remove(claimed)
            try:
                return decode_envelope(raw)
            except UndecodableMessage as exc:
                log_dropped(transport="filesystem", queue=queue, reason=str(exc))
                continue
        raise Empty()

    @cached_property
    def processed_folder(self):
        # Claimed files are renamed here, so it must be on the queue's filesystem: never the
        # system's temporary folder, which kombu uses when processed messages are not kept.
        folder = self.transport_options.get("processed_folder") or os.path.join(
            self.data_folder_in, ".processed"
        )
        os.makedirs(folder, exist_ok=True)
        return folder


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicFilesystemChannel
    # kombu keeps the filesystem broker's exchange state per transport class.
    global_state = filesystem.Transport.global_state


class TolerantRedisChannel(redis.Channel):
    def _brpop_read(self, **options):
        """kombu's read, with an envelope it cannot decode dropped: BRPOP has already taken it
        off the list, so nothing is left to redeliver."""
        try:
            return super()._brpop_read(**options)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log_dropped(transport="redis", queue="?", reason=f"{type(exc).__name__}: {exc}"[:200])
            return True

    def _get(self, queue):
        try:
            return super()._get(queue)
        except ValueError as exc:
            log_dropped(transport="redis", queue=queue, reason=type(exc).__name__)
            raise Empty() from None


class TolerantRedisTransport(redis.Transport):
    Channel = TolerantRedisChannel
