"""The sweep's plan and its refusals, without running anything: tasks are the bddn commands they stand for."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.errors import ConfigError
from pipeline import cli, runroot
from pipeline.sweep.plan import DEFAULT_EPOCHS, SweepRequest, image_sources, plan_tasks


def _subject(root: Path, name: str, *, test_fmri: bool) -> None:
    for split, kind in (("training_split", "training_images"), ("test_split", "test_images")):
        (root / "synthetic" / name / split / kind).mkdir(parents=True)
    if test_fmri:
        (root / "synthetic" / name / "test_split" / "test_fmri").mkdir()


def test_plan_has_one_store_per_model_and_one_fit_per_cell(tmp_path: Path) -> None:
    _subject(tmp_path, "subj01", test_fmri=True)
    _subject(tmp_path, "subj02", test_fmri=False)
    request = SweepRequest(name="s", run_root=tmp_path, models=("mobilenet_v2", "efficientnet_lite0"),
                           subjects=("1", "2"), methods=("ridge", "joint"), imageset="synthetic")
    folders, lists = image_sources(request)
    assert folders == [tmp_path / "synthetic" / "subj01" / "training_split" / "training_images",
                       tmp_path / "synthetic" / "subj01" / "test_split" / "test_images",
                       tmp_path / "synthetic" / "subj02" / "training_split" / "training_images"] and lists == []
    tasks = {task.key: task for task in plan_tasks(request, folders, lists)}
    assert list(tasks) == ["store/mobilenet_v2", "store/efficientnet_lite0",
                           "fit/mobilenet_v2/subj01/ridge", "fit/mobilenet_v2/subj02/ridge",
                           "fit/mobilenet_v2/subj01+subj02/joint",
                           "fit/efficientnet_lite0/subj01/ridge", "fit/efficientnet_lite0/subj02/ridge",
                           "fit/efficientnet_lite0/subj01+subj02/joint"]
    store = tasks["store/efficientnet_lite0"]
    assert store.argv[2:5] == ("features", "--model", "efficientnet_lite0") and store.argv[-2:] == ("--name", "synthetic")
    assert store.outputs == (runroot.feature_store_path(tmp_path, "synthetic", "efficientnet_lite0"),)
    ridge = tasks["fit/mobilenet_v2/subj02/ridge"]
    assert ridge.depends == "store/mobilenet_v2" and ridge.outputs == (runroot.fit_dir(tmp_path, "mobilenet_v2", "subj02", "ridge"),)
    assert ridge.command.startswith(f"bddn --run-root {tmp_path} fit --model mobilenet_v2 --imageset synthetic")
    joint = tasks["fit/mobilenet_v2/subj01+subj02/joint"]
    assert "--subjects" in joint.argv and "--method" not in joint.argv and len(joint.outputs) == 2
    parsed = cli.build_parser().parse_args(list(joint.argv))   # every task is a valid bddn command line
    assert parsed.subjects == ["1", "2"] and parsed.imageset == "synthetic"


def test_trained_fits_get_the_sweeps_epochs_and_fit_args_still_win(tmp_path: Path) -> None:
    request = SweepRequest(name="s", run_root=tmp_path, models=("mobilenet_v2",), subjects=("1", "2"),
                           methods=("factortopy", "ridge", "joint"), imageset="demo", named_imageset=True,
                           epochs=DEFAULT_EPOCHS, fit_args=("--epochs", "3"))
    tasks = {task.method: task for task in plan_tasks(request, [], []) if task.kind == "fit"}
    for method in ("factortopy", "joint"):
        argv = tasks[method].argv
        assert argv[-4:] == ("--epochs", str(DEFAULT_EPOCHS), "--epochs", "3")
        assert cli.build_parser().parse_args(list(argv)).epochs == 3           # the user's flag, last, wins
    assert "--epochs" not in tasks["ridge"].argv[:-2]                           # ridge has no epochs of its own
    assert cli.build_parser().parse_args(["sweep"]).epochs == DEFAULT_EPOCHS == 8
    with pytest.raises(ConfigError, match="--epochs must be at least 1"):
        SweepRequest(name="s", run_root=tmp_path, models=("m",), subjects=("1",), methods=("factortopy",), epochs=0)


@pytest.mark.parametrize("fields, message", [
    ({"methods": ("joint",), "subjects": ("1",)}, "joint fits two or more subjects"),
    ({"methods": ("lasso",)}, r"unknown method\(s\) \['lasso'\]"),
    ({"models": ()}, "at least one value for --models"),
    ({"subjects": ("1", "1")}, "--subjects repeats a value"),
])
def test_bad_requests_are_refused(tmp_path: Path, fields: dict, message: str) -> None:
    values = {"name": "s", "run_root": tmp_path, "models": ("m",), "subjects": ("1", "2"), "methods": ("ridge",),
              **fields}
    with pytest.raises(ConfigError, match=message):
        SweepRequest(**values)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = str(tmp_path / "runs")
    assert cli.main(["--run-root", runs, "sweep", "--methods", "joint", "--subjects", "1"]) == 2
    assert cli.main(["--run-root", runs, "sweep", "--data", "nsd", "--root", str(tmp_path)]) == 2
    assert cli.main(["--run-root", runs, "sweep", "--imageset", "demo", "--image-list", "x.txt"]) == 2
    assert cli.main(["--run-root", runs, "sweep", "--workers", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("bddn sweep: error: ") for line in lines)
    assert "joint" in lines[0] and "--image-list" in lines[1] and "--imageset names" in lines[2] and "--workers" in lines[3]
