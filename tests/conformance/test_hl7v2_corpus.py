"""The public HL7v2 corpus in ../shared: no input crashes, every Bundle is valid FHIR R4(B).

Skipped with a reason when ../shared is not beside the checkout.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from router.cli import main


def _corpus_files(shared: Path, prefix: str = "") -> list[Path]:
    root = shared / "corpus" / "hl7v2"
    rows = (root / "CORPUS_INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]
    names = sorted({r.split("\t")[0].split("#")[0] for r in rows if r.split("\t")[2].startswith(prefix)})
    return [root / n for n in names]


class TestCorpus:
    @pytest.mark.corpus
    def test_every_adt_bundle_validates(self, shared_dir, converter):
        """Every ADT message in the corpus converts to a valid Bundle or a positioned OperationOutcome."""
        counts: Counter[str] = Counter()
        for path in _corpus_files(shared_dir, "ADT"):
            for r in converter.convert(path.read_bytes()):
                if r.ok:
                    Bundle.model_validate(r.bundle)
                    counts["bundle"] += 1
                else:
                    issue = r.outcome()["issue"][0]
                    assert issue["severity"] == "error" and issue["diagnostics"]
                    counts["outcome"] += 1
        assert counts["bundle"] > 100  # the ADT structures Helsebro maps are most of the corpus

    @pytest.mark.corpus
    def test_every_bundle_of_every_type_validates(self, shared_dir, converter):
        """Every corpus message of every type is a valid FHIR R4(B) Bundle or an OperationOutcome naming a problem."""
        counts: dict[str, Counter[str]] = {}
        for path in _corpus_files(shared_dir):
            for r in converter.convert(path.read_bytes()):
                kind = "/".join((r.message_type or "?").split("^")[:2])
                if r.ok:
                    try:
                        Bundle.model_validate(r.bundle)
                    except Exception as exc:  # noqa: BLE001 - name the file in the failure
                        pytest.fail(f"{path.name} ({kind}): invalid Bundle: {exc}")
                    counts.setdefault(kind, Counter())["bundle"] += 1
                else:
                    issue = r.outcome()["issue"][0]
                    assert issue["severity"] == "error" and issue["diagnostics"], path.name
                    counts.setdefault(kind, Counter())["outcome"] += 1
        for kind in ("ADT/A40", "ADT/A34", "ADT/A47", "ADT/A06", "ORM/O01", "OML/O21", "MDM/T02", "SIU/S12", "VXU/V04", "ORU/R01"):
            assert counts.get(kind, Counter())["bundle"] > 0, f"{kind} produced no Bundle: {counts.get(kind)}"

    @pytest.mark.corpus
    def test_refusals_of_mapped_types_name_a_position(self, shared_dir, converter):
        """A refused message of a type Helsebro maps says where: a field, the resource it could not identify or tell apart,
        or the resource a required reference names (a diagnosis whose patient the message does not give)."""
        mapped = set(converter.mappings.messages)
        for path in _corpus_files(shared_dir):
            for r in converter.convert(path.read_bytes()):
                if r.ok or r.structure not in mapped:
                    continue
                issue = r.outcome()["issue"][0]
                said = issue["diagnostics"]
                assert issue.get("expression") or "has no identifier" in said or "share the identity" in said or "is not in this message" in said, (path.name, issue)

    @pytest.mark.corpus
    def test_whole_corpus_never_crashes(self, shared_dir, converter):
        """Every corpus file, of any type, converts without an exception."""
        for path in _corpus_files(shared_dir):
            for r in converter.convert(path.read_bytes()):
                assert r.ok or r.error is not None

    @pytest.mark.corpus
    def test_derived_quirks_through_the_cli(self, shared_dir, capsys):
        """The quirk files convert through the CLI; only the fake national id is refused."""
        code = main(["convert", str(shared_dir / "corpus" / "hl7v2" / "derived-quirks")])
        out = capsys.readouterr().out.splitlines()
        docs = [json.loads(line) for line in out]
        assert code == 1
        bad = [d for d in docs if d["resourceType"] == "OperationOutcome"]
        assert [d["issue"][0]["expression"] for d in bad] == [["PID-3[1].1"]]
        for d in docs:
            if d["resourceType"] == "Bundle":
                Bundle.model_validate(d)
        assert len(docs) == 27  # 25 files, two of which hold two messages

    @pytest.mark.corpus
    @pytest.mark.parametrize("name", ["05_norwegian_utf8.hl7", "06_norwegian_latin1.hl7", "07_norwegian_latin1_no_msh18.hl7"])
    def test_norwegian_letters_survive_every_charset(self, shared_dir, converter, name):
        """Æ, Ø and Å come through whether the bytes are UTF-8 or ISO-8859-1, declared or not."""
        [r] = converter.convert((shared_dir / "corpus" / "hl7v2" / "derived-quirks" / name).read_bytes())
        patient = next(e["resource"] for e in r.bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        assert patient["name"][0]["family"] == "ÆRLIG"
