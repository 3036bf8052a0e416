"""The embedded default's broker: kombu's filesystem transport with an atomic publish.

kombu's own `_put` creates the message file and only then writes it, while its `_get`
moves any file it sees without taking the lock: a consumer can take a file that is still
empty and crash on it (seen here with twelve concurrent publishers). Here a message is
written under a hidden name, which `_get` ignores, and renamed into place when complete.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

ALIAS = "securesend-fs"


class Channel(filesystem.Channel):
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        with open(partial, "wb") as f:
            f.write(dumps(message).encode())  # type: ignore[no-untyped-call]
        os.replace(partial, final)


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make `securesend-fs://` a broker URL kombu understands (idempotent)."""
    TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"
