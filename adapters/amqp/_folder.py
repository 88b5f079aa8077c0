"""The embedded broker transport: kombu's filesystem channel, made crash-safe.

The embedded transport's guarantee, and why it is not kombu's plain
`filesystem://`: kombu's filesystem channel *deletes* a message file the
moment it fetches it and keeps the message only in process memory until the
ack; a clean close puts unacked messages back, but a SIGKILL, an OOM kill or a
power cut loses every fetched, unacked message (up to `prefetch` of them).
It also names files by millisecond, so two messages published in the same
millisecond come back in random order, and a reader can pick up a file that
the writer has not finished. `_DurableFolderChannel` below fixes those three:

- publishing writes the file under a temporary name, fsyncs it and renames it
  into the queue folder, so a reader sees whole messages only; names sort by
  a nanosecond clock plus a per-process sequence, so order is publish order;
- fetching *renames* the file into this consumer's own `unacked/<id>/` folder
  (an atomic move); the ack deletes it there; a requeue or a clean close
  renames it back under its original name, so it keeps its place in line;
- each consumer folder holds a lock file that its process keeps
  `flock`-ed; the kernel drops the lock when the process dies, however it
  dies. A new channel moves the files of every unlocked folder back to the
  queue: a killed worker's in-flight messages are delivered again, in order.

So the embedded broker is at-least-once across process crashes on one
machine, like RabbitMQ. What it does not give: safety across a power cut for
the rename itself (the folder is not fsynced), replication, more than one
machine, or speed (each fetch lists the folder). Use it for demos,
development and tests; run production on RabbitMQ.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual

_SEQ = itertools.count()


# These overrides keep kombu's filesystem.Channel signatures, which differ from its AbstractChannel's.


class _DurableFolderChannel(filesystem.Channel):
    """A filesystem channel whose unacked messages survive the death of their consumer."""

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._in_flight: dict[str, tuple[Path, str]] = {}  # delivery tag -> (file in unacked/, original name)
        self._mine: Path | None = None
        self._lock_file: Any = None
        _recover_orphans(Path(self.transport_options["unacked_folder"]), Path(self.data_folder_in))

    def _own_folder(self) -> Path:
        if self._mine is None:
            # Lock first, under a name recovery skips, then move it in place:
            # recovery must never see this folder unlocked.
            unacked = Path(self.transport_options["unacked_folder"])
            new = unacked / f".new-{uuid.uuid4().hex}"
            new.mkdir(parents=True)
            self._lock_file = open(new / ".lock", "wb")  # noqa: SIM115  # held open for the channel's life
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
            self._mine = unacked / new.name.removeprefix(".new-")
            os.rename(new, self._mine)
        return self._mine

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # as filesystem.Channel._put
        name = f"{time.monotonic_ns():020d}-{next(_SEQ):09d}-{uuid.uuid4().hex}.{queue}.msg"
        folder = Path(self.data_folder_out)
        tmp = folder.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(filesystem.str_to_bytes(filesystem.dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, folder / name)
        except OSError as exc:
            raise ChannelError(f"cannot add a message to queue {queue!r}") from exc

    def _get(self, queue: str) -> Any:  # type: ignore[override]  # as filesystem.Channel._get
        suffix = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != suffix:
                continue
            target = self._own_folder() / name
            try:
                os.rename(folder / name, target)
            except OSError:
                continue  # another consumer took it first
            payload = filesystem.loads(filesystem.bytes_to_str(target.read_bytes()))
            self._in_flight[payload["properties"]["delivery_tag"]] = (target, name)
            return payload
        raise filesystem.Empty()

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        held = self._in_flight.pop(delivery_tag, None)
        if held is not None:
            held[0].unlink(missing_ok=True)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)  # a requeue goes through _restore
        held = self._in_flight.pop(delivery_tag, None)
        if held is not None:
            held[0].unlink(missing_ok=True)

    def _restore(self, message: Any) -> None:
        held = self._in_flight.pop(message.delivery_tag, None)
        if held is None:
            super()._restore(message)
            return
        os.rename(held[0], Path(self.data_folder_in) / held[1])  # back to its place in line

    def get_table(self, exchange: str) -> list[Any]:
        # kombu's version reads the bindings file while another declare may have
        # created it empty; ours only ever replaces it whole (see _queue_bind).
        try:
            raw = self._exchange_file(exchange).read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"cannot read the bindings of exchange {exchange!r}") from exc
        return [filesystem.exchange_queue_t(*q) for q in filesystem.loads(filesystem.bytes_to_str(raw))] if raw else []

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        # Read-modify-write under a lock file, then an atomic rename: two
        # processes declaring the topology at once neither lose a binding nor
        # let a reader see a half-written file.
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(file.with_name(file.name + ".lock"), "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                table = self.get_table(exchange)
                if binding in table:
                    return
                tmp = file.with_name(f".tmp-{uuid.uuid4().hex}")
                tmp.write_bytes(filesystem.str_to_bytes(filesystem.dumps([binding, *table])))
                os.rename(tmp, file)
        except OSError as exc:
            raise ChannelError(f"cannot bind queue {queue!r} to exchange {exchange!r}") from exc

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        found: list[str] = super()._lookup(exchange, routing_key, default)
        if exchange and not found:
            # RabbitMQ returns an unroutable `mandatory` message; the embedded broker refuses it.
            raise ChannelError(f"unroutable: no queue bound to {exchange!r} with that routing key")
        return found

    def close(self) -> None:
        super().close()  # puts unacked messages back through _restore
        if self._mine is not None:
            self._lock_file.close()
            shutil.rmtree(self._mine, ignore_errors=True)
            self._mine = None


class DurableFolderTransport(filesystem.Transport):
    Channel = _DurableFolderChannel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        # kombu shares one in-memory binding table per process across every
        # filesystem connection; a second data folder (a test, a fresh demo)
        # would then skip writing its bindings. Keep one per connection.
        self.state = virtual.BrokerState()


def _recover_orphans(unacked: Path, queue_folder: Path) -> None:
    """Move the messages of consumers that died back into the queue folder."""
    folders = sorted(p for p in unacked.iterdir() if p.is_dir() and not p.name.startswith(".")) if unacked.exists() else []
    for folder in folders:
        try:
            with open(folder / ".lock", "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                for msg in folder.iterdir():
                    if msg.name.endswith(".msg"):
                        os.rename(msg, queue_folder / msg.name)
                shutil.rmtree(folder, ignore_errors=True)
        except (BlockingIOError, FileNotFoundError):
            continue  # alive (its process holds the lock) or already recovered
