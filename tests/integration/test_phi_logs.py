"""A real run's log output carries control ids and hashed patient keys, never a national id or a name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from router.testing import adt_message, publish, settings_env
from schemas.identity import first_valid_fnr

HELSEBRO = str(Path(sys.executable).parent / "helsebro")
FAMILIES = ["Snøfrisk", "Brunostvik", "Lefsegård", "Kvæfjordkake"]
GIVENS = ["Solveigunn", "Torbjørnar", "Ingeridda", "Haldorine"]


@pytest.fixture
def settings(broker_settings):
    """The shared broker fixture (tests/conftest.py): embedded and RabbitMQ."""
    return broker_settings


def test_logs_hold_no_identities(settings):
    """Log lines name each message by control id; no FNR, family or given name appears, even for a rejected message."""
    fnrs = [first_valid_fnr(3 + i, 4, 91, 200 + i, synthetic=True) for i in range(len(FAMILIES))]
    messages = [
        adt_message("A01", control_id=f"PHI-{i:03d}", fnr=fnr, local_id=f"P{i}", visit=f"PV{i}", family=family, given=given)
        for i, (fnr, family, given) in enumerate(zip(fnrs, FAMILIES, GIVENS))
    ]
    bad_fnr = fnrs[0][:-1] + str((int(fnrs[0][-1]) + 1) % 10)  # wrong check digit: dead-lettered, error path logged
    messages.append(adt_message("A01", control_id="PHI-BAD", fnr=bad_fnr, local_id="PB", visit="PVB", family="Rømmegrøtli", given="Gudbrandine"))
    messages.append(b"BOOM this is not HL7 " + fnrs[1].encode() + b" " + FAMILIES[1].encode())
    publish(settings, messages)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HELSEBRO_")}
    env.update(settings_env(settings))
    result = subprocess.run([HELSEBRO, "run", "--until-idle", "0.5", "--log-level", "debug"], env=env, capture_output=True, timeout=120)
    assert result.returncode == 0
    output = (result.stdout + result.stderr).decode("utf-8")

    for i in range(len(FAMILIES)):
        assert f"PHI-{i:03d}" in output  # the test can fail: the log does name the messages
    assert "PHI-BAD" in output and "dead_lettered" in output
    for secret in [*fnrs, bad_fnr, *FAMILIES, *GIVENS, "Rømmegrøtli", "Gudbrandine"]:
        assert secret not in output, "patient data in the log"
    for local in ("P0", "PV0"):
        assert f'"{local}"' not in output
