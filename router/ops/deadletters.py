"""List, show, replay and purge the messages in a dead-letter queue, one confirmed step at a time.

Asking the operator and writing the audit log belong to router/cli/dlq.py;
this module only reads and moves messages.

AMQP 0-9-1 cannot browse a queue or delete one message by id. So every pass
here takes the messages with `basic.get` on one channel *without* acking them,
decides, acks the ones it removes, and gives the others back by closing the
channel. Until a message is acked the broker still owns it: if the process
dies anywhere in a pass, the broker puts every unacked message back
(RabbitMQ when the connection drops; the embedded transport when the next
channel finds the dead consumer's folder unlocked). A pass can therefore
duplicate, never lose:

- replay publishes a dead letter's body to the inbound exchange, waits for
  the broker's confirm, and only then acks the dead letter. A crash between
  the two leaves the message both in the inbound queue and in the
  dead-letter queue; the record's conditional, idempotent writes make the
  second application change nothing.
- purge acks; nothing is published.

A replayed message carries `x-helsebro-replay-of` (the letter's id) and
`x-helsebro-previous-reason` (its stage and reason, then those it carried):
refused again, its new dead letter keeps both, so `dlq show` tells its history.

Order, and why a pass always takes the *whole* queue and never uses
`basic.reject(requeue=True)` (RabbitMQ 3.10 quorum queues, checked): a
rejected message goes to the back of the queue; a message left unacked when
its channel closes goes to a "returns" line that is served before the rest of
the queue, but *behind* messages returned earlier. A pass that took only a
prefix would therefore rotate a queue that an earlier pass had returned, and
rejecting would rotate any queue. Taking every message and closing the
channel returns them all, in order, ahead of anything dead-lettered
meanwhile. Classic queues put returned messages back in place either way; on
the embedded transport a returned file gets its old name back, so its old
place. tests/router/ops/test_deadletters.py checks the order on both.

The broker applies those returns a few milliseconds after the channel's
close-ok, so a pass ends by waiting (up to 10 s) until the queue's depth
shows them again: a second pass, `status` or another command started right
after sees the whole queue. While a pass runs the messages it holds are
invisible: `status` counts them as not ready, and a second operator's pass
does not see them. A pass holds every message, body included, in memory.

Cost. Each pass raises a quorum queue's `x-delivery-count` of every message
it gives back. RabbitMQ 3.x sets no delivery limit by default; RabbitMQ 4.x
sets 20 and then *drops* the message when the queue has no dead-letter
exchange. So the engine declares each dead-letter queue with a delivery limit
no browsing reaches (adapters/amqp/connection.py `_browsable`; not `-1`, which
3.x reads as "drop on the first return"), and names at start one an older
version declared without it (`dead_letter_queue_without_delivery_limit`).

Each dead letter's id is its AMQP `message_id` (the engine sets one on every
dead letter) or, for a message without one, `h-` and 32 hex digits of a
SHA-256 over its `x-helsebro-*` headers and body: stable across passes, since
the broker's own headers (`x-delivery-count`) are left out. Two messages with
the same id are acted on together.

A letter the broker dead-lettered itself (a quorum queue's delivery limit, a
message TTL) has none of the engine's reason headers: its reason and time are
read from the broker's `x-death` (most recent death first) or
`x-first-death-*` headers, `broker: delivery_limit (queue helsebro.dest.x.p2)`,
and a destination's such letter is replayed to the partition that queue (or its
routing key) names. Its sender, like that of any letter that names none, is read
from an HL7 v2 body's MSH-3/MSH-4 while the pass holds the body.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from kombu import Queue

from adapters.amqp.connection import broker_errors, partition_count, queue_depth
from adapters.amqp.outbound import Publisher
from adapters.hl7v2.decode import salvage_header
from router.errors import BrokerUnavailable
from router.ops.stats import is_not_found

if TYPE_CHECKING:
    from kombu import Connection
    from kombu.message import Message

    from router.settings import Settings

__all__ = ["ActionResult", "Browse", "DeadLetter", "LetterFilter", "ReasonCount", "browse", "find", "purge", "replay", "summarise"]

REPLAY_HEADER = "x-helsebro-replay-of"
"""Header on a replayed message: the id of the dead letter it came from."""

PREVIOUS_REASON_HEADER = "x-helsebro-previous-reason"
"""Header on a replayed message, kept on its dead letter: the earlier letters' stages and reasons, newest first."""

_HISTORY_SEPARATOR = " | "
_HISTORY_CHARS = 2000

_PREFIX = "x-helsebro-"
_RETURN_DEADLINE_SECONDS = 10.0
_RETURN_POLL_SECONDS = 0.005


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: its reason headers and, kept out of every summary, its body."""

    id: str
    failed_at: str | None
    stage: str | None
    reason: str | None
    location: str | None
    control_id: str | None
    size: int
    delivery_count: int | None
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)
    patient_key: str | None = None  # a hash (x-helsebro-patient), None when the message was refused before its patient was known
    sender: str | None = None  # x-helsebro-sender, else an HL7 v2 body's MSH-3@MSH-4; not in summary() (its keys are a contract)

    def failed_epoch(self) -> float | None:
        """When it was dead-lettered, in seconds since the epoch; None when no header says (or says it unreadably)."""
        if not self.failed_at:
            return None
        try:
            at = datetime.fromisoformat(self.failed_at)
        except ValueError:
            return None
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()

    def summary(self) -> dict[str, Any]:
        """Return the fields safe for any operator view: ids, reason, position, size; never the body."""
        return {
            "id": self.id,
            "failed_at": self.failed_at,
            "stage": self.stage,
            "reason": self.reason,
            "location": self.location,
            "control_id": self.control_id,
            "size": self.size,
            "delivery_count": self.delivery_count,
            "patient_key": self.patient_key,
        }

    def outcome(self) -> dict[str, Any] | None:
        """Return the OperationOutcome the engine attached, or None when absent or unreadable."""
        raw = self.headers.get(f"{_PREFIX}outcome")
        if not raw:
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters an operator's `dlq list`, `replay --all` or `purge --all` is about; every given field must match.

    *reason*: a substring of the reason, in any case; *sender*, *stage*, *control_id*: equal; *since*:
    dead-lettered at most that many seconds before *now*; *older_than*: more than that. A letter whose
    time is unknown matches neither age: what it cannot be said to be is not replayed or purged on it.
    """

    stage: str | None = None
    reason: str | None = None
    sender: str | None = None
    control_id: str | None = None
    since: float | None = None
    older_than: float | None = None

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.stage, self.reason, self.sender, self.control_id, self.since, self.older_than))

    def matches(self, letter: DeadLetter, now: float) -> bool:
        """Whether *letter* is one of those chosen, at *now* (seconds since the epoch)."""
        if self.stage is not None and letter.stage != self.stage:
            return False
        if self.reason is not None and self.reason.casefold() not in (letter.reason or "").casefold():
            return False
        if self.sender is not None and letter.sender != self.sender:
            return False
        if self.control_id is not None and letter.control_id != self.control_id:
            return False
        if self.since is None and self.older_than is None:
            return True
        failed = letter.failed_epoch()
        if failed is None:
            return False
        return (self.since is None or now - failed <= self.since) and (self.older_than is None or now - failed > self.older_than)


@dataclass(frozen=True, slots=True)
class Browse:
    """The dead letters a pass saw, in queue order."""

    letters: list[DeadLetter]
    truncated: bool


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """How many dead letters failed at *stage* for *reason*."""

    stage: str | None
    reason: str | None
    count: int


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a replay or purge did: the ids done, the ids it no longer found, and the error that stopped it.

    *kept*: the ids published again (the broker confirmed) whose removal from the dead-letter queue
    then failed, so each is both replayed and still a dead letter; the operator must be told, or a
    second replay sends it through a third time believing it the first.
    """

    done: list[str]
    missing: list[str]
    error: str | None = None
    kept: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by Ctrl-C (KeyboardInterrupt), which the caller should pass on


def browse(connection: Connection, queue: str, *, limit: int | None = None, where: LetterFilter | None = None) -> Browse:
    """Return the first *limit* dead letters (all by default) *where* chooses, in queue order, and give every one back.

    The whole queue is read either way (see the module docstring on order). Their bodies are
    not kept (`body` is empty, `size` tells): no caller of a browse shows one, and a queue of
    KITH messages with their PDFs held whole ran an operator's `dlq list` out of memory.

    Raises:
        BrokerUnavailable: the broker cannot be reached, or *queue* does not exist.
    """
    with _translated(connection, queue), _holding(connection, queue) as held:
        letters = [letter for letter, _ in held]
    if where:
        now = time.time()
        letters = [letter for letter in letters if where.matches(letter, now)]
    if limit is not None and len(letters) > limit:
        return Browse(letters=letters[:limit], truncated=True)
    return Browse(letters=letters, truncated=False)


def find(connection: Connection, queue: str, letter_id: str) -> DeadLetter | None:
    """Return the first dead letter with id *letter_id*, or None; give every one back.

    Raises:
        BrokerUnavailable: the broker cannot be reached, or *queue* does not exist.
    """
    with _translated(connection, queue), _holding(connection, queue, keep=lambda letter: letter.id == letter_id) as held:
        return next((letter for letter, _ in held if letter.id == letter_id), None)


def summarise(letters: list[DeadLetter]) -> list[ReasonCount]:
    """Count *letters* per (stage, reason), most frequent first."""
    counts = Counter((letter.stage, letter.reason) for letter in letters)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1] or ""))
    return [ReasonCount(stage=stage, reason=reason, count=n) for (stage, reason), n in ranked]


def replay(connection: Connection, settings: Settings, queue: str, ids: list[str], *, destination: str | None = None) -> ActionResult:
    """Publish each chosen dead letter again, confirmed, then ack it; in queue order.

    A message the engine refused goes back to the inbound exchange, through the whole
    pipeline. A destination's dead letter (*destination*: an external FHIR server
    refused or never took its Bundle) goes back to that destination's work partition
    it came from: it was converted and applied to the record already, and only that
    destination still lacks it. Stops at the first broker error: the dead letters not
    yet acked stay in the queue.

    Raises:
        BrokerUnavailable: *queue* cannot be read at all.
    """
    publisher = Publisher(connection, settings, app_id="helsebro-dlq")
    prefix = settings.engine.broker.names.destination_prefix

    def again(letter: DeadLetter) -> None:
        history = {REPLAY_HEADER: letter.id, **_previous_reasons(letter)}
        if destination is None:
            publisher.publish_inbound(letter.body, headers=history)
            return
        kept = {k: v for k, v in letter.headers.items() if k in _WORK_HEADERS}
        headers = {**kept, "x-helsebro-destination": destination, "x-helsebro-attempt": 1, **history}
        partition = str(letter.headers.get(f"{_PREFIX}partition") or _broker_partition(letter.headers, f"{prefix}.{destination}.", partition_count(settings)) or "p0")
        publisher.publish_to(f"{prefix}.{destination}", partition, letter.body, headers=headers, message_id=letter.id)

    try:
        return _act(connection, queue, ids, again, publishes=True)
    finally:
        publisher.close()


_WORK_HEADERS = frozenset({"x-helsebro-control-id", "x-helsebro-sender", "x-helsebro-message-type", "x-helsebro-patient", "x-helsebro-routes", "x-helsebro-on-failure"})
"""What a destination's worker reads from a work message, kept when its dead letter goes back."""


def _previous_reasons(letter: DeadLetter) -> dict[str, str]:
    """The `x-helsebro-previous-reason` a replay of *letter* carries: its stage and reason, then the reasons it carried.

    The engine and a destination's worker keep it on a dead letter of the replay
    (router.pipeline.settle.replay_history), with `x-helsebro-replay-of`: a letter refused
    again tells `dlq show` what it replaced and each earlier reason, newest first, joined
    by ` | `. Reasons are plain words, never a value from the message; the oldest are
    dropped past _HISTORY_CHARS, so a letter replayed for months keeps a header the
    broker takes.
    """
    reason = f"{letter.stage}: {letter.reason}" if letter.stage and letter.reason else letter.reason or ""
    earlier = _text(letter.headers, "previous-reason") or ""
    reasons = [r for r in (reason, *earlier.split(_HISTORY_SEPARATOR)) if r]
    while len(reasons) > 1 and len(_HISTORY_SEPARATOR.join(reasons)) > _HISTORY_CHARS:
        reasons.pop()
    return {PREVIOUS_REASON_HEADER: _HISTORY_SEPARATOR.join(reasons)[:_HISTORY_CHARS]} if reasons else {}


def purge(connection: Connection, queue: str, ids: list[str]) -> ActionResult:
    """Ack (delete) each chosen dead letter.

    Raises:
        BrokerUnavailable: *queue* cannot be read at all.
    """
    return _act(connection, queue, ids, lambda letter: None)


def _act(connection: Connection, queue: str, ids: list[str], before_ack: Callable[[DeadLetter], object], *, publishes: bool = False) -> ActionResult:
    """Run *before_ack* then ack for each wanted letter; stop at the first broker error or at Ctrl-C.

    With *publishes*, a letter whose *before_ack* returned (published, confirmed) but whose ack
    failed is reported as kept: it went out again and stays in the queue too. A KeyboardInterrupt
    is not re-raised but returned (`interrupted`), so the caller can still say and audit what was
    done before it; every letter not acked is given back either way.
    """
    wanted = set(ids)
    done: list[str] = []
    missing: list[str] = []
    kept: list[str] = []
    error: str | None = None
    failures: tuple[type[BaseException], ...] = (BrokerUnavailable, *broker_errors(connection), KeyboardInterrupt)
    try:
        with _translated(connection, queue), _holding(connection, queue, keep=lambda letter: letter.id in wanted) as held:
            seen = {taken.id for taken, _ in held}
            missing = [i for i in ids if i not in seen]
            for letter, message in held:
                if letter.id not in wanted:
                    continue
                sent = False
                try:
                    before_ack(letter)  # a replay's publish returns once the broker confirmed it
                    sent = publishes
                    message.ack()
                except failures as exc:  # this letter and every later one stay in the queue, in order
                    kept = [letter.id] if sent else []
                    error = _INTERRUPTED if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
                    break
                done.append(letter.id)
    except KeyboardInterrupt:  # while taking the queue or giving it back: the broker returns what is unacked by itself
        error = error or _INTERRUPTED
    return ActionResult(done=done, missing=missing, error=error, kept=kept, interrupted=error == _INTERRUPTED)


_INTERRUPTED = "interrupted (Ctrl-C)"


@contextlib.contextmanager
def _translated(connection: Connection, queue: str) -> Iterator[None]:
    """Turn the broker's errors into BrokerUnavailable, naming a missing queue as such."""
    try:
        yield
    except broker_errors(connection) as exc:
        if is_not_found(exc):
            raise BrokerUnavailable(f"queue {queue!r} does not exist on the broker") from exc
        raise BrokerUnavailable(f"cannot read queue {queue!r}: {type(exc).__name__}") from exc


@contextlib.contextmanager
def _holding(connection: Connection, queue: str, *, keep: Callable[[DeadLetter], bool] = lambda _: False) -> Iterator[list[tuple[DeadLetter, Message]]]:
    """Take every message off *queue* unacked; on exit give back, in order, every one not acked.

    Only the letters *keep* chooses keep their body (the broker holds the rest until they are
    given back): a dead-letter queue can hold more than this process's memory.
    """
    channel = connection.channel()
    held: list[tuple[DeadLetter, Message]] = []
    try:
        source = Queue(queue, no_declare=True)(channel)
        while (message := source.get(no_ack=False)) is not None:
            letter = _letter(message)
            if not keep(letter):
                letter = replace(letter, body=b"")
                message.body = None  # acking and giving back need only its delivery tag
            held.append((letter, message))
        yield held
    finally:
        with contextlib.suppress(*broker_errors(connection)):
            channel.close()  # returns every unacked message, in order; a lost connection does the same
        _wait_for_returns(connection, queue, sum(1 for _, message in held if not message.acknowledged))


def _wait_for_returns(connection: Connection, queue: str, returned: int) -> None:
    """Wait until *queue* shows at least *returned* messages again, or the deadline passes."""
    deadline = time.monotonic() + _RETURN_DEADLINE_SECONDS
    while returned:
        try:
            if queue_depth(connection, queue) >= returned or time.monotonic() >= deadline:
                return
        except BrokerUnavailable:
            return  # the connection is gone: the broker returns the messages by itself
        time.sleep(_RETURN_POLL_SECONDS)


def _letter(message: Message) -> DeadLetter:
    headers = dict(message.headers or {})
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8")
    message_id = (message.properties or {}).get("message_id")
    count = headers.get("x-delivery-count")
    death = _last_death(headers)
    return DeadLetter(
        id=str(message_id) if message_id else _content_id(headers, body),
        failed_at=_text(headers, "failed-at") or _time_text(death.get("time")),
        stage=_text(headers, "stage"),
        reason=_text(headers, "reason") or _broker_reason(headers, death),
        location=_text(headers, "location"),
        control_id=_text(headers, "control-id"),
        size=len(body),
        delivery_count=int(count) if isinstance(count, int) else None,
        headers=headers,
        body=body,
        patient_key=_text(headers, "patient"),
        sender=_text(headers, "sender") or _hl7_sender(body),
    )


def _last_death(headers: dict[str, Any]) -> dict[str, Any]:
    """The broker's most recent dead-lettering of the message (`x-death` lists the newest first), or {}."""
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    return {str(k): v for k, v in first.items()} if isinstance(first, dict) else {}


def _plain(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if value not in (None, "") else None


def _broker_reason(headers: dict[str, Any], death: dict[str, Any]) -> str | None:
    """`broker: delivery_limit (queue helsebro.in.hl7v2.p2)` for a letter the broker dead-lettered, else None.

    The most recent death is why it is here: a parked delivery that expired out of a retry queue and then
    passed the work queue's delivery limit has `expired` as its *first* death.
    """
    reason = _plain(death.get("reason")) or _plain(headers.get("x-first-death-reason"))
    if reason is None:
        return None
    queue = _plain(death.get("queue")) if death.get("reason") else _plain(headers.get("x-first-death-queue"))
    return f"broker: {reason} (queue {queue})" if queue else f"broker: {reason}"


def _time_text(value: object) -> str | None:
    """An `x-death` time as ISO 8601 UTC: AMQP gives a naive UTC datetime, a JSON transport its text or seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC).isoformat()
    return _plain(value)


_PARTITION = re.compile(r"p[0-9]+")


def _broker_partition(headers: dict[str, Any], work_prefix: str, partitions: int) -> str | None:
    """The work partition (`p2`) a letter the broker dead-lettered came from: the queue of an `x-death` entry that is
    one of this destination's partitions (*work_prefix*`p<k>`), else that entry's routing key; None when none says,
    or when it names a partition beyond the *partitions* in use (no queue takes it there)."""
    deaths = headers.get("x-death")
    for death in deaths if isinstance(deaths, list) else []:
        if not isinstance(death, dict):
            continue
        queue = _plain(death.get("queue")) or ""
        keys = death.get("routing-keys")
        named = [queue[len(work_prefix):]] if queue.startswith(work_prefix) else []
        for name in [*named, *(_plain(key) or "" for key in (keys if isinstance(keys, list) else []))]:
            if _PARTITION.fullmatch(name):
                return name if int(name[1:]) < partitions else None
    return None


def _hl7_sender(body: bytes) -> str | None:
    """`MSH-3@MSH-4` of an HL7 v2 body, as the engine names its sender; None for any other body."""
    header = salvage_header(body) if body else None
    return header.sender if header else None


def _text(headers: dict[str, Any], key: str) -> str | None:
    return _plain(headers.get(f"{_PREFIX}{key}"))


def _content_id(headers: dict[str, Any], body: bytes) -> str:
    ours = {k: v for k, v in headers.items() if k.startswith(_PREFIX)}
    digest = hashlib.sha256(orjson.dumps(ours, option=orjson.OPT_SORT_KEYS, default=str) + b"\0" + body)
    return f"h-{digest.hexdigest()[:32]}"
