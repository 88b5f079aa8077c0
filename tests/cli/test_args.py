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
