"""The fit's weights file: tensors by role, one subject's view of a joint model, safe and clear failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from cache.errors import InvalidInputError
from stages.fit.factortopy import FactorTopy, FactorTopyConfig
from stages.fit.weights_file import WEIGHTS_FILE, read_fit_weights, subject_weights, write_fit_weights


def _joint_model() -> FactorTopy:
    torch.manual_seed(0)
    return FactorTopy(n_channels=(4, 6), grid=4, coords=[torch.randn(5, 3), torch.randn(7, 3)],
                      cfg=FactorTopyConfig(bottleneck=3, hidden=8, n_frequencies=2))


def test_roles_round_trip_one_subject_of_a_joint_model(tmp_path: Path) -> None:
    model = _joint_model()
    state = model.state_dict()
    path = write_fit_weights(tmp_path, subject_weights(state, 1), method="factortopy-joint", model="timm:x",
                             subject="subj02", layer_names=("a", "b"))
    assert path == tmp_path / WEIGHTS_FILE and [p.name for p in tmp_path.iterdir()] == [WEIGHTS_FILE]
    with safe_open(str(path), framework="numpy") as handle:
        assert json.loads(handle.metadata()["layer_names"]) == ["a", "b"]
        assert not any(name.startswith("readouts.1.") for name in handle.keys())
    weights = read_fit_weights(tmp_path)
    np.testing.assert_array_equal(weights.readout, state["readouts.1.weight"].numpy())
    np.testing.assert_array_equal(weights.readout_bias, state["readouts.1.bias"].numpy())
    assert [w.shape for w in weights.local_bottlenecks] == [(3, 4), (3, 6)]
    for layer in range(2):
        np.testing.assert_array_equal(weights.local_bottlenecks[layer],
                                      state[f"local_bottlenecks.{layer}.weight"].numpy()[:, :, 0, 0])
        np.testing.assert_array_equal(weights.global_bottlenecks[layer],
                                      state[f"global_bottlenecks.{layer}.weight"].numpy())
    assert set(weights.selectors) == {name[len("selectors."):] for name in state if name.startswith("selectors.")}


def test_a_whole_joint_state_dict_reads_by_subject_index(tmp_path: Path) -> None:
    state = _joint_model().state_dict()
    save_file({name: tensor.numpy() for name, tensor in state.items()}, str(tmp_path / WEIGHTS_FILE))
    np.testing.assert_array_equal(read_fit_weights(tmp_path, subject_index=1).readout, state["readouts.1.weight"].numpy())
    with pytest.raises(InvalidInputError, match=r"read-outs of subjects \[0, 1\], not of subject 2"):
        read_fit_weights(tmp_path, subject_index=2)


def test_partial_files_and_missing_files(tmp_path: Path) -> None:
    assert read_fit_weights(tmp_path) is None
    save_file({"readouts.0.weight": np.ones((5, 3), np.float32)}, str(tmp_path / WEIGHTS_FILE))
    weights = read_fit_weights(tmp_path)
    assert weights.readout.shape == (5, 3) and weights.readout_bias is None
    assert weights.local_bottlenecks == () and weights.global_bottlenecks == () and dict(weights.selectors) == {}


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncated"])
def test_unreadable_files_fail_naming_the_file(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / WEIGHTS_FILE
    if content == "truncated":
        save_file({"readouts.0.weight": np.ones((50, 30), np.float32)}, str(path))
        content = path.read_bytes()[:-100]
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=f"{path} is not a readable safetensors file"):
        read_fit_weights(tmp_path)
