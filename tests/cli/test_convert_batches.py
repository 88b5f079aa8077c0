"""`helsebro convert` of FHS/BHS batch files: BTS-1 and FTS-1 counts are checked against what arrived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.cli import main
from router.testing import adt_message
from schemas.identity import first_valid_fnr

ROOT = Path(__file__).resolve().parents[2]
CORPUS_BATCH = ROOT.parent / "shared" / "corpus" / "hl7v2" / "derived-quirks" / "20_batch_FHS_BHS_two_messages.hl7"


def _messages(count: int) -> bytes:
    return b"".join(
        adt_message("A01", control_id=f"B{i}", fnr=first_valid_fnr(1 + i, 3, 80, 100 + i, synthetic=True), local_id=f"L{i}", visit=f"V{i}")
        for i in range(count)
    )


def _batch(count: int, bts: str, fts: str = "1") -> bytes:
    return b"FHS|^~\\&|PAS|STOLAV\rBHS|^~\\&|PAS|STOLAV|||||||BATCH-7\r" + _messages(count) + f"BTS|{bts}\rFTS|{fts}\r".encode()



class TestBatchCounts:
    def test_a_text_line_starting_msh_is_neither_a_message_nor_counted(self, convert_file):
        """An NTE continued after a bare LF with "MSH er …": the batch is still two messages, its count agrees, exit 0."""
        one, two = _messages(2).split(b"MSH|", 2)[1:]
        first = b"MSH|" + one + b"NTE|1||Se merknad\nMSH er en forkortelse her\r"
        code, docs = convert_file(b"FHS|^~\\&|PAS|STOLAV\rBHS|^~\\&|PAS|STOLAV|||||||BATCH-7\r" + first + b"MSH|" + two + b"BTS|2\rFTS|1\r", "batch.hl7")
        assert code == 0 and [d["resourceType"] for d in docs] == ["Bundle", "Bundle"]

    def test_a_batch_whose_counts_agree_converts_each_message(self, convert_file):
        """BTS-1 = 3 and FTS-1 = 1 over three messages: three Bundles, exit 0, nothing more."""
        code, docs = convert_file(_batch(3, "3"), "batch.hl7")
        assert code == 0
        assert [d["resourceType"] for d in docs] == ["Bundle"] * 3

    def test_a_batch_that_lost_messages_is_reported_and_what_arrived_still_converts(self, convert_file):
        """BTS-1 says 5, four arrived: four Bundles, then one OperationOutcome at BTS-1, exit 1."""
        code, docs = convert_file(_batch(4, "5"), "batch.hl7")
        assert code == 1
        assert [d["resourceType"] for d in docs] == ["Bundle"] * 4 + ["OperationOutcome"]
        [issue] = docs[-1]["issue"]
        assert issue["severity"] == "error" and issue["expression"] == ["BTS-1"]
        assert issue["diagnostics"].startswith("BTS-1 says 5 messages, the batch holds 4")

    def test_a_file_that_lost_a_batch_is_reported_at_fts_1(self, convert_file):
        """FTS-1 says 2 batches, one BHS arrived."""
        code, docs = convert_file(_batch(2, "2", fts="2"), "batch.hl7")
        assert code == 1
        [issue] = docs[-1]["issue"]
        assert issue["expression"] == ["FTS-1"] and issue["diagnostics"].startswith("FTS-1 says 2 batches, the file holds 1")

    def test_the_second_batch_of_a_file_is_named_by_its_occurrence(self, convert_file):
        """Two batches in one file, the second short: the outcome names BTS[2]-1."""
        second = b"BHS|^~\\&|PAS|STOLAV\r" + _messages(1) + b"BTS|2\r"
        data = _batch(2, "2", fts="2").replace(b"FTS|2\r", second + b"FTS|2\r")
        code, docs = convert_file(data, "batch.hl7")
        assert code == 1 and len(docs) == 4
        assert docs[-1]["issue"][0]["expression"] == ["BTS[2]-1"]

    def test_two_batch_files_in_one_delivery_are_counted_each_on_its_own(self, convert_file):
        """Two whole files (FHS ... FTS|1 twice), nothing lost: each FTS-1 counts its own file's batches, exit 0.

        Before: the second FTS-1 was compared with every BHS of the delivery ("FTS-1 says 1 batch, the
        file holds 2"), a false loss report, exit 1 and a dead letter."""
        code, docs = convert_file(_batch(1, "1") + _batch(2, "2"), "batch.hl7")
        assert code == 0 and [d["resourceType"] for d in docs] == ["Bundle"] * 3

    def test_the_second_file_of_a_delivery_that_lost_a_batch_is_named(self, convert_file):
        """Two files, the second's FTS-1 says 2 batches and one arrived: reported at FTS[2]-1."""
        code, docs = convert_file(_batch(1, "1") + _batch(1, "1", fts="2"), "batch.hl7")
        assert code == 1 and [d["resourceType"] for d in docs] == ["Bundle"] * 2 + ["OperationOutcome"]
        [issue] = docs[-1]["issue"]
        assert issue["expression"] == ["FTS[2]-1"] and issue["diagnostics"].startswith("FTS[2]-1 says 2 batches, the file holds 1")

    def test_text_that_starts_with_fts_is_not_taken_for_a_trailer(self, capsys, tmp_path):
        """An FT field continued on a new line (a bare LF) whose text starts "FTS-": not a file trailer.

        Before: it was read as FTS with a count "not a number", a second outcome claimed lost messages,
        and the shortfall's "envelope", which its dead letter keeps, was that line of clinical text."""
        message = (
            b"MSH|^~\\&|LAB|STOLAV|HELSEBRO|HP|20250110083000||ORU^R01^ORU_R01|C1|P|2.5.1\r"
            b"PID|1||15866112379^^^NOR^FNR||NORDMANN^OLA||19610615|M\r"
            b"OBR|1|P1|F1|HB^Hb^L|||20250110080000\r"
            b"OBX|1|FT|TXT^Tekst^L||Linje en\nFTS-verdi normal hos pasienten||||||F\r"
        )
        f = tmp_path / "m.hl7"
        f.write_bytes(message)
        assert main(["convert", str(f)]) == 0
        out = capsys.readouterr().out
        assert "FTS-1" not in out and "lost on the way" not in out
        [doc] = [json.loads(line) for line in out.splitlines()]  # one Bundle: the text is the OBX's (docs/hl7v2-coverage.md, Line ends)
        [obs] = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert obs["valueString"] == "Linje en\nFTS-verdi normal hos pasienten"

    def test_a_count_that_is_not_a_number_is_reported(self, convert_file):
        """BTS-1 = "x" cannot confirm the batch: reported, not taken as agreeing."""
        code, docs = convert_file(_batch(1, "x"), "batch.hl7")
        assert code == 1 and docs[-1]["issue"][0]["diagnostics"].startswith("BTS-1 is not a number of messages")

    @pytest.mark.parametrize("trailers", [b"BTS\rFTS\r", b"BTS|\rFTS|\r", b""])
    def test_an_absent_or_empty_count_is_not_checked(self, convert_file, trailers):
        """BTS and FTS without a count, or no trailers at all: nothing to check, the messages convert, exit 0."""
        code, docs = convert_file(b"BHS|^~\\&|PAS|STOLAV\r" + _messages(2) + trailers, "batch.hl7")
        assert code == 0 and [d["resourceType"] for d in docs] == ["Bundle"] * 2

    def test_the_corpus_batch_file_agrees_and_a_short_copy_does_not(self, convert_file):
        """The corpus's FHS/BHS batch (BTS|2, FTS|1, two messages) converts; the same file claiming 3 is reported."""
        if not CORPUS_BATCH.exists():
            pytest.skip(f"corpus not present: {CORPUS_BATCH}")
        data = CORPUS_BATCH.read_bytes()
        code, docs = convert_file(data, "batch.hl7")
        assert code == 0 and len(docs) == 2
        code, docs = convert_file(data.replace(b"BTS|2", b"BTS|3"), "batch.hl7")
        assert code == 1 and docs[-1]["issue"][0]["diagnostics"].startswith("BTS-1 says 3 messages, the batch holds 2")

    def test_a_batch_that_lost_every_message_gives_one_outcome(self, convert_file):
        """The envelope alone (what a dead letter of a short batch holds): one OperationOutcome, not also "no MSH segment"."""
        code, docs = convert_file(b"FHS|^~\\&|PAS\rBHS|^~\\&|PAS\rBTS|3\rFTS|1\r", "batch.hl7")
        assert code == 1 and len(docs) == 1
        assert docs[0]["issue"][0]["diagnostics"].startswith("BTS-1 says 3 messages, the batch holds 0")
