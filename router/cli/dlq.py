"""`helsebro dlq list|show|replay|purge`: look into the dead-letter queue and act on its messages.

    helsebro dlq list [--json] [--limit N]       id, failed at, stage, reason, location, control id, size
    helsebro dlq show ID [--json] [--body]       headers and OperationOutcome; the body only with --body
    helsebro dlq replay (ID... | --all)          back to the inbound exchange, through the whole pipeline
                                                 (a destination's dead letter, --queue helsebro.dest.<name>.dlq:
                                                 back to that destination's work partition)
    helsebro dlq purge [ID... | --all]           delete for good (no ids: every dead letter, as --all)

    filters, for list, replay --all and purge --all (which they narrow), all of them must match:
      --stage S            convert, apply, render, deliver or internal
      --reason TEXT        the reason contains TEXT, in any case (`--reason broker:` for what the broker dead-lettered)
      --sender S           the sender as the journal names it (`LAB@STOLAV`, a KITH HER-id; a KITH
                           message refused at convert or apply names none in its dead letter yet)
      --control-id ID      MSH-10 or the KITH MsgId
      --since AGE          dead-lettered within AGE (90s, 15m, 2h, 7d, as `helsebro find --since`)
      --older-than AGE     dead-lettered more than AGE ago

`list` and `show` never print a message body: bodies are patient data (DESIGN
§5). Nor does `show` print what a FHIR server said when it refused a message
(the outcome's `details.text`): its words may quote the resource, names and
addresses included, so `show` prints `withheld: …` in their place. `show
--body` prints both, `replay` and `purge` change the queue; each of the three
asks `... [y/N]` on the terminal first (`--yes` answers for it; with stdin not
a terminal and no `--yes` it refuses) and writes a `begin` and an `end` line
to the audit log `<HELSEBRO_DATA_DIR>/audit.log`: who (the OS user,
and `HELSEBRO_OPERATOR` when set), when (UTC), what (action, queue, ids,
counts). Being allowed to run this on the engine host, as a user who can read
the data directory, is the authorisation.

`replay` and `purge` read the queue once to count what they will do, ask, and
then act in a second pass on exactly the ids counted (`--all` too: a dead
letter that arrives in between is left alone). How a pass takes messages
without losing them, and what a crash does, is router/ops/deadletters.py's
docstring.

`list --json` prints `{"queue": str, "truncated": bool, "dead_letters": [{"id",
"failed_at", "stage", "reason", "location", "control_id", "size",
"delivery_count", "patient_key"}]}` (`patient_key`: the hashed key `helsebro find --patient` searches by;
null when the message was refused before its patient was known); `show --json` prints `{"queue": str, "dead_letter": {the
same fields}, "headers": {...}, "outcome": {OperationOutcome} | null, "body":
str | null, "body_charset": str | null}` (the body as text in the charset the message names:
UTF-8 when it is valid UTF-8, else MSH-18's or the XML declaration's, else ISO-8859-1).
Keys are a contract: new ones may be added, none renamed. A filter changes
which letters are listed (`--limit` counts those), never the shape.

A letter the broker dead-lettered (a quorum queue's delivery limit, a message
TTL) has the broker's reason: `broker: delivery_limit (queue …)`. A replay or
purge narrowed by a filter says the filter in its question and in its audit
lines (`filter`), beside the count.

The text views show a control character (ESC, BEL, C1) in a control id, a
header or a body as an escape (`\\x1b`), never raw to the terminal; --json
keeps the value and escapes it as JSON does.

A letter whose replay the broker confirmed but that it then failed to remove is
named on stderr and in the end line's `kept`: it was replayed and is still a
dead letter. A replay or purge that fails, or is stopped by Ctrl-C, still
prints and audits what it did before.

A letter gone between the question and the act (another operator replayed or
purged it, or held it in a pass of theirs just then) is named on stderr and in
the end line's `missing`.

Exit 0 when done; 1 when an id is not found or the broker fails; 2 for a usage
error or a refused confirmation; 130 when stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from adapters.amqp.connection import declare_topology, open_connection
from adapters.text import readable, visible
from router.cli._args import age, positive
from router.cli.status import format_table
from router.errors import BrokerUnavailable
from router.ops import ActionResult, AuditLog, DeadLetter, LetterFilter, browse, dead_letter_queues, find, purge, replay
from router.settings import Settings, load_settings

if TYPE_CHECKING:
    from kombu import Connection

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the `dlq` verb and its four actions."""
    parser = subparsers.add_parser("dlq", help="List, show, replay or purge dead letters.", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    parser.set_defaults(func=lambda _args: _usage(parser))

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--queue", metavar="NAME", help="Dead-letter queue to act on (default: broker.names.dead_letter).")
    chosen = argparse.ArgumentParser(add_help=False)
    group = chosen.add_argument_group("filters (all must match; with replay and purge they narrow --all)")
    group.add_argument("--stage", choices=_STAGES, help="Only letters dead-lettered at this stage.")
    group.add_argument("--reason", metavar="TEXT", help="Only letters whose reason contains TEXT (any case).")
    group.add_argument("--sender", metavar="S", help="Only letters from this sender (LAB@STOLAV, a KITH HER-id).")
    group.add_argument("--control-id", metavar="ID", help="Only letters with this control id.")
    group.add_argument("--since", type=_age_as_typed, metavar="AGE", help="Only letters dead-lettered within AGE: 90s, 15m, 2h, 7d.")
    group.add_argument("--older-than", type=_age_as_typed, metavar="AGE", help="Only letters dead-lettered more than AGE ago.")

    p = actions.add_parser("list", parents=[common, chosen], help="List dead letters: ids, reasons, sizes; never bodies.")
    p.add_argument("--json", action="store_true", help="Print one JSON document.")
    p.add_argument("--limit", type=positive, metavar="N", help="List at most the first N dead letters.")
    p.set_defaults(func=_list)

    p = actions.add_parser("show", parents=[common], help="Show one dead letter's headers and OperationOutcome.")
    p.add_argument("id", metavar="ID")
    p.add_argument("--json", action="store_true", help="Print one JSON document.")
    p.add_argument("--body", action="store_true", help="Also print the message body (patient data): asks, and is audited.")
    p.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
    p.set_defaults(func=_show)

    for name, help_text, func in (
        ("replay", "Publish dead letters to the inbound exchange again, then remove them.", _replay),
        ("purge", "Delete dead letters for good.", _purge),
    ):
        p = actions.add_parser(name, parents=[common, chosen], help=help_text)
        p.add_argument("ids", nargs="*", metavar="ID")
        p.add_argument("--all", action="store_true", help="Every dead letter in the queue now.")
        p.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
        p.set_defaults(func=func)


_STAGES = ("convert", "apply", "render", "deliver", "internal")
"""The stages a dead letter names (router.pipeline.settle.Stage)."""


def _age_as_typed(text: str) -> str:
    """An argparse type: an age as `helsebro find --since` takes it, kept as typed for the question and the audit line."""
    age(text)
    return text


def _filter(args: argparse.Namespace) -> LetterFilter:
    return LetterFilter(stage=args.stage, reason=args.reason, sender=args.sender, control_id=args.control_id,
                        since=age(args.since) if args.since else None, older_than=age(args.older_than) if args.older_than else None)


def _filter_fields(args: argparse.Namespace) -> dict[str, str]:
    """The filters given, as the audit line records them (ages as typed)."""
    given = {"stage": args.stage, "reason": args.reason, "sender": args.sender, "control_id": args.control_id, "since": args.since, "older_than": args.older_than}
    return {k: v for k, v in given.items() if v is not None}


def _filter_text(args: argparse.Namespace) -> str:
    """` matching stage convert, failed within 2h` for the question and the list's last line; empty without a filter."""
    words = {"stage": "stage {}", "reason": "reason containing {!r}", "sender": "sender {}", "control_id": "control id {}",
             "since": "failed within {}", "older_than": "failed more than {} ago"}
    given = _filter_fields(args)
    return " matching " + ", ".join(visible(words[k].format(v)) for k, v in given.items()) if given else ""


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str, code: int = 1) -> int:
    print(f"helsebro dlq: {message}", file=sys.stderr)
    return code


def _queue(settings: Settings, args: argparse.Namespace) -> str | None:
    """Return the dead-letter queue to act on, or None when --queue names no dead-letter queue.

    The engine's own (the default) or a queued destination's (`helsebro.dest.<name>.dlq`).
    """
    names = dead_letter_queues(settings)
    if args.queue is None:
        return names[0]
    return args.queue if args.queue in names else None


def _destination_dlqs(settings: Settings) -> dict[str, str]:
    """Each queued destination's dead-letter queue → the destination's name."""
    from adapters.amqp.connection import all_queue_names

    return {q.name: q.destination for q in all_queue_names(settings) if q.role == "destination_dead_letter"}


def _cell(value: object) -> str | None:
    """A table cell shown with adapters.text.visible; None stays None (the table shows `-`)."""
    return None if value is None else visible(str(value))


def _plural(n: int) -> str:
    return f"{n} dead letter{'' if n == 1 else 's'}"


def _confirm(question: str, *, yes: bool) -> bool:
    """Ask *question* on the terminal; True for y or yes (or --yes), False with no terminal; any other answer raises _Declined."""
    if yes:
        return True
    if not sys.stdin.isatty():
        print("helsebro dlq: refusing: stdin is not a terminal; pass --yes to confirm", file=sys.stderr)
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    print("helsebro dlq: not confirmed; nothing done", file=sys.stderr)
    raise _Declined


class _Declined(Exception):
    """The operator was asked and answered no: audited (one `declined` line), then exit 2."""


def _asked(settings: Settings, question: str, action: str, *, yes: bool, **fields: Any) -> bool:
    """Ask as _confirm does; an operator's no is written to the audit log before False is returned.

    Why: the audit showed the yeses only, so someone asking again and again to see bodies and
    answering no left no trace. A refusal for want of a terminal asked nobody and is not audited.
    """
    try:
        return _confirm(question, yes=yes)
    except _Declined:
        AuditLog(settings.data_dir / "audit.log").declined(action, **fields)  # OSError: reported by _run, exit 1
        return False


def _run(args: argparse.Namespace, action: Any) -> int:
    """Load settings, pick the queue, run *action*(settings, queue) and turn broker and audit failures into exit 1."""
    settings = load_settings()
    queue = _queue(settings, args)
    if queue is None:
        return _fail(f"{args.queue!r} is not a dead-letter queue of this engine", 2)
    try:
        return int(action(settings, queue))
    except BrokerUnavailable as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # the reader of the output left (`| head`); the audit log is not to blame
        return _fail("output closed by its reader")
    except OSError as exc:  # the audit log cannot be written: the action did not start, or its end line is missing
        return _fail(f"audit log {settings.data_dir / 'audit.log'}: {exc}")


@contextlib.contextmanager
def _connected(settings: Settings) -> Iterator[Connection]:
    """Open a broker connection for one pass; prompts happen outside, so no idle connection outlives its heartbeat."""
    conn = open_connection(settings)
    try:
        yield conn
    finally:
        conn.release()


def _list(args: argparse.Namespace) -> int:
    def action(settings: Settings, queue: str) -> int:
        with _connected(settings) as conn:
            result = browse(conn, queue, limit=args.limit, where=_filter(args))
        rows = [letter.summary() for letter in result.letters]
        if args.json:
            print(json.dumps({"queue": queue, "truncated": result.truncated, "dead_letters": rows}, ensure_ascii=False, indent=2))
            return 0
        keys = ("id", "failed_at", "stage", "control_id", "location", "size", "reason")
        print("\n".join(format_table([k.replace("_", " ").upper() for k in keys], [[_cell(r[k]) for k in keys] for r in rows], right=(5,))))
        more = "; more wait (raise --limit)" if result.truncated else ""
        print(f"{_plural(len(rows))} in {queue}{_filter_text(args)}{more}")
        return 0

    return _run(args, action)


def _show(args: argparse.Namespace) -> int:
    def action(settings: Settings, queue: str) -> int:
        with _connected(settings) as conn:
            letter = find(conn, queue, args.id)
        if letter is None:
            return _fail(f"no dead letter with id {args.id} in {queue}")
        if not args.body:
            _print_letter(queue, letter, None, as_json=args.json)
            return 0
        if not _asked(settings, f"Show the body of dead letter {letter.id}? It holds patient data; the showing is audited.", "show_body",
                      yes=args.yes, queue=queue, ids=[letter.id], count=1):
            return 2
        audit = AuditLog(settings.data_dir / "audit.log")
        action_id = audit.begin("show_body", queue=queue, ids=[letter.id], count=1)  # written before anything is shown
        try:
            body, charset = readable(letter.body)
            _print_letter(queue, letter, body, as_json=args.json, charset=charset)
        finally:  # also when the reader left (`| head`): part of the body may have been shown
            audit.end("show_body", action_id, queue=queue, done=[letter.id], count=1)
        return 0

    return _run(args, action)


_WITHHELD = "withheld: the server's own words may quote patient data; `--body` shows them (asks, and is audited)"


def _their_words_withheld(outcome: dict[str, Any] | None) -> dict[str, Any] | None:
    """*outcome* as `show` prints it without --body: each issue's `details.text` withheld, the rest as it is.

    `details.text` is what a FHIR server said when it refused the message (Refused.detail). A
    server's diagnostics quote the resource ("Patient Ola Nordmann, Storgata 1 …"): national ids are
    masked when the letter is made, names and addresses cannot be, so the text is patient data and
    is shown only where the body is, asked and audited (DESIGN §5). The reason, the code and the
    location say what failed where; they are the engine's own words and stay.
    """
    issues = outcome.get("issue") if outcome is not None else None
    if outcome is None or not isinstance(issues, list):
        return outcome
    shown = []
    for issue in issues:
        details = issue.get("details") if isinstance(issue, dict) else None
        if isinstance(details, dict) and details.get("text"):
            issue = {**issue, "details": {**details, "text": _WITHHELD}}
        shown.append(issue)
    return {**outcome, "issue": shown}


def _print_letter(queue: str, letter: DeadLetter, body: str | None, *, as_json: bool, charset: str | None = None) -> None:
    headers = {k: v for k, v in sorted(letter.headers.items()) if k != "x-helsebro-outcome"}
    outcome = letter.outcome() if body is not None else _their_words_withheld(letter.outcome())
    if as_json:
        doc = {"queue": queue, "dead_letter": letter.summary(), "headers": headers, "outcome": outcome, "body": body, "body_charset": charset}
        print(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        return
    summary = letter.summary()
    lines = format_table(("", ""), [(k.replace("_", " "), _cell(summary[k])) for k in summary])[1:]
    lines += ["", "headers:", *("  " + line for line in format_table(("", ""), [(visible(k), _cell(v)) for k, v in headers.items()])[1:])]
    lines += ["", "outcome:", *("  " + visible(line) for line in json.dumps(outcome, ensure_ascii=False, indent=2).splitlines())]
    if body is None:
        lines += ["", "body: not shown (patient data; add --body, which asks and is audited)"]
    else:
        lines += ["", f"body ({charset}):" if charset and charset != "utf-8" else "body:", *visible(body.replace("\r\n", "\n").replace("\r", "\n"), lines=True).rstrip("\n").split("\n")]
    print("\n".join(lines))


def _replay(args: argparse.Namespace) -> int:
    return _change(args, "replay", "Replay {n}{matching} from {queue} {to}?", "replayed")


def _purge(args: argparse.Namespace) -> int:
    return _change(args, "purge", "Purge (delete for good) {n}{matching} from {queue}?", "purged")


def _change(args: argparse.Namespace, verb: str, question: str, past: str) -> int:
    """Count what *verb* will touch, ask, audit, act on exactly those ids, audit again, report."""
    if args.ids and args.all:
        return _fail(f"{verb}: give the ids of dead letters, or --all (not both)", 2)
    if args.ids and _filter_fields(args):
        return _fail(f"{verb}: a filter narrows --all; give it without ids", 2)
    if not args.ids and not args.all:
        if verb != "purge":
            return _fail(f"{verb}: give the ids of dead letters, or --all", 2)
        args.all = True  # `dlq purge` alone: every dead letter now, after the same question

    def action(settings: Settings, queue: str) -> int:
        with _connected(settings) as conn:
            letters = browse(conn, queue, where=_filter(args)).letters
        present = list(dict.fromkeys(letter.id for letter in letters))  # queue order, each id once
        missing = [] if args.all else [i for i in dict.fromkeys(args.ids) if i not in present]
        if missing:
            return _fail(f"not in {queue}: {' '.join(missing)}; nothing done")
        ids = present if args.all else [i for i in present if i in set(args.ids)]
        count = sum(1 for letter in letters if letter.id in set(ids))
        if not ids:
            print(f"no dead letters in {queue}{_filter_text(args)}")
            return 0
        destination = _destination_dlqs(settings).get(queue)
        to = f"to the destination {destination}'s work queue" if destination else "to the inbound exchange"  # what the operator consents to
        chosen = _filter_fields(args) or None
        if not _asked(settings, question.format(n=_plural(count), matching=_filter_text(args), queue=queue, to=to), verb,
                      yes=args.yes, queue=queue, ids=ids, count=count, filter=chosen):
            return 2
        audit = AuditLog(settings.data_dir / "audit.log")
        action_id = audit.begin(verb, queue=queue, ids=ids, count=count, filter=chosen)
        try:
            result = _act_on(settings, verb, queue, ids)
        except (BrokerUnavailable, KeyboardInterrupt) as exc:  # before it moved anything: the begin line must not stand alone
            audit.end(verb, action_id, queue=queue, done=[], count=0, missing=[], error=str(exc) or "interrupted (Ctrl-C)", filter=chosen)
            raise
        try:
            return _report(result, verb, past, queue)  # before the end line: a failing audit log must not hide what was done
        finally:  # and a closed output must not leave the begin line alone
            audit.end(verb, action_id, queue=queue, done=result.done, count=len(result.done), missing=result.missing, error=result.error, kept=result.kept, filter=chosen)

    return _run(args, action)


def _act_on(settings: Settings, verb: str, queue: str, ids: list[str]) -> ActionResult:
    """Replay or purge *ids* on a connection of its own (opened after the question, so none idles through it)."""
    with _connected(settings) as conn:
        if verb == "replay":
            declare_topology(conn, settings)  # the inbound exchange and queue must exist to route to
            return replay(conn, settings, queue, ids, destination=_destination_dlqs(settings).get(queue))
        return purge(conn, queue, ids)


def _report(result: ActionResult, verb: str, past: str, queue: str) -> int:
    """Print what was done and return the exit code; a letter both replayed and still held is named on stderr."""
    for letter_id in result.done:
        print(f"{past} {letter_id}")
    print(f"{len(result.done)} {past}, {len(result.missing)} no longer found")
    if result.missing:  # the exit 1 must say which: another operator took them, or held them in a pass of theirs
        _fail(f"no longer in {queue}: {' '.join(result.missing)} (another operator replayed or purged them, or was reading the queue just then: `dlq list` tells)")
    for letter_id in result.kept:
        print(f"helsebro dlq: {letter_id} was {past}, but the broker failed before it left {queue}: it is there too; purge it rather than {verb} it again", file=sys.stderr)
    if result.error:
        return _fail(f"{verb} stopped: {result.error}; the rest stays in {queue}", 130 if result.interrupted else 1)
    return 1 if result.missing else 0
