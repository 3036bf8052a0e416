"""A host of the test's own for one worker, whose network the test cuts and heals.

The worker runs in a network namespace joined to this one by a veth pair; in this
namespace a plain TCP forwarder listens on the pair's address and passes each connection
on to the same port on 127.0.0.1 (PostgreSQL, Redis, the SMTP sink listen there only).
Cutting takes this end of the pair down: from then on every packet either way is dropped,
as a partition drops them. No connection is closed and nothing answers: the worker's
sockets hang until its own timeouts (TCP keepalive, TCP_USER_TIMEOUT, connect and read
timeouts) end them, which is what the test is about. Healing brings the link back up, and
what TCP retransmits gets through again. Needs root (CAP_NET_ADMIN) and iproute2's `ip`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator

from tests.support import unavailable


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class Forwarder:
    """TCP from `host:port` to `127.0.0.1:port` for each port, in a thread of its own."""

    def __init__(self, host: str, ports: list[int]) -> None:
        self.host, self.ports = host, ports
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.Server] = []

    def start(self) -> None:
        self.thread.start()
        for port in self.ports:
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._handler(port), self.host, port), self.loop
            ).result(10)
            self.servers.append(server)

    def _handler(
        self, port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

        return forward

    def stop(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Partition:
    """A network namespace for one worker, reaching `ports` of this host through the
    veth pair, which `cut()` and `heal()` take down and up."""

    def __init__(self, ports: list[int]) -> None:
        tag = os.getpid() % 10000
        self.namespace = f"securesend-cut-{tag}"
        self.host_end, self.worker_end = f"ssc{tag}h", f"ssc{tag}w"
        subnet = 10 + tag % 200
        self.host_address, self.worker_address = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        self.forwarder = Forwarder(self.host_address, ports)

    @property
    def launcher(self) -> list[str]:
        """The command prefix that runs a program in the namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def start(self) -> None:
        if shutil.which("ip") is None:
            unavailable("ip (iproute2)", FileNotFoundError("not on PATH"))
        try:
            _ip("netns", "add", self.namespace)
        except subprocess.CalledProcessError as e:
            unavailable("a network namespace of the test's own", RuntimeError(e.stderr.decode()))
        _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.worker_end)
        _ip("link", "set", self.worker_end, "netns", self.namespace)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_end)
        _ip("link", "set", self.host_end, "up")
        inside = ["netns", "exec", self.namespace, "ip"]
        _ip(*inside, "addr", "add", f"{self.worker_address}/30", "dev", self.worker_end)
        _ip(*inside, "link", "set", self.worker_end, "up")
        _ip(*inside, "link", "set", "lo", "up")
        self.forwarder.start()

    def cut(self) -> None:
        _ip("link", "set", self.host_end, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_end, "up")

    def stop(self) -> None:
        self.forwarder.stop()
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("link", "del", self.host_end)  # and its peer with it
        with contextlib.suppress(subprocess.SubprocessError):
            _ip("netns", "del", self.namespace)

    @classmethod
    @contextlib.contextmanager
    def running(cls, ports: list[int]) -> Iterator[Partition]:
        partition = cls(ports)
        try:
            partition.start()
            yield partition
        finally:
            partition.stop()
