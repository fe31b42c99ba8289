"""``bddn demo``: the documented steps, in order, in one process, stopping at the first failure."""

from __future__ import annotations

import argparse

import pytest

from pipeline import cli
from pipeline.commands import demo


def _args(**overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    parser.add_argument("--run-root", default=None)
    return parser.parse_args([f"--{key.replace('_', '-')}={value}" for key, value in overrides.items()])


def test_runs_every_stage_in_order_under_the_run_root(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(list(argv)) or 0)
    assert demo.run(_args(run_root="R", model="efficientnet_lite0", subject=2, epochs=3)) == 0
    assert [call[:2] for call in calls] == [["--run-root", "R"]] * 6
    assert [call[2] for call in calls] == ["demo-images", "features", "synth", "fit", "fit", "figures"]
    assert calls[2][3:] == ["--subjects", "1", "2", "3", "--model", "efficientnet_lite0"]
    assert calls[3][3:] == ["--subject", "2", "--model", "efficientnet_lite0", "--data", "synthetic", "--epochs", "3"]
    assert calls[4][-2:] == ["--method", "ridge"]
    err = capsys.readouterr().err
    assert "step 6/6: bddn --run-root R figures" in err and "seconds per step" in err


def test_stops_at_the_first_failing_step_with_its_status(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(list(argv)) or (2 if argv[0] == "synth" else 0))
    assert demo.run(_args()) == 2
    assert [call[0] for call in calls] == ["demo-images", "features", "synth"]
    assert "`bddn synth --subjects 1 2 3 --model mobilenet_v2` exited with status 2" in capsys.readouterr().err
