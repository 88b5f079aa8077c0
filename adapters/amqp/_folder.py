"""The embedded broker transport: kombu's filesystem channel, made crash-safe.

The embedded transport's guarantee, and why it is not kombu's plain
`filesystem://`: kombu's filesystem channel *deletes* a message file the
moment it fetches it and keeps the message only in process memory until the
ack; a clean close puts unacked messages back, but a SIGKILL, an OOM kill or a
power cut loses every fetched, unacked message (up to `prefetch` of them).
It also names files by millisecond, so two messages published in the same
millisecond come back in random order, and a reader can pick up a file that
the writer has not finished. `_DurableFolderChannel` below fixes those three:

- publishing writes the file under a temporary name in the publisher's own
  locked folder (below), fsyncs it, renames it into the queue folder and
  fsyncs that folder, so a reader sees whole messages only and a publish that
  returned survives a power cut; a publisher that dies mid-write leaves its
  half to the recovery below, which deletes it; names sort by a wall-clock
  nanosecond stamp plus a per-process sequence, so order is publish order,
  across a reboot too;
- fetching *renames* the file into this consumer's own `unacked/<id>/` folder
  (an atomic move); the ack deletes it there; a requeue or a clean close
  renames it back under its original name, marked as redelivered (`-r`
  before the queue's name), so it keeps its place in line;
- a queue declared with `x-single-active-consumer` (the ordered ones, as on
  RabbitMQ) is served to one consuming channel at a time, whichever holds its
  `control/<queue>.consumer.lock`; the others stand by until it closes or dies;
- each consumer folder holds a lock file that its process keeps
  `flock`-ed; the kernel drops the lock when the process dies, however it
  dies. A new channel, and a standby that becomes a queue's active consumer,
  move the files of every unlocked folder back to the queue: a killed
  worker's in-flight messages are delivered again, in order, before the rest;
  and a channel already open looks again at most once a second while it
  fetches, so a queue without a single active consumer (dead letters,
  replies) gets a killed reader's messages back without a restart, as
  RabbitMQ requeues them when the connection drops;
- `basic_reject(requeue=False)` dead-letters the message as RabbitMQ does, to
  the target of the queue's `x-dead-letter-*` arguments as declared on this
  connection (kombu declares a queue when it consumes it); with no target
  known, or none that routes, it keeps the file in `rejected/` and logs
  (`embedded_message_rejected`) where RabbitMQ would drop it;
- bindings are written whole (a temporary file, fsynced, renamed, the folder
  fsynced); the temporary file of a write cut short goes when a channel opens;
- a file that does not decode is moved to `damaged/` and logged
  (`embedded_message_unreadable`), not fetched again after every restart.

So the embedded broker is at-least-once across process crashes on one
machine, like RabbitMQ. What it does not give: replication, more than one
machine, or speed (each fetch lists the folder). Use it for demos,
development and tests; run production on RabbitMQ.

Over the 400-line guide (STYLE §12): the channel and the file helpers below
share one on-disk protocol (the folders, the lock files, the `.new-`, `.tmp-`
and `-r` names); split, that protocol would be read across two modules.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual

from router.logging import get_logger

_SEQ = itertools.count()
_RECOVER_EVERY_SECONDS = 1.0  # how often a fetching channel looks for a dead reader's messages (a folder listing)


# These overrides keep kombu's filesystem.Channel signatures, which differ from its AbstractChannel's.


class _DurableFolderChannel(filesystem.Channel):
    """A filesystem channel whose unacked messages survive the death of their consumer."""

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._in_flight: dict[str, tuple[Path, str]] = {}  # delivery tag -> (file in unacked/, original name)
        self._mine: Path | None = None
        self._lock_file: Any = None
        self._single: set[str] = set()  # queues declared with x-single-active-consumer on this channel
        self._active: dict[str, Any] = {}  # queue consumed here -> its flock-ed consumer lock, or None while standing by
        self._recovered_at = 0.0
        self._recover()
        _remove_stale_temp(Path(self.control_folder))

    def _recover(self) -> None:
        _recover_orphans(Path(self.transport_options["unacked_folder"]), Path(self.data_folder_in))
        self._recovered_at = time.monotonic()

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
        name = f"{_stamp():020d}-{next(_SEQ):09d}-{uuid.uuid4().hex}.{queue}.msg"
        folder = Path(self.data_folder_out)
        tmp: Path | None = None
        try:
            # Written in this channel's own locked folder: if the process dies
            # mid-write, the next channel's recovery deletes the half-written
            # file with the folder (it moves only whole `.msg` files back).
            tmp = self._own_folder() / f".tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(filesystem.str_to_bytes(filesystem.dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, folder / name)
            tmp = None
            _fsync_folder(folder)  # the rename itself must survive a power cut before the publish returns
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)  # a full disk must not fill up with the halves of refused messages
            raise ChannelError(f"cannot add a message to queue {queue!r}") from exc

    def queue_declare(self, queue: Any = None, passive: bool = False, **kwargs: Any) -> Any:
        arguments = kwargs.get("arguments") or {}
        if arguments.get("x-single-active-consumer"):
            self._single.add(queue)
        if "x-dead-letter-exchange" in arguments:
            self.connection.dead_letter_targets[queue] = (arguments["x-dead-letter-exchange"], arguments.get("x-dead-letter-routing-key"))
        return super().queue_declare(queue, passive, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> Any:
        if queue in self._single:
            self._active.setdefault(queue, None)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        try:
            return super().basic_cancel(consumer_tag)
        finally:
            lock = self._active.pop(queue, None) if queue is not None else None
            if lock is not None:
                lock.close()  # the next consumer in line takes over

    def _is_active(self, queue: str) -> bool:
        """Take *queue*'s consumer lock if free: RabbitMQ's single active consumer, across processes.

        Two engines on one data folder (a second `helsebro run`, a `demo`
        beside a `run`) would otherwise take a patient's messages in turn and
        apply them out of order. The one that finds the lock held stands by;
        the kernel drops the lock when its holder dies, and the standby takes over.
        """
        if self._active[queue] is not None:
            return True
        path = Path(self.control_folder) / f"{queue}.consumer.lock"
        lock = open(path, "ab")  # noqa: SIM115  # held open while this channel consumes the queue
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return False
        self._active[queue] = lock
        # The one before may have died holding deliveries (RabbitMQ requeues them when
        # its connection drops): put them back in line before taking the first one.
        self._recover()
        return True

    def _get(self, queue: str) -> Any:  # type: ignore[override]  # as filesystem.Channel._get
        if queue in self._active and not self._is_active(queue):
            raise filesystem.Empty()  # standing by: another consumer is the active one
        if time.monotonic() - self._recovered_at >= _RECOVER_EVERY_SECONDS:
            self._recover()  # a reader of this queue may have died since: RabbitMQ requeues at once
        suffix = f"{queue}.msg"
        folder = Path(self.data_folder_in)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != suffix:
                continue
            target = self._own_folder() / name
            try:
                os.rename(folder / name, target)
            except OSError as exc:
                if not os.path.lexists(folder / name):
                    continue  # another consumer took it first
                # Our own unacked/ folder is gone (removed under us) or unwritable: every
                # claim would fail and the queue would look empty for ever. Say so; a new
                # connection makes the folders again.
                raise ChannelError(f"cannot take a message from queue {queue!r}: {exc.strerror or exc}") from exc
            try:
                payload = filesystem.loads(filesystem.bytes_to_str(target.read_bytes()))
                payload["properties"]["delivery_tag"]
            except (ValueError, KeyError, TypeError):
                _set_aside(target, Path(self.transport_options["damaged_folder"]), queue)
                continue
            if name.partition(".")[0].endswith(_REDELIVERED):
                payload["properties"].setdefault("delivery_info", {})["redelivered"] = True
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
            self._dead_letter(held[0], held[1].partition(".")[2].removesuffix(".msg"))

    def _dead_letter(self, message: Path, queue: str) -> None:
        """Route a rejected *message* from *queue* as RabbitMQ's dead-lettering does, or keep it in `rejected/`.

        Published before the file goes: a crash in between delivers it twice, never loses it.
        """
        rejected = Path(self.transport_options["rejected_folder"])
        target = self.connection.dead_letter_targets.get(queue)
        if target is None:
            _set_aside(message, rejected, queue, event="embedded_message_rejected", why="no dead-letter target")
            return
        exchange, routing_key = target
        payload = filesystem.loads(filesystem.bytes_to_str(message.read_bytes()))
        info = payload["properties"].setdefault("delivery_info", {})
        key = routing_key if routing_key is not None else info.get("routing_key", "")
        _mark_dead(payload, queue, info.get("exchange", ""), info.get("routing_key", ""))
        payload["properties"]["delivery_tag"] = self._next_delivery_tag()
        info.update(exchange=exchange, routing_key=key)
        try:
            if exchange:
                self.typeof(exchange).deliver(payload, exchange, key)
            else:
                self._put(key, payload)
        except ChannelError:  # unroutable (RabbitMQ drops it) or the disk refused it
            _set_aside(message, rejected, queue, event="embedded_message_rejected", why="dead-letter target unroutable")
            return
        message.unlink(missing_ok=True)

    def _restore(self, message: Any) -> None:
        held = self._in_flight.pop(message.delivery_tag, None)
        if held is None:
            super()._restore(message)
            return
        os.rename(held[0], Path(self.data_folder_in) / _redelivered(held[1]))  # back to its place in line

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
            # The lock's name is what _remove_stale_temp waits on: `<exchange>.exchange.lock`.
            with open(file.with_name(file.name + ".lock"), "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                table = self.get_table(exchange)
                if binding in table:
                    return
                tmp = file.with_name(f".tmp-{uuid.uuid4().hex}")
                with open(tmp, "wb") as f:
                    f.write(filesystem.str_to_bytes(filesystem.dumps([binding, *table])))
                    f.flush()
                    os.fsync(f.fileno())  # as a message file: a power cut must not leave an empty table
                os.rename(tmp, file)
                _fsync_folder(self.control_folder)
        except OSError as exc:
            raise ChannelError(f"cannot bind queue {queue!r} to exchange {exchange!r}") from exc

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        found: list[str] = super()._lookup(exchange, routing_key, default)
        if exchange and not found:
            # RabbitMQ returns an unroutable `mandatory` message; the embedded broker refuses it.
            raise ChannelError(f"unroutable: no queue bound to {exchange!r} with that routing key")
        return found

    def close(self) -> None:
        try:
            super().close()  # puts unacked messages back through _restore
        finally:
            active, self._active = self._active, {}
            for lock in active.values():
                if lock is not None:
                    lock.close()  # after the messages went back: the standby finds them in their place
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
        # queue -> (x-dead-letter-exchange, x-dead-letter-routing-key or None), as declared on this connection
        self.dead_letter_targets: dict[str, tuple[str, str | None]] = {}


_stamp_lock = threading.Lock()
_last_stamp = 0


def _stamp() -> int:
    """Return a wall-clock nanosecond stamp, never below one this process returned before.

    Not `time.monotonic_ns()`: that clock starts over at each boot, so a
    message published after a restart of the machine sorted before the
    messages still waiting from before it. Wall-clock stamps keep their order
    across a reboot; the guard keeps one process's order through a clock step back.
    """
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


_REDELIVERED = "-r"


def _redelivered(name: str) -> str:
    """*name* marked as given back once: `<stamp>-<seq>-<id>-r.<queue>.msg`.

    RabbitMQ sets `redelivered` on a message that comes back; the file's bytes
    stay as published, so the name carries the mark. It goes after the unique
    id, so the file keeps its place in line, and before the queue, so the queue
    still reads from the name.
    """
    head, dot, rest = name.partition(".")
    return name if head.endswith(_REDELIVERED) else f"{head}{_REDELIVERED}{dot}{rest}"


def _fsync_folder(folder: Path) -> None:
    """Flush *folder*'s entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(message: Path, folder: Path, queue: str, *, event: str = "embedded_message_unreadable", why: str = "") -> None:
    """Move a message file out of the queue into *folder*, and say so.

    A file that does not decode (publishing writes whole files only, so a bad
    disk block or a hand edit) goes to `damaged/`: left in place it would fail
    every fetch, and every restart would move it back to the head of the
    queue. A rejected one with nowhere to go goes to `rejected/`. The file is
    kept, byte for byte, for the operator; the log names the file, never its content.
    """
    folder.mkdir(exist_ok=True)
    os.rename(message, folder / message.name)
    _fsync_folder(folder)
    get_logger("broker").error(event, queue=queue, file=str(folder / message.name), **({"reason": why} if why else {}))


def _mark_dead(payload: dict[str, Any], queue: str, exchange: str, routing_key: str) -> None:
    """Add the headers RabbitMQ adds to a message it dead-letters as `rejected` from *queue*."""
    headers = payload.setdefault("headers", {})
    deaths = list(headers.get("x-death") or [])
    same = next((d for d in deaths if d.get("queue") == queue and d.get("reason") == "rejected"), None)
    if same is not None:
        deaths.remove(same)
    death = {"count": 1, "reason": "rejected", "queue": queue, "exchange": exchange, "routing-keys": [routing_key], "time": int(time.time())}
    if same is not None:
        death["count"] = int(same.get("count", 0)) + 1
    headers["x-death"] = [death, *deaths]  # the latest first, as RabbitMQ orders them
    for field, value in (("reason", "rejected"), ("queue", queue), ("exchange", exchange)):
        headers.setdefault(f"x-first-death-{field}", value)
        headers[f"x-last-death-{field}"] = value


def _remove_stale_temp(control: Path) -> None:
    """Delete the temporary files of binding writes that a crash cut short.

    A writer holds its exchange's lock from before it makes its temporary
    file until it has renamed it, so a file listed before taking every lock
    and still there once they are held belongs to a writer that died.
    _queue_bind takes one lock at a time: taking them all in order cannot deadlock.
    """
    try:
        stale = [p for p in control.iterdir() if p.name.startswith(".tmp-")]
    except FileNotFoundError:
        return
    if not stale:
        return
    locks = []
    try:
        for path in sorted(control.glob("*.exchange.lock")):
            locks.append(open(path, "ab"))  # noqa: SIM115  # closed below, which drops the lock
            fcntl.flock(locks[-1].fileno(), fcntl.LOCK_EX)
        for p in stale:
            p.unlink(missing_ok=True)
    finally:
        for lock in locks:
            lock.close()


def _recover_orphans(unacked: Path, queue_folder: Path) -> None:
    """Move the messages of consumers that died back into the queue folder."""
    folders = sorted(p for p in unacked.iterdir() if p.is_dir() and not p.name.startswith(".")) if unacked.exists() else []
    for folder in folders:
        try:
            with open(folder / ".lock", "ab") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                for msg in folder.iterdir():
                    if msg.name.endswith(".msg"):
                        os.rename(msg, queue_folder / _redelivered(msg.name))
                shutil.rmtree(folder, ignore_errors=True)
        except (BlockingIOError, FileNotFoundError):
            continue  # alive (its process holds the lock) or already recovered
