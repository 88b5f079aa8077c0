"""Hot reload: the running engine picks up edited mappings, and refuses broken ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.fhir.record import open_record
from router.reload import MappingReloader
from router.testing import adt_message, isolated_settings, publish, run_engine_in_thread, wait_until

ROOT = Path(__file__).resolve().parents[2]
FNR = "15866112379"


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def info(self, event: str, **kw) -> None:
        self.events.append((event, kw))

    error = warning = info


@pytest.fixture
def mappings(tmp_path) -> Path:
    dst = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", dst)
    return dst


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


class TestMappingReloader:
    def test_swaps_in_an_edited_mapping(self, mappings):
        """An edit that compiles replaces the converter and is logged."""
        builds = []
        log = _Log()
        reloader = MappingReloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=log)
        assert reloader.current() == 1
        _edit(mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml", "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert reloader.current() == 2
        assert log.events[-1][0] == "mappings_reloaded" and "XPN.HumanName.yaml" in log.events[-1][1]["changed"]

    def test_on_swap_runs_after_a_reload_only(self, mappings):
        """The swap hook (the engine re-freezes the collector there) runs once per new set, never for a refused one."""
        swaps = []
        sets = iter([1, 2])
        reloader = MappingReloader(mappings, lambda: next(sets), interval=1e-9, logger=_Log(), on_swap=lambda: swaps.append(1))
        assert reloader.current() == 1 and swaps == []
        _edit(mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml", "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert reloader.current() == 2 and swaps == [1]
        assert reloader.current() == 2 and swaps == [1]

    def test_refuses_a_broken_mapping_and_keeps_the_old(self, mappings):
        """A mapping that fails its checks is refused with file:line, and the old converter stays."""
        from adapters.hl7v2.paths import compile_path
        from router.mapping import MappingSet

        log = _Log()
        reloader = MappingReloader(mappings, lambda: MappingSet.load(mappings / "hl7v2", compile_path), interval=1e-9, logger=log)
        before = reloader.current()
        _edit(mappings / "hl7v2" / "segments" / "PID.Patient.yaml", "target: birthDate", "target: birthdate")
        assert reloader.current() is before
        event, fields = log.events[-1]
        assert event == "mappings_reload_refused"
        assert fields["file"].endswith("PID.Patient.yaml") and fields["line"] > 1 and "birthdate" in fields["error"]


class TestEngineHotReload:
    def test_running_engine_follows_edits_through_the_queue(self, tmp_path, mappings, monkeypatch):
        """Through the queue: an edit changes what the next message writes; a broken edit changes nothing."""
        settings = isolated_settings(tmp_path).model_copy(update={"mappings_dir": mappings})
        settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"mappings": settings.engine.mappings.model_copy(update={"reload_seconds": 0.05})})})
        handle = run_engine_in_thread(settings)
        record = open_record(settings)
        try:
            def family() -> str | None:
                found = record.search("Patient", {"identifier": f"urn:oid:2.16.578.1.12.4.1.4.1|{FNR}"})
                return found[0]["name"][0]["family"] if found else None

            publish(settings, [adt_message("A01", control_id="R1", fnr=FNR, local_id="L1", visit="V1", family="Testesen")])
            wait_until(lambda: family() == "Testesen", timeout=20, what="first message applied")
            _edit(mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml", "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
            wait_until(lambda: handle.engine.mappings.reloads == 1, timeout=20, what="reload")
            publish(settings, [adt_message("A08", control_id="R2", fnr=FNR, local_id="L1", visit="V1", family="Testesen")])
            wait_until(lambda: family() == "TESTESEN", timeout=20, what="edited mapping used")
            _edit(mappings / "hl7v2" / "segments" / "PID.Patient.yaml", "target: birthDate", "target: birthdate")
            wait_until(lambda: handle.engine.mappings.refusals == 1, timeout=20, what="refusal")
            publish(settings, [adt_message("A08", control_id="R3", fnr=FNR, local_id="L1", visit="V1", family="Nyesen")])
            wait_until(lambda: family() == "NYESEN", timeout=20, what="old mapping still running")
        finally:
            record.close()
            handle.stop()


def test_engine_freezes_the_collector_only_when_asked(tmp_path):
    """`helsebro run` engines freeze what was loaded (fewer full GC passes); engines in tests and tools do not."""
    import gc

    gc.unfreeze()
    handle = run_engine_in_thread(isolated_settings(tmp_path / "plain"))
    handle.stop()
    assert gc.get_freeze_count() == 0
    try:
        handle = run_engine_in_thread(isolated_settings(tmp_path / "frozen"), freeze_gc=True)
        handle.stop()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
