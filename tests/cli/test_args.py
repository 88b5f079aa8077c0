"""The whole-number flags of every verb share one argparse type (router/cli/_args.py): one flag, one meaning, one message."""

from __future__ import annotations

import pytest

from router.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status", "--scan-limit", "-1"], "--scan-limit: must not be negative"),
        (["status", "--scan-limit", "x"], "--scan-limit: must be a whole number"),
        (["run", "--workers", "65"], "--workers: must be between 1 and 64"),
        (["run", "--workers", "0"], "--workers: must be between 1 and 64"),
        (["find", "--limit", "0"], "--limit: must be at least 1"),
        (["dlq", "list", "--limit", "1.5"], "--limit: must be a whole number"),
    ],
)
def test_a_bad_whole_number_is_a_usage_error_naming_its_flag(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "x"])
def test_until_idle_takes_a_finite_positive_number_of_seconds(capsys, value):
    """Review H153: `run --until-idle nan` was taken: no idle time is below NaN, so the engine stopped at its first
    empty look, as if asked for 0, and `inf` never stopped. Both are usage errors now, as 0 and negatives were."""
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--until-idle", value])
    assert exit_.value.code == 2 and "--until-idle" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "variable", "value"),
    [
        (["run", "--until-idle", "1"], "HELSEBRO_BROKER_URL", "guest:s3cret@rabbit:5672"),
        (["run", "--until-idle", "1"], "HELSEBRO_BROKER_URL", "amqp://guest:s3cret@127.0.0.1:99999/%2F"),
        (["status"], "HELSEBRO_RECORD_URL", "mysql://guest:s3cret@db/x"),
    ],
    ids=["run-no-scheme", "run-port", "status-record"],
)
def test_a_connection_url_that_cannot_work_exits_2_naming_its_variable(capsys, monkeypatch, tmp_path, argv, variable, value):
    """Review H173: `run` with a broker URL without amqp:// retried it as an outage for ever, one with port 99999
    ended in a traceback (exit 1), and `status` with a mysql:// record exited 0. Each is one line naming the
    variable, exit 2, and the password is not printed."""
    monkeypatch.setenv("HELSEBRO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"helsebro: {variable}: ") and err.count("\n") == 1 and "s3cret" not in err
