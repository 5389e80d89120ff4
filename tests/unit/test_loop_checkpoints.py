"""paperline.ml.loop_checkpoints: what a project's own training loop saves and resumes from (uni_encoder,
visually_grounded and pixel_linguist use it)."""

from __future__ import annotations

import json

import pytest
import torch

from paperline.ml import loop_checkpoints
from paperline.ml.checkpoints import MANIFEST, CheckpointError


def _trained(steps: int, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for step in range(steps):
        loss = model(torch.full((2, 4), float(step + 1))).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer


def test_a_resumed_loop_has_the_saved_weights_and_optimizer_state_and_only_the_newest_two_stay(tmp_path):
    model, optimizer = _trained(3)
    for step in (1, 2, 3):
        loop_checkpoints.save(model, optimizer, tmp_path, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    fresh, fresh_optimizer = _trained(0, seed=1)
    assert loop_checkpoints.resume(fresh, fresh_optimizer, tmp_path) == 3
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert json.loads(json.dumps(saved["param_groups"])) == loaded["param_groups"]  # JSON: betas come back a list
    for index, entry in saved["state"].items():
        for name, value in entry.items():
            assert torch.equal(value, loaded["state"][index][name])


def test_a_save_cut_short_is_skipped_and_a_changed_file_is_refused(tmp_path):
    model, optimizer = _trained(2)
    loop_checkpoints.save(model, optimizer, tmp_path, 1)
    loop_checkpoints.save(model, optimizer, tmp_path, 2)
    (tmp_path / "checkpoint-2" / MANIFEST).unlink()  # the kill came before the manifest
    assert loop_checkpoints.resume(*_trained(0), tmp_path) == 1
    assert loop_checkpoints.resume(*_trained(0), tmp_path / "none") == 0  # nothing saved yet: from the start
    weights = tmp_path / "checkpoint-1" / loop_checkpoints.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="checkpoint-1 is corrupted"):
        loop_checkpoints.resume(*_trained(0), tmp_path)
