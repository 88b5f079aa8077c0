"""`helsebro status`: the queues, what settled lately, where the broker and the record are, XML validation, and why messages were dead-lettered.

Per queue: depth (ready messages), consumers, and the change of depth per
second over `--interval` seconds. With `broker.partitions` above 1 the inbound
queue is only the intake: the patient partitions (role `partition`, after the
others) hold what waits for a worker. Without RabbitMQ's management plugin, AMQP
0-9-1 shows depth and consumers only, so that change is the one rate there
is: it is not a throughput (a queue filled and drained at the same pace shows
0). The embedded transport knows no consumers: they show as `-` (null).
Dead letters are counted by stage and reason from their headers, never from
their bodies (the table shows a control character in them as an escape,
`\\x1b`); reading them takes the whole queue and gives it back (see
router/ops/deadletters.py), so a queue deeper than `--scan-limit` is not
read (`complete` false, `scanned` 0).

`--json` prints one JSON document. Its keys are a contract: new keys may be
added, existing ones keep their name and meaning.

    {
      "broker": {"transport": "rabbitmq" | "embedded",
                 "location": "amqp://guest@127.0.0.1:5672/%2F" | "/abs/data/broker",
                 "damaged": 0 | null},
      "record": {"kind": "sqlite" | "postgresql",
                 "location": "/abs/data/record.sqlite3" | "postgresql://user@host/db",
                 "state": "ready" | "none_yet" | "unusable", "reason": "..." | null},
      "xml_validation": {"enabled": false, "xsd_dir": null},
      "patient_keys": {"keyed": false},
      "interval_s": 1.0,
      "queues": [{"role": "inbound" | "dead_letter" | "replies" | "partition", "name": "helsebro.in.hl7v2",
                  "exists": true, "depth": 0 | null, "consumers": 1 | null,
                  "depth_change_per_s": 0.0 | null}],
      "dead_letters": [{"queue": "helsebro.dlq", "scanned": 2, "complete": true,
                        "by_reason": [{"stage": "convert", "reason": "...", "count": 2}]}],
      "destinations": [{"name": "ekstern", "delivered_24h": 120 | null, "waiting": 0 | null,
                        "retrying": 0 | null, "dead_lettered": 1 | null}],
      "settled": {"last_minute": {"applied": 12, "unchanged": 0, "duplicate": 1, "filtered": 0,
                                  "forwarded": 3, "dead_lettered": 0, "receipt": 2},
                  "last_hour": {...the same outcomes}} | null,
      "apprecs": [{"destination": "kommune", "overdue": 3 | null, "overdue_after_s": 345600,
                   "complete": true, "dead_letters_read": true}],
      "apprecs_refused": {"last_hour": 0, "last_24h": 1} | null,
      "apprecs_unmatched": {"last_hour": 0, "last_24h": 1} | null
    }

`record.state` says whether the record could be read: `ready`; `none_yet`, no
SQLite record file yet (a fresh install: nothing has been applied); or
`unusable`, with `reason` saying why (the database cannot be reached, or the file
is not a Helsebro record, which status never writes to).

`broker.damaged` counts the embedded broker's message files that did not
decode and were set aside in its `damaged/` folder (null on RabbitMQ).

`settled` counts the messages the engine settled in the last minute and the
last hour, per outcome (`receipt`: an AppRec answering a KITH message Helsebro
sent), from the record's journal (`helsebro find` reads the
same rows): the throughput and error rate AMQP cannot show. A message that was
not applied and names neither a control id nor a patient is not journalled, so
not counted (its dead letter is). Null when the record cannot be read or is not
there yet.

Per destination fed KITH that Helsebro rendered (`format: kith`): `overdue`
counts the messages sent there at least `--apprec-overdue` ago (default 96h,
the standard's follow-up) whose receiver has sent no AppRec yet, as
`helsebro find --awaiting-apprec` lists them (from the newest 20,000 sent
there: `complete` false when there were more; null when the record cannot be
read). A message applied but dead-lettered at render was never sent, which
only its dead letter says: when the engine's dead-letter queue is not read
(deeper than `--scan-limit`, or the broker failing), `dead_letters_read` and
`complete` are false and such a message may be counted.

`apprecs_refused` counts the AppRecs received in the last hour and the last 24
hours that refuse a message Helsebro sent (status 2 Avvist: FACTS §10 asks for an
alarm), from the same journal rows (`receipt` outcomes; `helsebro find --outcome
receipt` lists them, and `find` shows each beside the message it answers). Null
when the record cannot be read.

`apprecs_unmatched` counts, in the same windows, the AppRecs received that
answer nothing Helsebro sent: their OriginalMsgId is no MsgId of a KITH message
it published in the last 14 days (misrouted, or forged; the log's
`apprec_unmatched` names them, and their `find` note says so). Kept in the
record's ledger as they settle; a redelivered copy counts once. Null when the
record cannot be read.

Per queued destination (an external FHIR server): delivered in the last 24 hours
(from the delivery ledger the record keeps; null when the record cannot be read),
and the depths of its work partitions (waiting), its retry ladder (retrying) and
its dead-letter queue (dead-lettered; `helsebro dlq --queue` acts on it).

`patient_keys.keyed` says whether the hashes patients are logged, dead-lettered
and journalled under are keyed with HELSEBRO_PHI_KEY (an HMAC: only who holds
the secret can tell whose a key is), or plain (anyone can find a key's number by
hashing every number). The secret itself is never shown.

URLs never carry a password. Exit 0; 1 when the broker cannot be reached
(one line on stderr); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from adapters.amqp.connection import damaged_messages, open_connection
from adapters.text import visible
from router.cli._args import age, age_text, whole_number
from router.contracts import SETTLED_OUTCOMES
from router.errors import BrokerUnavailable, HelsebroError
from router.ops import broker_location, browse, queue_stats, record_location, summarise
from router.ops.apprecs import APPREC_OVERDUE_S, overdue_apprecs
from router.pipeline.settle import UNMATCHED_PREFIX
from router.settings import Settings, load_settings

__all__ = ["format_table", "register", "status_document"]

_SCAN_LIMIT = 10_000
_APPREC_OVERDUE = APPREC_OVERDUE_S  # FACTS §10: a sender follows up a message unanswered after 96 hours


def register(subparsers: Any) -> None:
    """Add the `status` verb."""
    parser = subparsers.add_parser("status", help="Show queue depths, consumers, dead letters by reason, and where things are.", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="Print one JSON document (keys documented above) instead of a table.")
    parser.add_argument("--interval", type=_seconds, default=1.0, metavar="SECONDS", help="Seconds between the two depth samples; 0 takes one sample and reports no change (default 1.0).")
    parser.add_argument("--scan-limit", type=whole_number(0), default=_SCAN_LIMIT, metavar="N", help=f"Count reasons only when a dead-letter queue holds at most N messages (it is read whole); 0 skips it (default {_SCAN_LIMIT}).")
    parser.add_argument("--apprec-overdue", type=age, default=_APPREC_OVERDUE, metavar="AGE",
                        help="Count a KITH message as overdue when its AppRec has not come AGE after it was sent: 90s, 15m, 2h, 7d (default 96h).")
    parser.set_defaults(func=_status)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError("must be between 0 and 60 seconds")
    return value


def status_document(settings: Settings, *, interval: float, scan_limit: int = _SCAN_LIMIT,
                    apprec_overdue: float = _APPREC_OVERDUE) -> dict[str, Any]:
    """Gather everything `status` shows, as the `--json` document.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
    """
    conn = open_connection(settings)
    try:
        stats = queue_stats(conn, settings, interval=interval)
        dead_letters = []
        for q in stats:
            if q.role != "dead_letter":
                continue
            letters, complete = [], not q.depth  # a missing or empty queue is read completely
            if q.exists and q.depth and q.depth <= scan_limit:  # a pass reads the whole queue or nothing
                letters, complete = browse(conn, q.name).letters, True
            dead_letters.append({
                "queue": q.name,
                "scanned": len(letters),
                "complete": complete,
                "by_reason": [{"stage": r.stage, "reason": r.reason, "count": r.count} for r in summarise(letters)],
            })
        record, state = _open_record(settings)
        try:
            destinations = _destinations(conn, settings, record)
            settled = _settled(record)
            refused = _refused(record)
            unmatched = _unmatched(record)
        finally:
            if record is not None:
                record.close()
        apprecs = _apprecs(conn, settings, apprec_overdue, scan_limit, readable=record is not None)
    finally:
        conn.release()
    return {
        "broker": {**broker_location(settings), "damaged": damaged_messages(settings)},
        "record": {**record_location(settings), **state},
        "xml_validation": {"enabled": settings.xsd_dir is not None, "xsd_dir": str(settings.xsd_dir) if settings.xsd_dir else None},
        "patient_keys": {"keyed": settings.phi_key is not None},
        "interval_s": interval,
        "queues": [
            {"role": q.role, "name": q.name, "exists": q.exists, "depth": q.depth, "consumers": q.consumers, "depth_change_per_s": q.depth_change_per_s}
            for q in stats
        ],
        "dead_letters": dead_letters,
        "destinations": destinations,
        "settled": settled,
        "apprecs": apprecs,
        "apprecs_refused": refused,
        "apprecs_unmatched": unmatched,
    }


_DELIVERED_WINDOW_S = 24 * 3600.0
_SETTLED_WINDOWS = (("last_minute", 60.0), ("last_hour", 3600.0))


def _open_record(settings: Settings) -> tuple[Any, dict[str, str | None]]:
    """The record, or None when it cannot be opened (status still shows the queues); and its `state` and `reason`.

    No record file yet is a state of its own (`none_yet`): on a fresh install nothing has
    been applied, which is no fault and must not read as one; any other failure is `unusable`.
    """
    from adapters.fhir.record import NoRecord, open_record

    try:
        return open_record(settings, create=False), {"state": "ready", "reason": None}
    except NoRecord:
        where = record_location(settings)["location"]
        return None, {"state": "none_yet", "reason": f"no record yet at {where}: nothing has been applied"}
    except HelsebroError as exc:
        return None, {"state": "unusable", "reason": str(exc)}


def _settled(record: Any) -> dict[str, dict[str, int]] | None:
    """Per window, the messages settled in it by outcome (the record's journal); None when the record cannot be read."""
    if record is None:
        return None
    now = time.time()
    try:
        return {name: record.settled_counts(since=now - seconds) for name, seconds in _SETTLED_WINDOWS}
    except HelsebroError:
        return None


_REFUSED_WINDOWS = (("last_hour", 3600.0), ("last_24h", 24 * 3600.0))


def _refused(record: Any) -> dict[str, int] | None:
    """Per window, the AppRecs journalled that refuse what Helsebro sent; None when the record cannot be read."""
    if record is None:
        return None
    now = time.time()
    try:
        return {name: record.refused_receipts(since=now - seconds) for name, seconds in _REFUSED_WINDOWS}
    except HelsebroError:
        return None


def _unmatched(record: Any) -> dict[str, int] | None:
    """Per window, the AppRecs that answer nothing Helsebro sent (the ledger's UNMATCHED_PREFIX keys); None when the record cannot be read."""
    if record is None:
        return None
    now = time.time()
    try:
        return {name: record.count_applied(UNMATCHED_PREFIX, since=now - seconds) for name, seconds in _REFUSED_WINDOWS}
    except HelsebroError:
        return None


def _apprecs(conn: Any, settings: Settings, overdue_after: float, scan_limit: int, *, readable: bool) -> list[dict[str, Any]]:
    """Per KITH destination, the messages sent there at least *overdue_after* seconds ago still without an AppRec."""
    counts = overdue_apprecs(settings, overdue_after, connection=conn, scan_limit=scan_limit, readable=readable)
    return [{"destination": c.destination, "overdue": c.overdue, "overdue_after_s": overdue_after, "complete": c.complete,
             "dead_letters_read": c.dead_letters_read} for c in counts]


def _destinations(conn: Any, settings: Settings, record: Any) -> list[dict[str, Any]]:
    """Per queued destination: delivered in the last 24 hours (the delivery ledger), and what waits, retries or died.

    Waiting, retrying and dead-lettered are the depths of its work partitions, its retry
    ladder and its dead-letter queue; delivered counts the ledger's keys of the destination,
    which the record keeps (null when the record cannot be read).
    """
    from adapters.amqp.connection import queue_depth, topology

    queued = topology(settings).destinations
    if not queued:
        return []

    def depth(names: Sequence[str]) -> int | None:
        try:
            return sum(queue_depth(conn, n) for n in names)
        except BrokerUnavailable:  # a queue not declared yet (the engine has not run)
            return None

    delivered: dict[str, int | None] = {d.name: None for d in queued}
    if record is not None:
        try:
            since = time.time() - _DELIVERED_WINDOW_S
            delivered = {d.name: record.count_applied(f"dest|{d.name}|", since=since) for d in queued}
        except HelsebroError:
            pass  # the record is away: delivered stays null, the queues still show
    return [
        {
            "name": d.name,
            "delivered_24h": delivered[d.name],
            "waiting": depth([str(q.name) for q in d.work]),
            "retrying": depth([str(q.name) for q in d.retry]),
            "dead_lettered": depth([str(d.dead_letter.name)]),
        }
        for d in queued
    ]


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = ()) -> list[str]:
    """Return *rows* under *header* as aligned lines; columns in *right* are right-aligned, None shows as `-`."""
    cells = [[str(h) for h in header]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
    return lines


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        doc = status_document(settings, interval=args.interval, scan_limit=args.scan_limit, apprec_overdue=args.apprec_overdue)
    except BrokerUnavailable as exc:
        where = broker_location(settings)["location"]
        print(f"helsebro status: cannot reach the broker at {where}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print("\n".join(_human(doc)))
    return 0


def _human(doc: dict[str, Any]) -> list[str]:
    xml = doc["xml_validation"]
    lines = format_table(
        ("", "", ""),
        [
            ("broker", doc["broker"]["transport"], doc["broker"]["location"]),
            ("record", doc["record"]["kind"], _record_note(doc["record"])),
            ("xml validation", "on" if xml["enabled"] else "off", xml["xsd_dir"] or "(HELSEBRO_XSD_DIR is not set)"),
            ("patient keys", *(("keyed", "HMAC with HELSEBRO_PHI_KEY") if doc["patient_keys"]["keyed"]
                               else ("plain hash", "(HELSEBRO_PHI_KEY is not set: a key can be traced to its number by hashing every number)"))),
        ],
    )[1:]
    rows = [
        (q["role"], q["name"], q["depth"] if q["exists"] else "missing", q["consumers"], _signed(q["depth_change_per_s"]))
        for q in doc["queues"]
    ]
    lines += ["", *format_table(("ROLE", "QUEUE", "DEPTH", "CONSUMERS", "DEPTH CHANGE/S"), rows, right=(2, 3, 4))]
    if doc["broker"]["damaged"]:
        lines.append(f"{doc['broker']['damaged']} unreadable message file(s) set aside in {doc['broker']['location']}/damaged (not delivered; see the log's embedded_message_unreadable)")
    rate = f"change of depth per second over {doc['interval_s']} s" if doc["interval_s"] else "one sample, so no change of depth"
    lines.append(f"(depth = ready messages; {rate}: AMQP 0-9-1 shows no message rates without the management plugin)")
    none_yet = doc["record"]["state"] == "none_yet"
    if doc["settled"] is None and none_yet:
        lines += ["", f"SETTLED: none yet ({doc['record']['reason']})"]
    elif doc["settled"] is None:
        lines += ["", "SETTLED: not known (the record cannot be read)"]
    else:
        minute, hour = doc["settled"]["last_minute"], doc["settled"]["last_hour"]
        lines += ["", *format_table(("SETTLED", "LAST MINUTE", "LAST HOUR"), [(o.replace("_", "-"), minute[o], hour[o]) for o in SETTLED_OUTCOMES], right=(1, 2))]
    refused = doc["apprecs_refused"]
    if refused is None and none_yet:
        lines += ["", "APPRECS REFUSED: none yet (no record yet)"]
    elif refused is None:
        lines += ["", "APPRECS REFUSED: not known (the record cannot be read)"]
    else:
        lines += ["", f"APPRECS REFUSED  {refused['last_hour']}  {refused['last_24h']}  (last hour, last 24 h: AppRecs refusing a message "
                      "Helsebro sent; helsebro find --outcome receipt lists them)"]
    unmatched = doc["apprecs_unmatched"]
    if unmatched is None:
        lines += ["", f"APPRECS UNMATCHED: {'none yet (no record yet)' if none_yet else 'not known (the record cannot be read)'}"]
    else:
        lines += ["", f"APPRECS UNMATCHED  {unmatched['last_hour']}  {unmatched['last_24h']}  (last hour, last 24 h: AppRecs answering "
                      "nothing Helsebro sent; the log's apprec_unmatched names them)"]
    if doc["destinations"]:
        lines += ["", *format_table(("DESTINATION", "DELIVERED (24 H)", "WAITING", "RETRYING", "DEAD-LETTERED"),
                                    [(d["name"], d["delivered_24h"], d["waiting"], d["retrying"], d["dead_lettered"]) for d in doc["destinations"]], right=(1, 2, 3, 4))]
    if doc["apprecs"]:
        after = age_text(doc["apprecs"][0]["overdue_after_s"])
        lines += ["", *format_table(("KITH DESTINATION", f"NO APPREC AFTER {after}", ""),
                                    [(a["destination"], a["overdue"], _apprec_note(a)) for a in doc["apprecs"]], right=(1,))]
        if any(a["overdue"] for a in doc["apprecs"]):
            lines.append(f"(helsebro find --awaiting-apprec {after.replace(' ', '')} lists them)")
    for dl in doc["dead_letters"]:
        lines += ["", f"DEAD LETTERS in {dl['queue']} by reason"]
        if not dl["complete"]:
            lines.append("not read: more than --scan-limit messages wait")
            continue
        if not dl["by_reason"]:
            lines.append("none")
            continue
        lines += format_table(("COUNT", "STAGE", "REASON"), [(r["count"], _shown(r["stage"]), _shown(r["reason"])) for r in dl["by_reason"]], right=(0,))
    return lines


def _record_note(record: dict[str, Any]) -> str:
    """The record's location, and why it is unusable when it is (a plain reason, e.g. not a Helsebro record)."""
    if record["state"] == "unusable":
        return f"{record['location']}  (unusable: {visible(record['reason'])})"
    if record["state"] == "none_yet":
        return f"{record['location']}  (no record yet: nothing has been applied)"
    return str(record["location"])


def _apprec_note(apprec: dict[str, Any]) -> str:
    """Why an overdue count is not exact: too few read (it may be higher), or the dead letters unread (it may be lower)."""
    if not apprec["dead_letters_read"]:
        return "(dead letters not read: one dead-lettered at render may be counted)"
    return "" if apprec["complete"] else "(of the newest 20,000 sent)"


def _shown(value: str | None) -> str | None:
    """A dead letter's header for the table: its control characters escaped (adapters.text.visible), as `dlq` and `find` show them.

    Any publisher can put a letter in the dead-letter queue: an ESC printed raw clears the
    operator's screen, a line break breaks the table. None stays None (shown as `-`).
    """
    return None if value is None else visible(value)


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.2f}"
