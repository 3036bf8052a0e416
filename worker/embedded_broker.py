"""The embedded default's broker: kombu's filesystem transport with an atomic publish.

kombu's own `_put` creates the message file and only then writes it, while its `_get`
moves any file it sees without taking the lock: a consumer can take a file that is still
empty and crash on it (seen here with twelve concurrent publishers). Here a message is
written under a hidden name, which `_get` ignores, and renamed into place when complete.
Its consumers try their queues in the lanes' order (worker.lanes), not kombu's turn by turn.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.json import dumps

from worker.lanes import LaneFairCycle

ALIAS = "securesend-fs"


def transport_options(folder: Path, *, poll_seconds: float) -> dict[str, Any]:
    """Every folder the transport uses, under `folder` (kombu's `control_folder` defaults
    to `control/` in the working directory)."""
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": poll_seconds,
    }


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        # Created when a connection opens its channel, not when anything is imported.
        for folder in (self.data_folder_in, self.data_folder_out, self.processed_folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.control_folder.mkdir(parents=True, exist_ok=True)

    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        with open(partial, "wb") as f:
            f.write(dumps(message).encode())  # type: ignore[no-untyped-call]
        os.replace(partial, final)

    def _reset_cycle(self) -> None:
        self._cycle = LaneFairCycle(self._get_and_deliver, self._active_queues, Empty)


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    """Make `securesend-fs://` a broker URL kombu understands (idempotent)."""
    TRANSPORT_ALIASES[ALIAS] = f"{__name__}:Transport"
