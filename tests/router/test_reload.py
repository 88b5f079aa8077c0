"""Hot reload: the running engine picks up edited mappings, and refuses broken ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.fhir.record import open_record
from router.reload import Reloader
from router.testing import adt_message, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

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


def _settled(reloader: Reloader):
    """Two looks: the first sees the change, the second (the files held still) builds it."""
    reloader.current()
    return reloader.current()


class TestMappingReloader:
    def test_swaps_in_an_edited_mapping(self, mappings):
        """An edit that compiles replaces the converter and is logged."""
        builds = []
        log = _Log()
        reloader = Reloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=log)
        assert reloader.current() == 1
        _edit(mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml", "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert _settled(reloader) == 2
        assert log.events[-1][0] == "mappings_reloaded" and "XPN.HumanName.yaml" in log.events[-1][1]["changed"]

    def test_on_swap_runs_after_a_reload_only(self, mappings):
        """The swap hook (the engine re-freezes the collector there) runs once per new set, never for a refused one."""
        swaps = []
        sets = iter([1, 2])
        reloader = Reloader(mappings, lambda: next(sets), interval=1e-9, logger=_Log(), on_swap=lambda: swaps.append(1))
        assert reloader.current() == 1 and swaps == []
        _edit(mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml", "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert _settled(reloader) == 2 and swaps == [1]
        assert reloader.current() == 2 and swaps == [1]

    def test_refuses_a_broken_mapping_and_keeps_the_old(self, mappings):
        """A mapping that fails its checks is refused with file:line, and the old converter stays."""
        from adapters.hl7v2.paths import compile_path
        from router.mapping import MappingSet

        log = _Log()
        reloader = Reloader(mappings, lambda: MappingSet.load(mappings / "hl7v2", compile_path), interval=1e-9, logger=log)
        before = reloader.current()
        _edit(mappings / "hl7v2" / "segments" / "PID.Patient.yaml", "target: birthDate", "target: birthdate")
        assert _settled(reloader) is before
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


class TestWhatAReloadSees:
    """Session 22: which edits a look catches, and what a rebuild that fails does to the worker."""

    def test_a_same_size_edit_in_one_mtime_tick_is_seen(self, mappings):
        """An edit that keeps size and mtime (saved within the tick of the last look) still reloads."""
        import os
        import time

        path = mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml"
        tick = time.time_ns() + 3600 * 10**9  # a future mtime stands for "in the tick of the last look", deterministically
        os.utime(path, ns=(tick, tick))
        builds = []
        reloader = Reloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=_Log())
        assert reloader.current() == 1
        size = path.stat().st_size
        _edit(path, "from: XPN.1.1", "from: XPN.1.2")
        os.utime(path, ns=(tick, tick))
        assert path.stat().st_size == size
        assert _settled(reloader) == 2

    def test_an_edit_reloads_once_not_again_when_it_is_no_longer_recent(self, mappings, monkeypatch):
        """A file hashed while its edit was recent is not taken for edited again once it is older."""
        import os
        import time

        import router.reload as reload_module

        clock = [time.time_ns()]
        monkeypatch.setattr(reload_module.time, "time_ns", lambda: clock[0])
        builds = []
        reloader = Reloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=_Log())
        path = mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml"
        _edit(path, "from: XPN.1.1", "from: XPN.1.2")
        os.utime(path, ns=(clock[0], clock[0]))
        assert _settled(reloader) == 2  # the edit, hashed: it is recent
        clock[0] += 60 * 10**9  # a minute later the file is no longer recent: one stat, no digest
        assert reloader.current() == 2
        assert reloader.current() == 2 and builds == [1, 1]

    def test_deleting_or_renaming_a_mapping_file_reloads(self, mappings):
        builds = []
        reloader = Reloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=_Log())
        assert reloader.current() == 1
        table = next((mappings / "hl7v2" / "tables").glob("*.yaml"))
        table.rename(table.with_suffix(".yaml.bak"))
        assert _settled(reloader) == 2
        (mappings / "outbound" / "hl7v2" / "ORU_R01.yaml").unlink()
        assert _settled(reloader) == 3

    def test_a_half_written_file_is_refused_then_loaded_once_complete(self, mappings):
        """A save caught halfway (NUL padding) is refused at its file:line, not raised; the finished file then loads."""
        from adapters.hl7v2.paths import compile_path
        from router.mapping import MappingSet

        log = _Log()
        reloader = Reloader(mappings, lambda: MappingSet.load(mappings / "hl7v2", compile_path), interval=1e-9, logger=log)
        before = reloader.current()
        path = mappings / "hl7v2" / "segments" / "PID.Patient.yaml"
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2] + b"\0" * 64)
        assert _settled(reloader) is before
        event, fields = log.events[-1]
        assert event == "mappings_reload_refused" and fields["file"].endswith("PID.Patient.yaml") and fields["line"] > 1
        assert "control character" in fields["error"]
        path.write_bytes(whole)
        assert _settled(reloader) is not before
        assert (reloader.reloads, reloader.refusals) == (1, 1)

    def test_an_os_error_in_a_rebuild_is_refused_not_raised(self, mappings):
        """A file gone between the look and the build (an editor's rename dance) keeps the old set running."""
        path = mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml"
        builds = iter([1])

        def build():
            for value in builds:
                return value
            raise FileNotFoundError(2, "No such file or directory", str(path))

        log = _Log()
        reloader = Reloader(mappings, build, interval=1e-9, logger=log)
        _edit(path, "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert _settled(reloader) == 1
        event, fields = log.events[-1]
        assert event == "mappings_reload_refused" and fields["file"].endswith("XPN.HumanName.yaml") and fields["error"] == "FileNotFoundError"


    def test_a_mapping_file_not_utf8_is_refused_at_its_place(self, mappings):
        """A table saved as Latin-1 is refused at its file:line with the old set kept; the fixed file then loads."""
        from adapters.hl7v2.paths import compile_path
        from router.mapping import MappingSet

        log = _Log()
        reloader = Reloader(mappings, lambda: MappingSet.load(mappings / "hl7v2", compile_path), interval=1e-9, logger=log)
        before = reloader.current()
        path = mappings / "hl7v2" / "segments" / "PID.Patient.yaml"
        whole = path.read_bytes()
        path.write_bytes(whole + "\n# f\u00f8dsel\n".encode("latin-1"))
        assert _settled(reloader) is before
        event, fields = log.events[-1]
        assert event == "mappings_reload_refused" and fields["file"].endswith("PID.Patient.yaml") and "not UTF-8" in fields["error"]
        path.write_bytes(whole)
        assert _settled(reloader) is not before and (reloader.reloads, reloader.refusals) == (1, 1)

    @pytest.mark.parametrize("error", [
        KeyError("15866112379"),
        UnicodeDecodeError("utf-8", b"\xf815866112379", 0, 1, "invalid start byte"),
        RecursionError("maximum recursion depth exceeded"),
    ])
    def test_any_other_error_in_a_rebuild_is_refused_not_raised(self, mappings, error):
        """A bug in a mapping's Python-side check keeps the old set running, logs the refusal without its text, and goes on."""
        path = mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml"
        builds = iter([1, 3])

        def build():
            if path.read_text().count("fn: upper") == 1:
                raise error
            return next(builds)

        log = _Log()
        reloader = Reloader(mappings, build, interval=1e-9, logger=log)
        _edit(path, "from: XPN.1.1", "from: XPN.1.1\n    fn: upper")
        assert _settled(reloader) == 1
        event, fields = log.events[-1]
        assert event == "mappings_reload_refused" and fields["error"] == type(error).__name__
        assert "XPN.HumanName.yaml" in fields["changed"] and "15866112379" not in repr(log.events)
        assert (reloader.refusals, reloader.failing) == (1, True)
        _edit(path, "from: XPN.1.1", "from: XPN.1.2\n    fn: upper")
        assert _settled(reloader) == 3 and reloader.failing is False


def _fast_reload(settings):
    return settings.model_copy(update={"engine": settings.engine.model_copy(update={"mappings": settings.engine.mappings.model_copy(update={"reload_seconds": 0.05})})})


class TestEngineReloadsEveryMapping:
    def test_a_broken_kith_mapping_is_refused(self, tmp_path, mappings):
        """KITH mappings are compiled by the reload, so a broken one is refused like an HL7 v2 one."""
        handle = run_engine_in_thread(_fast_reload(isolated_settings(tmp_path).model_copy(update={"mappings_dir": mappings})))
        try:
            _edit(mappings / "kith" / "segments" / "Message.Patient.yaml", "target: birthDate", "target: birthdate")
            wait_until(lambda: handle.engine.mappings.reloads + handle.engine.mappings.refusals, timeout=20, what="the edit looked at")
            assert (handle.engine.mappings.reloads, handle.engine.mappings.refusals) == (0, 1)
        finally:
            handle.stop()

    def test_outbound_mapping_edits_reach_the_legacy_queue_and_broken_ones_are_refused(self, tmp_path, mappings):
        """An outbound edit is used from the next message on; a broken one is refused and the old rendering goes on."""
        routes = {
            "destinations": {"record": {"kind": "record"}, "pas": {"kind": "queue", "queue": "reload.pas", "format": "hl7v2"}},
            "routes": [{"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"]}, "to": ["record", "pas"]}],
        }
        shutil.rmtree(mappings / "kith")  # not needed here: each build is a third shorter
        settings = _fast_reload(isolated_settings(tmp_path, routes=routes).model_copy(update={"mappings_dir": mappings}))
        queue = settings.routes.destinations["pas"].queue
        handle = run_engine_in_thread(settings)
        reloader = handle.engine.mappings

        def pid_1() -> bytes:
            bodies = wait_until(lambda: drain_queue(settings, queue), timeout=20, what="a rendered message")
            (_headers, body), = bodies
            return next(s for s in body.split(b"\r") if s.startswith(b"PID|")).split(b"|")[1]

        try:
            publish(settings, [adt_message("A01", control_id="O1", fnr=FNR, local_id="L1", visit="V1")])
            assert pid_1() == b"1"
            _edit(mappings / "outbound" / "hl7v2" / "ADT_A01.yaml", 'PID-1: {value: "1"}', 'PID-1: {value: "7"}')
            wait_until(lambda: reloader.reloads + reloader.refusals, timeout=20, what="the edit looked at")
            assert reloader.reloads == 1
            publish(settings, [adt_message("A08", control_id="O2", fnr=FNR, local_id="L1", visit="V1")])
            assert pid_1() == b"7"
            _edit(mappings / "outbound" / "hl7v2" / "ADT_A01.yaml", "PID-7: {from: birthDate", "PID-7: {from: birthdate")
            wait_until(lambda: reloader.reloads + reloader.refusals == 2, timeout=20, what="the broken edit looked at")
            assert reloader.refusals == 1
            publish(settings, [adt_message("A08", control_id="O3", fnr=FNR, local_id="L1", visit="V1")])
            assert pid_1() == b"7"
        finally:
            handle.stop()


class TestNoHalfLoadedSet:
    """Session 24: a set is built only from files that hold still, and used only if none moved while it compiled."""

    def test_a_mapping_deleted_then_written_again_is_never_loaded_without_it(self, mappings):
        """An editor's or `git checkout`'s delete-then-write, caught between the two by a look, builds nothing."""
        path = mappings / "hl7v2" / "messages" / "ADT_A01.yaml"
        built_without: list[bool] = []
        reloader = Reloader(mappings, lambda: built_without.append(not path.exists()) or len(built_without), interval=1e-9, logger=_Log())
        whole = path.read_bytes()
        path.unlink()
        assert reloader.current() == 1  # the look between the two steps: the set without ADT_A01 is not built
        path.write_bytes(whole + b"# saved again\n")
        assert _settled(reloader) == 2
        assert built_without == [False, False]

    def test_a_set_whose_files_moved_while_it_compiled_is_not_used(self, mappings):
        """A save that lands while the set compiles: that set may hold half the edit; the next looks build the whole."""
        path = mappings / "hl7v2" / "datatypes" / "XPN.HumanName.yaml"
        builds = []

        def build():
            builds.append(1)
            if len(builds) == 2:  # the reload's build: the author saves the second half meanwhile
                _edit(path, "from: XPN.1.2", "from: XPN.1.2\n    fn: upper")
            return len(builds)

        log = _Log()
        reloader = Reloader(mappings, build, interval=1e-9, logger=log)
        _edit(path, "from: XPN.1.1", "from: XPN.1.2")
        assert _settled(reloader) == 1 and reloader.reloads == 0
        assert log.events[-1][0] == "mappings_reload_deferred" and "XPN.HumanName.yaml" in log.events[-1][1]["changed"]
        assert _settled(reloader) == 3 and reloader.reloads == 1


class TestEngineSaysWhyAReloadIsRefused:
    def test_an_outbound_mapping_deleted_under_a_destination_names_it(self, tmp_path, mappings):
        """Not a lint error but a config check: the refusal says which mapping is missing, not a bare ConfigError."""
        routes = {
            "destinations": {
                "record": {"kind": "record"},
                "kommune": {"kind": "queue", "queue": "reload.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
            },
            "routes": [{"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"]}, "to": ["record", "kommune"]}],
        }
        settings = _fast_reload(isolated_settings(tmp_path, routes=routes).model_copy(update={"mappings_dir": mappings}))
        log = _Log()
        handle = run_engine_in_thread(settings, logger=log)
        try:
            (mappings / "outbound" / "kith" / "PLO_InnlagtPasient.yaml").unlink()
            # the count goes up before the event is logged: wait for the event, which is what is read
            wait_until(lambda: any(event == "mappings_reload_refused" for event, _ in log.events), timeout=20, what="the deletion refused")
            assert handle.engine.mappings.refusals
            fields = next(kw for event, kw in log.events if event == "mappings_reload_refused")
            assert fields["error"] == "ConfigError" and "PLO_InnlagtPasient" in fields["reason"] and "does not exist" in fields["reason"]
            assert handle.engine.mappings.reloads == 0
        finally:
            handle.stop()


class TestAWorkerSaysWhichMappingsRun:
    def test_metrics_name_the_live_version_and_a_refused_edit(self, tmp_path, mappings):
        """A scrape tells which mapping version converts (the hash in the Bundles' meta.tag) and that the files on disk are refused."""
        import re

        from router.mapping.engine import PROVENANCE_SYSTEM
        from router.ops.metrics import exposition

        shutil.rmtree(mappings / "kith")
        settings = _fast_reload(isolated_settings(tmp_path).model_copy(update={"mappings_dir": mappings}))
        handle = run_engine_in_thread(settings)
        record = open_record(settings)
        reloader = handle.engine.mappings

        def scrape() -> dict[str, str]:
            return dict(re.findall(r"^(helsebro_mapping\w*(?:\{[^}]*\})?) (\S+)$", exposition(handle.engine), re.M))

        def tag(control_id: str, family: str) -> str:
            publish(settings, [adt_message("A08", control_id=control_id, fnr=FNR, local_id="L1", visit="V1", family=family)])
            found = wait_until(lambda: [p for p in record.search("Patient", {"identifier": f"urn:oid:2.16.578.1.12.4.1.4.1|{FNR}"})
                                        if p["name"][0]["family"].lower() == family.lower()], timeout=20, what=f"{control_id} applied")
            (code,) = {t["code"] for t in found[0]["meta"]["tag"] if t["system"] == PROVENANCE_SYSTEM}
            return str(code).rsplit("@", 1)[1]

        try:
            first = tag("M1", "Forste")
            assert scrape() == {"helsebro_mapping_reloads_total": "0", "helsebro_mapping_reload_refusals_total": "0",
                                "helsebro_mapping_reload_failing": "0", f'helsebro_mappings_info{{format="hl7v2",version="{first}"}}': "1"}
            _edit(mappings / "hl7v2" / "segments" / "PID.Patient.yaml", "target: birthDate", "target: birthdate")
            wait_until(lambda: reloader.refusals == 1, timeout=20, what="the broken edit refused")
            samples = scrape()
            assert samples["helsebro_mapping_reload_failing"] == "1" and samples["helsebro_mapping_reload_refusals_total"] == "1"
            assert f'helsebro_mappings_info{{format="hl7v2",version="{first}"}}' in samples  # the old set still runs
            _edit(mappings / "hl7v2" / "segments" / "PID.Patient.yaml", "target: birthdate", "target: birthDate  # fixed")  # one save: one reload
            wait_until(lambda: reloader.reloads == 1, timeout=20, what="the fixed edit loaded")
            second = tag("M2", "Andre")
            assert second != first
            assert scrape() == {"helsebro_mapping_reloads_total": "1", "helsebro_mapping_reload_refusals_total": "1",
                                "helsebro_mapping_reload_failing": "0", f'helsebro_mappings_info{{format="hl7v2",version="{second}"}}': "1"}
        finally:
            record.close()
            handle.stop()


def test_a_new_fixture_case_builds_nothing(mappings):
    """`.cases` folders hold fixture cases, which no running set reads: adding one does not stall the worker for a build."""
    builds = []
    reloader = Reloader(mappings, lambda: builds.append(1) or len(builds), interval=1e-9, logger=_Log())
    case = mappings / "outbound" / "hl7v2" / "ADT_A01.cases" / "a_new_case"
    case.mkdir()
    (case / "case.yaml").write_text("description: a new case\n")
    assert _settled(reloader) == 1 and builds == [1]
