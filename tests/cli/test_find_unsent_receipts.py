"""`helsebro find`'s `receipt` for a KITH destination the message never reached."""

from __future__ import annotations

import json

from router.cli import main
from router.errors import InvalidContent
from router.testing import adt_message, publish, run_engine_in_thread, wait_until

GOOD_FNR = "15866112379"  # synthetic (Tenor, month + 80)
KITH_ROUTES = {
    "destinations": {
        "record": {"kind": "record"},
        "kommune": {"kind": "queue", "queue": "kommune.plo", "format": "kith", "mapping": "PLO_InnlagtPasient", "receiver_her_id": "12345"},
    },
    "routes": [{"name": "admissions", "to": ["record", "kommune"]}],
}


class _Quiet:
    def __getattr__(self, _name):
        return lambda *_a, **_k: self


def test_a_render_failure_awaits_no_apprec(exported, capsys, monkeypatch):
    """K9 could not be rendered for kommune (dead-lettered at render): nothing was sent, so no AppRec will ever come.
    The text says nothing of an AppRec there; --json said `"receipt": {"accepted": null, ...}`, which the docstring
    defines as `no AppRec yet`: a monitoring script chasing missing AppRecs after 96 h would chase this one forever."""
    from adapters.kith.render import KithRenderer

    def refuse(self, conv):
        raise InvalidContent("the Bundle has no Encounter, which outbound mapping PLO_InnlagtPasient needs", location="Bundle")

    monkeypatch.setattr(KithRenderer, "render", refuse)
    settings = exported(None, routes=KITH_ROUTES)
    publish(settings, [adt_message("A01", control_id="K9", fnr=GOOD_FNR, local_id="L1", visit="V9")])
    handle = run_engine_in_thread(settings, logger=_Quiet())
    wait_until(lambda: handle.stats.messages == 1, 60, what="settled")
    handle.stop()
    capsys.readouterr()
    assert main(["find", "--control-id", "K9", "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["applied"]
    [dest] = entry["destinations"]
    assert dest["state"] == "dead_lettered"
    assert dest["receipt"] is None, dest
