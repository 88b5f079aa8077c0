"""`helsebro find`: what became of a message, found by its control id or its patient.

    helsebro find --control-id ID [--sender S]     MSH-10 (or a KITH MsgId), optionally one sender's (MSH-3@MSH-4)
    helsebro find --patient NUMBER                 a fødselsnummer, D-nummer or FH-nummer: hashed here, never stored or logged;
                                                   `--patient -` reads it from stdin, out of `ps` and the shell's history
    helsebro find --patient-key KEY                the `patient_key` of a log line or a dead letter (h:…)
    helsebro find --awaiting-apprec 96h            a list: messages Helsebro rendered KITH for at least that long ago
                                                   whose receiver has sent no AppRec yet (follow them up: FACTS §10)
    helsebro find --outcome filtered --since 1h    a list: the journal's messages with that outcome (applied, unchanged,
                                                   duplicate, filtered, forwarded, dead_lettered, receipt), settled since then
                                                   (90s, 15m, 2h, 7d); --sender, --outcome and --since narrow any search
                                                   or list by themselves

It prints what the record's journal holds, newest first: the applied messages
(when, sender, control id, type, patient key, and each resource written with its
version and whether it was created, updated or unchanged), then the messages that
were not applied (a duplicate, filtered by the routes, forwarded only to other
destinations, or dead-lettered), each with a note saying why. Then, for a
control id or a patient, the dead letters with it still waiting in the engine's
and every queued destination's dead-letter queue (id, when, stage, reason); a
list by outcome, sender or time reads the journal only (`helsebro dlq list`
lists a queue). A message found nowhere has not settled: it is still queued, or
it never arrived. The journal keeps 14 days.

Nothing shown is patient data: a patient is a key (a hash of the identity's
search), resources are ids. A person's messages sit under the key of the number
each named: `--patient` also searches the keys of the person's other numbers the
record holds (an old number kept `use: old`) and of the records merged with theirs
(A34, A40: the merged-away number finds the survivor's messages, and the
survivor's finds the merged record's); the text view's last line and `--json`'s
`patient_keys` name every key searched, the number's own first. `--patient-key`
follows them the same way, from the Patients the messages under the key wrote
(the key first). A lookup by patient is still an access to one
person's trail, so it writes a `begin` and an `end` line to the audit log
(`<HELSEBRO_DATA_DIR>/audit.log`) with the patient's key, never the number.

Each message also names the destinations besides the record its routes chose
(none for one dead-lettered before it was forwarded: at convert, or refused by
the record), each with how far it got:
  published      a legacy queue: the broker confirmed it there before the message settled
  delivered      an external FHIR server accepted it (with when: its delivery ledger)
  dead_lettered  refused there: its dead letter is among the dead letters (render, for a
                 legacy queue; deliver, in the destination's own dead-letter queue)
  pending        an external FHIR server has not accepted it yet: it waits in the work
                 queue or is parked for a retry (a list, or --no-dlq, does not read the
                 dead-letter queues: a dead letter then reads as pending, and a legacy
                 queue's render failure of an applied message as published)
  unknown        a destination no longer in routes.yaml, or a message without a control id
A sender that reuses a control id shows the first copy's delivery.

A legacy queue fed KITH XML that Helsebro rendered (format kith) also says
whether its receiver answered: the receiver's AppRec comes back on the inbound
queue, is settled as a `receipt` (never answered, never dead-lettered) and is
journalled under the MsgId it answers, so the message shows `AppRec OK`,
`REFUSED by AppRec` (its note has the Volven 8221 codes) or `no AppRec yet`.
`--outcome receipt` lists the AppRecs received, with their notes.

`--json` prints `{"patient_keys": [...] (empty unless by patient), "applied": [{"key", "applied_at", "sender", "control_id",
"message_type", "patient_key", "outcome" (applied or unchanged), "destinations":
[...], "resources": [{"type", "id", "version", "outcome"}]}], "not_applied":
[{"key", "settled_at", "sender", "control_id", "message_type", "patient_key",
"outcome" (duplicate, filtered, forwarded, dead_lettered or receipt), "destinations": [...],
"note"}], "dead_letters": [{"queue", and the fields of `dlq list --json`}],
"queues_read": [...], "queues_skipped": [{"queue", "why"}], "scans_cut": [{"destination", "read"}],
"more": true when more messages matched than --limit (only the newest are listed; stderr says so too)}`
(--awaiting-apprec reads the newest 20,000 messages sent to each KITH destination; one it
stopped at is named there and on stderr); a destination is
`{"name", "kind", "state", "delivered_at", "receipt"}`: kind `queue`, `fhir`, or `unknown`
(no longer in routes.yaml), state as above, delivered_at null unless delivered, receipt
null unless Helsebro rendered and published KITH there (or an AppRec came), else `{"accepted": true|false|null, "at",
"note"}` (null fields: no AppRec yet).

The text view shows a control character (ESC, BEL, C1) in a control id, a sender,
a note or a dead letter's header as an escape (`\\x1b`), never raw to the terminal;
--json keeps the value and escapes it as JSON does.

Exit 0 when something was found, 1 when nothing was (or the record or the
audit log failed), 2 for a usage error (no search given; a --patient that is not
a valid national id, or an H-nummer: its key depends on the hospital, give --patient-key).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from adapters.text import visible
from router.cli._args import age, positive
from router.contracts import SETTLED_OUTCOMES
from router.errors import BrokerUnavailable, RecordUnavailable
from router.ops import AuditLog
from router.ops.trail import Handover, Trail, find_messages, merged_patient_keys, merged_patient_keys_of_key

if TYPE_CHECKING:
    from adapters.fhir.record import JournalEntry
from router.settings import Settings, load_settings

__all__ = ["register"]

_SCAN_LIMIT = 10_000


def register(subparsers: Any) -> None:
    """Add the `find` verb."""
    p = subparsers.add_parser("find", help="Find what became of a message, by control id or patient.", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--control-id", metavar="ID", help="The message's control id (MSH-10, or a KITH MsgId).")
    p.add_argument("--patient", metavar="NUMBER", help="The patient's fødselsnummer, D-nummer or FH-nummer (hashed, audited); - reads it from stdin.")
    p.add_argument("--patient-key", metavar="KEY", help="The patient's key as a log line or dead letter shows it (h:…; audited).")
    p.add_argument("--sender", metavar="S", help="Only this sender's messages (MSH-3@MSH-4 as logged); a dead letter refused before its sender was known names none and is shown.")
    p.add_argument("--outcome", choices=SETTLED_OUTCOMES, help="Only messages with this outcome (or list them, newest first).")
    p.add_argument("--since", type=age, metavar="AGE", help="Only messages settled within AGE: 90s, 15m, 2h, 7d.")
    p.add_argument("--awaiting-apprec", type=age, metavar="AGE",
                   help="List the messages sent to a KITH destination at least AGE ago (96h is the standard's) with no AppRec yet.")
    p.add_argument("--limit", type=positive, default=100, metavar="N", help="At most N messages from the journal (default 100).")
    p.add_argument("--no-dlq", action="store_true", help="Search the record's journal only, not the dead-letter queues.")
    p.add_argument("--scan-limit", type=positive, default=_SCAN_LIMIT, metavar="N",
                   help=f"Skip a dead-letter queue holding more than N messages (default {_SCAN_LIMIT}).")
    p.add_argument("--json", action="store_true", help="Print one JSON document.")
    p.set_defaults(func=_find)


def _fail(message: str, code: int = 1) -> int:
    print(f"helsebro find: {message}", file=sys.stderr)
    return code


def _patient_key(args: argparse.Namespace, settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """The key to search by, from --patient-key or --patient, and the number's (system, value) for merged_patient_keys;
    raises ValueError for a number that is no national id."""
    if args.patient_key:
        return str(args.patient_key), None
    if not args.patient:
        return None, None
    number = sys.stdin.readline().strip() if args.patient == "-" else args.patient
    from router.pipeline.convert import patient_key_for
    from schemas.identity import validate_person_id

    person = validate_person_id(number)  # PersonIdError (a ValueError) never quotes the number
    if person.kind == "HNR":
        # The engine keys an H-nummer under its hospital's own system (router.mapping.library._system), which the
        # number alone does not tell: hashed under any other, it matched nothing and read as "never arrived".
        raise ValueError("an H-nummer is a hospital's own number: give the --patient-key a log line or dead letter shows")
    return patient_key_for(person.system, person.value, settings.phi_key_bytes), (person.system, person.value)


def _find(args: argparse.Namespace) -> int:
    if args.patient and args.patient_key:
        return _fail("give --patient or --patient-key, not both", 2)
    settings = load_settings()
    try:
        patient_key, number = _patient_key(args, settings)
    except ValueError as exc:
        return _fail(f"--patient is not a fødselsnummer, D-nummer or FH-nummer ({exc})", 2)
    if args.awaiting_apprec and (args.control_id or patient_key or args.outcome or args.sender or args.since):
        return _fail("--awaiting-apprec lists by itself: give it without --control-id, --patient, --outcome, --sender or --since", 2)
    if not (args.control_id or patient_key or args.outcome or args.sender or args.since or args.awaiting_apprec):
        return _fail("give --control-id, --patient or --patient-key (or list by --outcome, --sender, --since or --awaiting-apprec)", 2)
    audit = AuditLog(settings.data_dir / "audit.log") if patient_key else None
    try:
        action_id = audit.begin("find", patient_key=patient_key, control_id=args.control_id) if audit else ""
        # after the begin line: it reads the person's record
        also = merged_patient_keys(settings, *number) if number else merged_patient_keys_of_key(settings, patient_key) if patient_key else []
        trail = _search(settings, args, patient_key, also)
        if audit:
            audit.end("find", action_id, patient_key=patient_key, patient_keys=[patient_key, *also], applied=len(trail.applied),
                      not_applied=len(trail.not_applied), dead_letters=len(trail.dead_letters))
    except RecordUnavailable as exc:
        if audit:  # the begin line stands: say the lookup ended, having read nothing, as dlq's end lines carry their error
            try:
                audit.end("find", action_id, patient_key=patient_key, applied=0, not_applied=0, dead_letters=0, error=f"the record: {exc}")
            except OSError as audit_exc:
                return _fail(f"the record: {exc}; audit log {settings.data_dir / 'audit.log'}: {audit_exc}")
        return _fail(f"the record: {exc}")
    except OSError as exc:
        return _fail(f"audit log {settings.data_dir / 'audit.log'}: {exc}")
    for queue, why in trail.queues_skipped:
        print(f"helsebro find: dead letters in {queue} not searched: {why}", file=sys.stderr)
    if trail.more:
        print(f"helsebro find: more than {args.limit:,} messages match; only the newest {args.limit:,} are shown (raise --limit)",
              file=sys.stderr)
    for name, read in trail.scans_cut:
        print(f"helsebro find: only the newest {read:,} messages sent to {name} were read; older ones still awaiting an AppRec are not listed",
              file=sys.stderr)
    searched = [patient_key, *also] if patient_key else []
    print(json.dumps(_as_json(trail, searched), ensure_ascii=False, indent=2) if args.json else _as_text(trail, searched))
    return 0 if trail.found else 1


def _search(settings: Settings, args: argparse.Namespace, patient_key: str | None, also: list[str]) -> Trail:
    since = time.time() - args.since if args.since else None
    lookup = functools.partial(find_messages, settings, control_id=args.control_id, patient_key=patient_key, also_patient_keys=also, sender=args.sender,
                               outcome=args.outcome, since=since, limit=args.limit, awaiting_apprec=args.awaiting_apprec)
    if args.no_dlq or not (args.control_id or patient_key or args.awaiting_apprec):  # awaiting: render dead letters are not due an AppRec
        return lookup()
    from adapters.amqp.connection import open_connection

    try:
        conn = open_connection(settings)
    except BrokerUnavailable as exc:
        trail = lookup()
        trail.queues_skipped.append(("every dead-letter queue", str(exc)))
        return trail
    try:
        return lookup(connection=conn, scan_limit=args.scan_limit)
    finally:
        conn.release()


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _destinations(trail: Trail, entry: JournalEntry) -> list[dict[str, Any]]:
    return [{"name": h.name, "kind": h.kind, "state": h.state, "delivered_at": _when(h.at) if h.at is not None else None,
             "receipt": _receipt(h)}
            for h in trail.handovers_of(entry)]


def _receipt(h: Handover) -> dict[str, Any] | None:
    if h.receipt is None:
        return {"accepted": None, "at": None, "note": None} if h.awaits_receipt else None
    return {"accepted": h.receipt_accepted, "at": _when(h.receipt.applied_at), "note": h.receipt.note}


def _as_json(trail: Trail, patient_keys: list[str]) -> dict[str, Any]:
    return {
        "patient_keys": patient_keys,
        "applied": [
            {"key": e.key, "applied_at": _when(e.applied_at), "sender": e.sender, "control_id": e.control_id, "message_type": e.message_type,
             "patient_key": e.patient_key, "outcome": e.outcome, "destinations": _destinations(trail, e),
             "resources": [{"type": t, "id": i, "version": v, "outcome": o} for t, i, v, o in e.resources]}
            for e in trail.applied
        ],
        "not_applied": [
            {"key": e.key, "settled_at": _when(e.applied_at), "sender": e.sender, "control_id": e.control_id, "message_type": e.message_type,
             "patient_key": e.patient_key, "outcome": e.outcome, "destinations": _destinations(trail, e), "note": e.note}
            for e in trail.not_applied
        ],
        "dead_letters": [{"queue": queue, **letter.summary()} for queue, letter in trail.dead_letters],
        "queues_read": trail.queues_read,
        "queues_skipped": [{"queue": q, "why": why} for q, why in trail.queues_skipped],
        "scans_cut": [{"destination": name, "read": read} for name, read in trail.scans_cut],
        "more": trail.more,
    }


def _shown(value: object) -> str:
    """A field for the text view: `-` when empty, a sender's control characters escaped (adapters.text.visible).

    Control ids, senders, types, notes and a dead letter's headers are what a sender sent or are built from it:
    printed raw, an ESC in MSH-10 clears the operator's screen or retitles the terminal.
    """
    return visible(str(value)) if value not in (None, "") else "-"


def _routed(trail: Trail, e: JournalEntry) -> list[str]:
    handovers = trail.handovers_of(e)
    if not handovers:
        return []
    return ["      also to: " + ", ".join(f"{_shown(h.name)} ({h.kind}): {h.state.replace('_', '-')}{f' {_when(h.at)}' if h.at is not None else ''}"
                                       f"{_receipt_text(h)}" for h in handovers)]


def _receipt_text(h: Handover) -> str:
    if h.receipt is None:
        return ", no AppRec yet" if h.awaits_receipt and h.state == "published" else ""
    return f", {'AppRec OK' if h.receipt_accepted else 'REFUSED by AppRec'} {_when(h.receipt.applied_at)}"


def _entry(e: JournalEntry) -> str:
    return f"  {_when(e.applied_at)}  {_shown(e.sender)}  {_shown(e.control_id)}  {_shown(e.message_type)}  patient {_shown(e.patient_key)}"


def _as_text(trail: Trail, patient_keys: list[str]) -> str:
    lines = [f"applied ({len(trail.applied)}, newest first):" if trail.applied else "applied: none in the record's journal"]
    for e in trail.applied:
        lines.append(_entry(e))
        lines += [f"      {_shown(t)}/{_shown(i)}/_history/{v}  {o}" for t, i, v, o in e.resources]
        lines += _routed(trail, e)
    if trail.not_applied:
        lines.append(f"not applied ({len(trail.not_applied)}, newest first):")
        for e in trail.not_applied:
            lines.append(_entry(e))
            lines.append(f"      {_shown(e.note or e.outcome)}")
            lines += _routed(trail, e)
    if trail.dead_letters:
        lines.append(f"dead letters ({len(trail.dead_letters)}):")
        for queue, d in trail.dead_letters:
            lines.append(f"  {_shown(d.id)}  {queue}  {_shown(d.failed_at)}  {_shown(d.stage)}  {_shown(d.control_id)}  at {_shown(d.location)}: {_shown(d.reason)}")
    elif trail.queues_read:
        lines.append(f"dead letters: none in {', '.join(trail.queues_read)}")
    elif trail.listed:
        lines.append("dead letters: searched for a control id or a patient only (helsebro dlq list lists a queue)")
    if len(patient_keys) > 1:  # the record's merges and old numbers: the operator sees why other keys' messages are here
        lines.append(f"searched under the patient's {len(patient_keys)} keys (its other numbers, records merged with it): {', '.join(patient_keys)}")
    return "\n".join(lines)
