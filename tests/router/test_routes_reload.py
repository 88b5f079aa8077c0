"""Hot reload of routes: a running engine follows a routes.yaml edit, and refuses one that fails or needs a restart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.routing.live import needs_restart
from router.routing.model import RoutesConfig
from router.testing import adt_message, delete_queues, drain_queue, isolated_settings, publish, run_engine_in_thread, wait_until

FNR = "15866112379"
RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"

ROUTES = {
    "destinations": {"record": {"kind": "record"}, "pas": {"kind": "queue", "queue": "reroute.pas", "format": "passthrough"}},
    "routes": [{"name": "adt", "match": {"format": "hl7v2", "message_code": ["ADT"]}, "to": ["record"]}],
}


class _Log:
    """Collects the engine's log events (it logs from its own thread; list.append is atomic)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    error = warning = info

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kw for event, kw in self.events if event == name]


def _fast_reload(settings):
    return settings.model_copy(update={"engine": settings.engine.model_copy(update={"mappings": settings.engine.mappings.model_copy(update={"reload_seconds": 0.05})})})


def _rewrite(path: Path, change) -> None:
    """Edit routes.yaml as an operator does: read it, change it, write it back (queue names keep the test's tag)."""
    routes = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(routes)
    path.write_text(yaml.safe_dump(routes, sort_keys=False), encoding="utf-8")


def _config(**changes: Any) -> RoutesConfig:
    return RoutesConfig.model_validate({**ROUTES, **changes})


class TestWhatNeedsARestart:
    def test_routes_and_rendering_options_change_live(self):
        """Routes and a queue destination's rendering format need no new topology: nothing to restart for."""
        new = _config(destinations={**ROUTES["destinations"], "pas": {"kind": "queue", "queue": "reroute.pas", "format": "fhir-json"}},
                      routes=[{"name": "all", "to": ["record", "pas"]}])
        assert needs_restart(_config(), new) == []

    def test_a_destination_added_removed_or_moved_needs_a_restart(self):
        dests = ROUTES["destinations"]
        assert needs_restart(_config(), _config(destinations={**dests, "lab": {"kind": "queue", "queue": "lab.in"}})) == ["destination lab added"]
        assert needs_restart(_config(), _config(destinations={"record": dests["record"]}, routes=[{"name": "r", "to": ["record"]}])) == ["destination pas removed"]
        moved = _config(destinations={**dests, "pas": {"kind": "queue", "queue": "reroute.other"}})
        assert needs_restart(_config(), moved) == ["destination pas: queue changed (queues are declared at start)"]
        kith = _config(destinations={**dests, "pas": {"kind": "queue", "queue": "reroute.pas", "format": "kith", "mapping": "PLO_InnlagtPasient"}})
        assert "format changed to or from kith" in needs_restart(_config(), kith)[0]
        other = _config(destinations={**dests, "pas": {"kind": "queue", "queue": "reroute.pas", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "8094"}})
        assert needs_restart(kith, other) == ["destination pas: kith options changed (the AppRec watch holds its receiver and mapping from start)"]
        assert needs_restart(kith, kith) == []
        assert needs_restart(_config(), _config(duplicates={"window_seconds": 60})) == ["duplicates changed (the duplicate windows are set at start)"]


@pytest.mark.parametrize("broker", ["embedded", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def test_a_running_engine_follows_routes_edits_and_refuses_bad_ones(tmp_path, broker):
    """Through the queue: a route edit sends the next message to one more destination; a destination option
    changes its rendering live; a `when:` that cannot match and an added destination are refused with why,
    and the old routes go on routing; a route narrowed to ORU filters the next ADT."""
    settings = _fast_reload(isolated_settings(tmp_path, routes=ROUTES, broker_url=RABBIT if broker == "rabbitmq" else None))
    routes_file = settings.config_dir / "routes.yaml"
    pas = settings.routes.destinations["pas"].queue
    log = _Log()
    settled: list[Any] = []
    handle = run_engine_in_thread(settings, logger=log, on_settled=settled.append)
    sent = iter(range(1, 100))

    def send() -> str:
        control_id = f"RR{next(sent)}"
        publish(settings, [adt_message("A08", control_id=control_id, fnr=FNR, local_id="L1", visit="V1")])
        return str(wait_until(lambda: next((s.outcome for s in settled if s.control_id == control_id), None), timeout=30, what=f"{control_id} settled"))

    def reloaded(n: int) -> None:
        wait_until(lambda: len(log.named("routes_reloaded")) >= n, timeout=30, what=f"routes reload {n}")

    def refused(n: int) -> dict[str, Any]:
        return wait_until(lambda: log.named("routes_reload_refused")[n - 1:], timeout=30, what=f"routes refusal {n}")[0]

    try:
        assert send() == "applied" and drain_queue(settings, pas) == []

        _rewrite(routes_file, lambda r: r["routes"][0].update(to=["record", "pas"]))
        reloaded(1)
        send()
        (_h, body), = wait_until(lambda: drain_queue(settings, pas), timeout=30, what="the message at pas")
        assert body.startswith(b"MSH|")

        _rewrite(routes_file, lambda r: r["destinations"]["pas"].update(format="fhir-json"))
        reloaded(2)
        send()
        (_h, body), = wait_until(lambda: drain_queue(settings, pas), timeout=30, what="the message at pas")
        assert body.startswith(b"{") and b'"Bundle"' in body

        _rewrite(routes_file, lambda r: r["routes"][0]["match"].update(when="PID-99 valued"))
        fields = refused(1)
        assert fields["file"] == str(routes_file) and fields["line"] > 1 and "PID-99" in fields["error"]
        send()
        assert wait_until(lambda: drain_queue(settings, pas), timeout=30, what="the old routes still at pas")

        _rewrite(routes_file, lambda r: (r["routes"][0]["match"].pop("when"), r["destinations"].update(lab={"kind": "queue", "queue": f"{pas}.lab"})))
        fields = refused(2)
        assert fields["file"] == str(routes_file) and fields["reason"] == "destination lab added: restart the workers to apply"
        send()
        assert wait_until(lambda: drain_queue(settings, pas), timeout=30, what="the old routes still at pas")
        assert (handle.engine.routes.reloads, handle.engine.routes.refusals, handle.engine.routes.failing) == (2, 2, True)

        _rewrite(routes_file, lambda r: (r["destinations"].pop("lab"), r["routes"][0]["match"].update(message_code=["ORU"])))
        reloaded(3)
        assert send() == "filtered" and drain_queue(settings, pas) == []
        assert handle.engine.routes.failing is False
        assert FNR not in repr(log.named("routes_reload_refused")) + repr(log.named("routes_reloaded"))
    finally:
        handle.stop()
        if settings.broker_url:
            delete_queues(settings)


def test_the_metrics_count_routes_reloads(tmp_path):
    """A scrape says how many routes edits this worker loaded and refused, and whether routes.yaml on disk is refused."""
    from router.ops.metrics import exposition

    settings = _fast_reload(isolated_settings(tmp_path, routes=ROUTES))
    routes_file = settings.config_dir / "routes.yaml"
    handle = run_engine_in_thread(settings)

    def scrape() -> dict[str, str]:
        return dict(re.findall(r"^(helsebro_routes\w*) (\S+)$", exposition(handle.engine), re.M))

    try:
        assert scrape() == {"helsebro_routes_reloads_total": "0", "helsebro_routes_reload_refusals_total": "0", "helsebro_routes_reload_failing": "0"}
        _rewrite(routes_file, lambda r: r["destinations"].update(lab={"kind": "queue", "queue": "reroute.lab"}))
        wait_until(lambda: handle.engine.routes.refusals == 1, timeout=30, what="the added destination refused")
        assert scrape() == {"helsebro_routes_reloads_total": "0", "helsebro_routes_reload_refusals_total": "1", "helsebro_routes_reload_failing": "1"}
        _rewrite(routes_file, lambda r: (r["destinations"].pop("lab"), r["routes"][0].update(to=["record", "pas"])))
        wait_until(lambda: handle.engine.routes.reloads == 1, timeout=30, what="the fixed edit loaded")
        assert scrape() == {"helsebro_routes_reloads_total": "1", "helsebro_routes_reload_refusals_total": "1", "helsebro_routes_reload_failing": "0"}
    finally:
        handle.stop()


def test_an_edit_saved_between_reading_the_settings_and_the_first_look_is_loaded(tmp_path):
    """routes.yaml edited after the settings were read but before the engine began watching it (a start compiles the
    mappings for seconds in between): the engine runs the routes it read, so the edit is loaded at the next looks, not
    taken for what runs and left unapplied until the file changes again."""
    settings = _fast_reload(isolated_settings(tmp_path, routes=ROUTES))
    routes_file = settings.config_dir / "routes.yaml"
    pas = settings.routes.destinations["pas"].queue
    _rewrite(routes_file, lambda r: r["routes"][0].update(to=["record", "pas"]))
    log = _Log()
    settled: list[Any] = []
    handle = run_engine_in_thread(settings, logger=log, on_settled=settled.append)
    try:
        wait_until(lambda: log.named("routes_reloaded"), timeout=30, what="the edit loaded")
        publish(settings, [adt_message("A08", control_id="EARLY1", fnr=FNR, local_id="L1", visit="V1")])
        wait_until(lambda: any(s.control_id == "EARLY1" for s in settled), timeout=30, what="EARLY1 settled")
        (_h, body), = wait_until(lambda: drain_queue(settings, pas), timeout=30, what="the message at pas")
        assert body.startswith(b"MSH|")
    finally:
        handle.stop()
