"""``bddn compare`` over networks of different depths: relative depth by default, the networks side by side with
their hierarchy scores, and the agreement table per ROI with every Markdown cell escaped."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.cli import main
from report_helpers import ranked_fit

#: A model id with Markdown and HTML syntax in it: the tables must show it as text.
HOSTILE = "vit|<b>x</b>"


def test_compare_writes_networks_side_by_side_and_their_agreement(tmp_path: Path, capsys) -> None:
    folders = []
    for seed, (n_layers, model, subject) in enumerate(((12, HOSTILE, "subj01"), (19, "mobilenet", "subj01"),
                                                       (19, "mobilenet", "subj02"))):
        folders.append(ranked_fit(n_layers, seed=seed, model=model, subject=subject).save(tmp_path / f"fit{seed}"))
    out = tmp_path / "cmp"
    assert main(["--run-root", str(tmp_path / "runs"), "compare", *map(str, folders), "--out", str(out),
                 "--maps", "relative_depth", "--dpi", "30", "--resolution", "120", "--no-viewer"]) == 0
    printed = capsys.readouterr().out
    assert (out / "relative_depth.png").is_file() and (out / "depth_profiles.png").is_file()
    scores = pd.read_parquet(out / "networks.parquet")
    assert list(scores["network"]) == [f"{HOSTILE} (factortopy)", "mobilenet (factortopy)"]
    assert list(scores["layers"]) == [12, 19] and list(scores["subjects"]) == [1, 2]   # a fit, an average
    assert f"network mobilenet (factortopy): 19 layers, 2 subject(s), hierarchy score ρ = " in printed
    agreement = pd.read_parquet(out / "depth_agreement.parquet")
    assert set(agreement["area"]) == {"V1", "V2", "V3", "V4", "FFA", "all vertices"}
    assert (agreement["n_subjects"] == 1).all() and agreement["spearman"].between(-1, 1).all()
    assert "relative-depth agreement " in printed
    markdown = (out / "depth_agreement.md").read_text() + (out / "networks.md").read_text()
    assert "vit&#124;&lt;b&gt;x&lt;/b&gt; (factortopy)" in markdown and "<b>" not in markdown
    by_area = pd.read_parquet(out / "depth_by_area.parquet")
    assert {"mean_layer", "mean_relative_depth"} <= set(by_area.columns)
