"""Compare Helsebro's FHIR with the expected outputs that come with the public corpus.

Microsoft's FHIR-Converter (Liquid templates) and Google's Whistle mappings ship an
expected FHIR Bundle for many corpus messages (`CORPUS_INDEX.tsv`, column
`expected_output`). For each such message this converts the HL7 with Helsebro and
compares the clinically meaningful elements, per message type:

  pid     patient identifier values (the expected values all present in ours)
  name    patient family and given names
  birth   birth date
  gender  administrative gender
  class   encounter class code
  period  encounter period start/end as the same instant (UTC)
  wall    encounter period start/end as the same wall-clock time (offset ignored)
  obs     observation code found; then, of those, value, unit and status equal
  group   which results belong to which report: for each expected DiagnosticReport
          (by code), the set of its result codes is the same in ours

A cell is `agree/compared`; `-` means the expected output has no such element.
Run: `python bench/compare_corpus.py [--shared ../shared] [--limit N] [--type ADT] [--counts]`;
`--counts` also prints Bundles / OperationOutcomes per message type over the whole corpus.

Systematic differences, and why (none is a Helsebro defect unless said so):

* Time zones (period vs wall): an HL7 time without an offset is local time at
  the sender. Helsebro reads it as Europe/Oslo (+01:00/+02:00). Microsoft's
  converter writes such times with no offset or with the converter's zone, and
  Google's with none or UTC, so the same wall clock is a different instant. Where
  the message carries an offset, both agree.
* Identifiers: values agree; systems do not and are not compared. Helsebro puts
  local identifiers under a system configured per assigning authority (or
  `urn:helsebro:local:<authority>:<type>`), Norwegian national ids under the
  HL7 Norway OIDs; Microsoft invents `http://...` systems from CX.4 and Google
  leaves system out. Microsoft also maps PID-19 (US SSN), PID-20 (driver's
  licence) and PID-18 (account) into Patient.identifier: Helsebro does not (an
  account number is not a person identifier; SSN/DL are US concepts), so
  messages carrying those fail `pid`.
* Names: Microsoft and Google keep every PID-5 repetition and XPN.3 as a second
  given name, as Helsebro does; differences come from PID-9 (alias) and NK1
  names, which Microsoft also puts on the Patient.
* Gender: identical through table 0001, except values outside M/F/O/U, which
  Helsebro maps to `unknown` (the IG's map) where Microsoft sometimes omits it.
* Encounter class: Helsebro follows the IG (v3 ActCode IMP/AMB/EMER/PRENC);
  Microsoft uses the same codes; Google keeps the v2 code (`I`, `O`) under the
  v2-0004 system, which never agrees.
* Observations: Helsebro keeps OBX-6 as written in `unit` and adds a UCUM `code`
  only when tables/ucum-units.yaml knows it; the converters put the ISO+/ANSI
  unit text in `unit` (e.g. `million per microliter`) and differ on `unit`.
  Values agree where OBX-2 is NM/ST/CE; SN and TX differ in form (Helsebro:
  Quantity with comparator / Range and joined text; others: a string).
  Status follows table 0085 in all three.
* Grouping: Helsebro links a report only to the OBX of its own ORDER_OBSERVATION
  group; the converters do the same, so `group` disagreement points at a
  different OBR code choice (OBR-4 vs a local code) rather than a different set.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COLUMNS = ("pid", "name", "birth", "gender", "class", "period", "wall", "obs", "value", "unit", "status", "group")


def expected_pairs(shared: Path, *, type_prefix: str = "") -> list[tuple[str, Path, Path]]:
    """Return (message type, HL7 file, expected FHIR file) for every corpus message with an expected output."""
    root = shared / "corpus" / "hl7v2"
    out: list[tuple[str, Path, Path]] = []
    seen: set[str] = set()
    for line in (root / "CORPUS_INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 7 or not cols[6].strip():
            continue
        file, mtype, expected = cols[0].split("#")[0], cols[2], cols[6].split(" (")[0].strip()
        if file in seen or not mtype.startswith(type_prefix):
            continue
        seen.add(file)
        if (root / file).is_file() and (root / expected).is_file():
            out.append((mtype, root / file, root / expected))
    return out


# -- extraction ----------------------------------------------------------------


def _resources(bundle: Any) -> list[dict[str, Any]]:
    if isinstance(bundle, list):  # a list of resources (Whistle 2) or of Bundles
        out: list[dict[str, Any]] = []
        for item in bundle:
            out.extend(_resources(item) if isinstance(item, dict) and item.get("resourceType") == "Bundle" else [item])
        return [r for r in out if isinstance(r, dict)]
    if not isinstance(bundle, dict):
        return []
    if bundle.get("resourceType") != "Bundle":
        return [bundle]
    return [e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def _index(bundle: Any) -> dict[str, dict[str, Any]]:
    """Every way a reference may name a resource of the Bundle: fullUrl, Type/id, urn:uuid:id."""
    idx: dict[str, dict[str, Any]] = {}
    entries = bundle.get("entry", []) if isinstance(bundle, dict) else []
    for e in entries:
        r = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(r, dict):
            continue
        if e.get("fullUrl"):
            idx[e["fullUrl"]] = r
        if r.get("id"):
            idx[f"{r['resourceType']}/{r['id']}"] = r
            idx[f"urn:uuid:{r['id']}"] = r
    return idx


def _first(resources: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((r for r in resources if r.get("resourceType") == kind), None)


def _code(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    for c in cc.get("coding", []) or []:
        if c.get("code"):
            return str(c["code"])
    return cc.get("text")


def _value(obs: dict[str, Any]) -> tuple[str | None, str | None]:
    """(value, unit) of an Observation, as comparable text."""
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        v = q.get("value")
        return (None if v is None else _num(v)), q.get("unit") or q.get("code")
    for key in ("valueString", "valueDateTime", "valueTime", "valueInteger", "valueBoolean"):
        if key in obs:
            return str(obs[key]).strip(), None
    if "valueCodeableConcept" in obs:
        return _code(obs["valueCodeableConcept"]), None
    if "valueRange" in obs:
        r = obs["valueRange"]
        return f"{_num(r.get('low', {}).get('value'))}-{_num(r.get('high', {}).get('value'))}", None
    return None, None


def _num(v: Any) -> str:
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return str(v)


def _instant(text: str | None) -> datetime | None:
    if not text or "T" not in text:
        return None
    t = text.replace("Z", "+00:00")
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    return d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC)


def _wall(text: str | None) -> str | None:
    return text[:16] if text else None


def facts(bundle: Any) -> dict[str, Any]:
    """The clinically meaningful elements of one Bundle (or list of resources)."""
    resources = _resources(bundle)
    idx = _index(bundle) if isinstance(bundle, dict) else {}
    patient = _first(resources, "Patient") or {}
    encounter = _first(resources, "Encounter") or {}
    names = set()
    for n in patient.get("name", []) or []:
        for part in [n.get("family")] + list(n.get("given", []) or []):
            if part:
                names.add(str(part).upper())
    period = encounter.get("period") or {}
    obs: dict[str, tuple[str | None, str | None, Any]] = {}
    for r in resources:
        if r.get("resourceType") == "Observation" and (code := _code(r.get("code"))):
            value, unit = _value(r)
            obs.setdefault(code, (value, unit, r.get("status")))
    groups = {}
    for r in resources:
        if r.get("resourceType") == "DiagnosticReport":
            members = set()
            for ref in r.get("result", []) or []:
                target = idx.get(ref.get("reference", "")) if isinstance(ref, dict) else None
                if target is not None and _code(target.get("code")):
                    members.add(_code(target.get("code")))
            groups[_code(r.get("code"))] = frozenset(members)
    return {
        "pid": {str(i["value"]) for i in patient.get("identifier", []) or [] if i.get("value")},
        "name": names,
        "birth": patient.get("birthDate"),
        "gender": patient.get("gender"),
        "class": (encounter.get("class") or {}).get("code") if encounter else None,
        "period": (period.get("start"), period.get("end")),
        "obs": obs,
        "group": groups,
    }


# -- comparison ----------------------------------------------------------------


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Return column → (agree, compared) for one message."""
    out: dict[str, tuple[int, int]] = {}

    def cell(name: str, present: bool, agree: bool) -> None:
        if present:
            out[name] = (int(agree), 1)

    cell("pid", bool(theirs["pid"]), theirs["pid"] <= ours["pid"])
    cell("name", bool(theirs["name"]), theirs["name"] <= ours["name"])
    cell("birth", bool(theirs["birth"]), (ours["birth"] or "")[:10] == (theirs["birth"] or "")[:10])
    cell("gender", bool(theirs["gender"]), ours["gender"] == theirs["gender"])
    cell("class", bool(theirs["class"]), ours["class"] == theirs["class"])
    for i, _ in enumerate(("start", "end")):
        t = theirs["period"][i]
        if t:
            o = ours["period"][i]
            a, b = out.get("period", (0, 0))
            ti, oi = _instant(t), _instant(o)
            out["period"] = (a + int(ti is not None and ti == oi), b + 1)
            a, b = out.get("wall", (0, 0))
            out["wall"] = (a + int(_wall(o) == _wall(t)), b + 1)
    for code, (value, unit, status) in theirs["obs"].items():
        mine = ours["obs"].get(code)
        a, b = out.get("obs", (0, 0))
        out["obs"] = (a + int(mine is not None), b + 1)
        if mine is None:
            continue
        for k, (col, want) in enumerate((("value", value), ("unit", unit), ("status", status))):
            if want is not None:
                a, b = out.get(col, (0, 0))
                out[col] = (a + int(mine[k] == want), b + 1)
    for code, members in theirs["group"].items():
        if not members:
            continue
        a, b = out.get("group", (0, 0))
        out["group"] = (a + int(ours["group"].get(code) == members), b + 1)
    return out


def run(shared: Path, *, limit: int | None = None, type_prefix: str = "") -> tuple[dict[str, dict[str, tuple[int, int]]], dict[str, list[int]]]:
    """Convert and compare; return per-type cells and per-type [messages, converted, refused]."""
    import orjson

    from router.pipeline.convert import Converter
    from router.settings import load_settings

    converter = Converter(load_settings(environ={}))
    table: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for mtype, hl7, expected in expected_pairs(shared, type_prefix=type_prefix)[:limit]:
        try:
            theirs = orjson.loads(expected.read_bytes().lstrip(b"\xef\xbb\xbf"))
        except orjson.JSONDecodeError:
            continue  # an "expected" file that is not JSON (the IG's MDM_T02 bundle is XML)
        results = converter.convert(hl7.read_bytes())
        counts[mtype][0] += 1
        if not results or not results[0].ok:
            counts[mtype][2] += 1
            continue
        counts[mtype][1] += 1
        for col, (a, b) in compare(facts(results[0].bundle), facts(theirs)).items():
            x, y = table[mtype].get(col, (0, 0))
            table[mtype][col] = (x + a, y + b)
    return table, counts


def render(table: dict[str, dict[str, tuple[int, int]]], counts: dict[str, list[int]]) -> str:
    """The agreement table as fixed-width text."""
    head = f"{'type':10} {'msgs':>4} {'ok':>3} " + " ".join(f"{c:>7}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    total: dict[str, tuple[int, int]] = {}
    for mtype in sorted(counts):
        n, ok, _ = counts[mtype]
        cells = []
        for c in COLUMNS:
            a, b = table.get(mtype, {}).get(c, (0, 0))
            cells.append(f"{a}/{b}" if b else "-")
            x, y = total.get(c, (0, 0))
            total[c] = (x + a, y + b)
        lines.append(f"{mtype:10} {n:>4} {ok:>3} " + " ".join(f"{x:>7}" for x in cells))
    n = sum(v[0] for v in counts.values())
    ok = sum(v[1] for v in counts.values())
    lines.append("-" * len(head))
    lines.append(f"{'all':10} {n:>4} {ok:>3} " + " ".join(f"{(f'{a}/{b}' if b else '-'):>7}" for a, b in (total.get(c, (0, 0)) for c in COLUMNS)))
    return "\n".join(lines)


def outcome_counts(shared: Path) -> dict[str, list[int]]:
    """Convert every corpus message; return message type → [Bundles, OperationOutcomes]."""
    from router.pipeline.convert import Converter
    from router.settings import load_settings

    converter = Converter(load_settings(environ={}))
    root = shared / "corpus" / "hl7v2"
    files = sorted({line.split("\t")[0].split("#")[0] for line in (root / "CORPUS_INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]})
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name in files:
        for r in converter.convert((root / name).read_bytes()):
            kind = "^".join((r.message_type or "?").split("^")[:2]) if r.message_type and "{{" not in r.message_type else "(unparsable)"
            out[kind][0 if r.ok else 1] += 1
    return out


def render_counts(counts: dict[str, list[int]]) -> str:
    """Bundles / OperationOutcomes per message type as text."""
    lines = [f"{'type':14} {'Bundle':>6} {'OpOutc':>6}", "-" * 28]
    for kind in sorted(counts):
        b, o = counts[kind]
        lines.append(f"{kind:14} {b:>6} {o:>6}")
    lines.append("-" * 28)
    lines.append(f"{'all':14} {sum(v[0] for v in counts.values()):>6} {sum(v[1] for v in counts.values()):>6}")
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the shared reference folder (default ../shared)")
    parser.add_argument("--limit", type=int, default=None, help="compare only the first N messages with an expected output")
    parser.add_argument("--type", default="", help="only message types starting with this (e.g. ADT, ORU_R01)")
    parser.add_argument("--counts", action="store_true", help="also print Bundles / OperationOutcomes per message type over the whole corpus")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not (args.shared / "corpus" / "hl7v2" / "CORPUS_INDEX.tsv").is_file():
        print(f"no corpus at {args.shared}/corpus/hl7v2", file=sys.stderr)
        return 2
    table, counts = run(args.shared, limit=args.limit, type_prefix=args.type)
    print(render(table, counts))
    if args.counts:
        print()
        print(render_counts(outcome_counts(args.shared)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
