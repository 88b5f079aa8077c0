"""Remember the destination queues the engine declared, and name those of a destination taken out of routes.yaml.

A queue stays on the broker when its destination leaves config/routes.yaml, with
whatever still waits in it (a legacy system's unread messages, a FHIR destination's
work, retries and dead letters), and AMQP 0-9-1 cannot list a broker's queues to
find it. So at each start the engine keeps, in `<data_dir>/declared-destinations.json`,
every destination queue it declares (queue name -> destination), per broker, and
names each remembered queue it no longer declares that is still there, with its
depth (`destination_not_configured`, a warning: names and counts, never a message).
A remembered queue is forgotten once it is gone: on RabbitMQ deleted, on the
embedded broker (which cannot tell an empty queue from none) empty. Queues beyond
`broker.partitions` of a destination still configured are adapters/amqp/connection.py
`leftover_partitions`' to name, not this module's.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson

from adapters.amqp.connection import all_queue_names, depth_if_declared, is_embedded

if TYPE_CHECKING:
    from kombu import Connection

    from router.settings import Settings

__all__ = ["Unconfigured", "unconfigured_queues"]

_RECORD = "declared-destinations.json"
_ROLES = frozenset({"work", "retry", "destination_dead_letter", "legacy"})


@dataclass(frozen=True, slots=True)
class Unconfigured:
    """A queue the engine declared for *destination*, which routes.yaml no longer names, and its ready messages."""

    destination: str
    queue: str
    depth: int


def unconfigured_queues(connection: Connection, settings: Settings) -> tuple[list[Unconfigured], str | None]:
    """Return the remembered destination queues no longer declared that are still there, and remember today's.

    The second value is why the record could not be read or written (None when it could): the
    engine says so and runs on, since the queues themselves are unharmed.

    Raises:
        BrokerUnavailable: the broker went away while asking (a missing queue is not an error).
    """
    path = Path(settings.data_dir) / _RECORD
    broker = _broker_key(settings)
    record, error = _read(path)
    declared = {q.name: q.destination for q in all_queue_names(settings) if q.role in _ROLES}
    found: list[Unconfigured] = []
    kept = dict(declared)
    for queue, destination in sorted(record.get(broker, {}).items()):
        if queue in declared or _a_leftover_partition(settings, queue):
            continue
        depth = depth_if_declared(connection, queue)
        if depth is None or (depth == 0 and is_embedded(settings)):
            continue  # gone: forget it
        found.append(Unconfigured(destination, queue, depth))
        kept[queue] = destination
    if record.get(broker) != kept:
        error = _write(path, {**record, broker: kept}) or error
    return found, error


def _a_leftover_partition(settings: Settings, queue: str) -> bool:
    """Whether *queue* is a work partition of a destination still configured (`leftover_partitions` names those)."""
    prefix = settings.engine.broker.names.destination_prefix
    return any(re.fullmatch(re.escape(f"{prefix}.{d}.p") + r"[0-9]+", queue) for d in settings.routes.queued())


def _broker_key(settings: Settings) -> str:
    """The broker the queues live on: host, port and vhost of HELSEBRO_BROKER_URL (never its credentials), or `embedded`."""
    if not settings.broker_url:
        return "embedded"
    url = urlsplit(settings.broker_url)
    return f"{url.hostname or ''}:{url.port or 5672}{url.path or '/'}"


def _read(path: Path) -> tuple[dict[str, dict[str, str]], str | None]:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, None
    except (OSError, orjson.JSONDecodeError) as exc:
        return {}, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}"
    if not isinstance(raw, dict):
        return {}, f"cannot read {path}: not a JSON object"
    return {str(b): {str(q): str(d) for q, d in qs.items()} for b, qs in raw.items() if isinstance(qs, dict)}, None


def _write(path: Path, record: dict[str, dict[str, str]]) -> str | None:
    """Replace the record whole (a temporary file renamed over it): two workers starting at once never leave half of one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write {path}: {exc.strerror or exc}"
    return None
