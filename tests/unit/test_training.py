"""The thin trainer: device and precision choice, resumable checkpoints, corrupted-checkpoint errors.

A tiny randomly initialised BERT with the MiniLM tokenizer keeps these tests to seconds.
"""

import json
import subprocess
import sys
import textwrap
import time

import pytest

from paperline.ml.checkpoints import MANIFEST, CheckpointError, check_checkpoint, last_checkpoint
from paperline.ml.training import TrainSettings, mixed_precision, select_device


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tiny_models import tiny_sentence_transformer

    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny"))


def test_device_and_precision_on_this_machine():
    assert select_device("cpu") == "cpu"
    assert select_device("auto") in {"cpu", "cuda", "mps"}
    assert mixed_precision("cpu") == "fp32"


TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss
    from paperline.ml.training import TrainSettings, fit

    model = SentenceTransformer(sys.argv[1], device="cpu")
    rows = Dataset.from_dict({"sentence1": ["a b c", "d e", "f g h i"] * 40, "sentence2": ["c b a", "e", "i"] * 40,
                              "score": [0.9, 0.5, 0.1] * 40})
    result = fit(model, rows, CoSENTLoss(model), TrainSettings(output_dir=Path(sys.argv[2]), batch_size=4,
                 checkpoint_every=3, max_steps=int(sys.argv[3]), progress=False, device="cpu"))
    print(json.dumps({"global_step": result.global_step, "resumed_from_step": result.resumed_from_step}))
    """
)


def _train(tiny_model_dir, out, steps):
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tiny_model_dir), str(out), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_sigkilled_job_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "ckpt"
    job = _train(tiny_model_dir, out, 3000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "checkpoint-6" / "trainer_state.json").exists():
        time.sleep(0.05)
    time.sleep(0.5)  # let the checkpoint finish writing its last files
    job.kill()  # SIGKILL: no handler, no cleanup
    job.wait()
    assert job.returncode == -9
    resumed_at = int(last_checkpoint(out, (MANIFEST,)).name.split("-")[1])  # what fit resumes from
    assert resumed_at >= 6
    again = _train(tiny_model_dir, out, resumed_at + 3)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result == {"global_step": resumed_at + 3, "resumed_from_step": resumed_at}


def test_a_corrupted_checkpoint_is_one_clear_error(tiny_model_dir, tmp_path):
    out = tmp_path / "ckpt"
    job = _train(tiny_model_dir, out, 3)
    assert job.wait(timeout=300) == 0, job.stderr.read()[-2000:]
    newest = last_checkpoint(out)
    check_checkpoint(newest)  # a good one passes
    weights = next(newest.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk filled mid-write
    with pytest.raises(CheckpointError, match=rf"checkpoint {newest} is corrupted .*delete {newest}"):
        last_checkpoint(out)
    (newest / MANIFEST).unlink()  # without a manifest (a checkpoint saved before manifests) the structural checks
    (newest / "trainer_state.json").write_text("{not json")  # still apply
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        check_checkpoint(newest)


def test_weights_overwritten_inside_the_tensor_data_are_caught_by_the_manifest(tiny_model_dir, tmp_path):
    """The header still parses and every tensor still opens: only the checksum sees the change."""
    out = tmp_path / "ckpt"
    job = _train(tiny_model_dir, out, 3)
    assert job.wait(timeout=300) == 0, job.stderr.read()[-2000:]
    newest = last_checkpoint(out, (MANIFEST,))
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"checkpoint {newest} is corrupted \(model.safetensors differs from "
                                              rf"the sha256 its manifest recorded.*delete {newest}"):
        last_checkpoint(out, (MANIFEST,))
    rerun = _train(tiny_model_dir, out, 6)  # the job refuses it in one line too, rather than resuming from it
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode != 0 and "differs from the sha256" in stderr


def test_a_save_cut_short_by_a_kill_is_skipped_for_the_previous_checkpoint(tmp_path):
    complete = tmp_path / "checkpoint-4"
    complete.mkdir()
    (complete / "trainer_state.json").write_text('{"global_step": 4}')
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(2)}, str(complete / "model.safetensors"))
    partial = tmp_path / "checkpoint-8"  # killed before the trainer wrote its state, which it writes last
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    assert last_checkpoint(tmp_path) == complete
    assert not partial.exists()
    (complete / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path) is None  # nothing complete: start from step 0


def test_settings_defaults_follow_the_paper_recipe(tmp_path):
    settings = TrainSettings(output_dir=tmp_path)
    assert (settings.batch_size, settings.learning_rate, settings.warmup_ratio) == (16, 2e-5, 0.1)


def test_a_loss_with_weights_of_its_own_is_checkpointed_and_restored(tiny_model_dir, tmp_path):
    """A head inside the loss (DSE's pair head, SoftmaxLoss's classifier) resumes with its trained weights."""
    import torch
    from datasets import Dataset
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from paperline.ml.checkpoints import LOSS_STATE
    from paperline.ml.training import fit, loss_parameters

    class HeadLoss(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.head = model, torch.nn.Linear(64, 1)

        def forward(self, features, labels):
            u, v = (self.model(f)["sentence_embedding"] for f in features)
            return torch.nn.functional.mse_loss(self.head(torch.cat([u, v], -1)).squeeze(-1), labels.float())

    rows = Dataset.from_dict({"sentence1": ["a b", "c d e", "f"] * 8, "sentence2": ["b", "e d", "g h"] * 8,
                              "score": [0.9, 0.4, 0.1] * 8})
    settings = TrainSettings(output_dir=tmp_path / "ckpt", batch_size=4, checkpoint_every=3, max_steps=3,
                             progress=False, device="cpu", learning_rate_mapping={r"^head\.": 1e-2})
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    loss = HeadLoss(model)
    start = loss.head.weight.detach().clone()
    fit(model, rows, loss, settings)
    assert set(loss_parameters(loss, model)) == {"head.weight", "head.bias"}
    saved = load_file(str(tmp_path / "ckpt" / "checkpoint-3" / LOSS_STATE))
    assert torch.equal(saved["head.weight"], loss.head.weight.detach())
    assert not torch.equal(start, loss.head.weight.detach())  # the head trained (at its own, higher rate)

    fresh_model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    fresh = HeadLoss(fresh_model)  # a new random head, as a restarted job builds it
    fresh_start = fresh.head.weight.detach().clone()
    result = fit(fresh_model, rows, fresh, settings)  # resumes from checkpoint-3 (the trainer adds a step)
    assert result.resumed_from_step == 3
    after = fresh.head.weight.detach()
    # It continued from the saved head, not from its own random start.
    assert (after - saved["head.weight"]).norm() < 0.5 * (fresh_start - saved["head.weight"]).norm()

    newest = last_checkpoint(tmp_path / "ckpt", (LOSS_STATE,))
    (newest / LOSS_STATE).unlink()  # a kill between the trainer's save and ours: that checkpoint is incomplete
    assert last_checkpoint(tmp_path / "ckpt", (LOSS_STATE,)).name == "checkpoint-3"
    assert not newest.exists()


def test_the_cuda_path_asks_for_bf16_a_fused_optimizer_and_compile_only_where_it_applies(tmp_path):
    """What the trainer is told on each device (no GPU here: the arguments, not the speed, are checked)."""
    from paperline.ml.training import training_arguments

    settings = TrainSettings(output_dir=tmp_path, compile=True, dataloader_workers=2)
    cuda = training_arguments(settings, "cuda", "bf16")
    assert cuda["bf16"] and cuda["optim"] == "adamw_torch_fused" and cuda["torch_compile"]
    assert cuda["dataloader_num_workers"] == 2 and not cuda["use_cpu"]
    cpu = training_arguments(settings, "cpu", "fp32")
    assert not cpu["bf16"] and not cpu["torch_compile"] and cpu["use_cpu"]
    assert cpu["optim"] == "adamw_torch_fused"  # transformers' default, named
    assert "batch_sampler" not in cpu
    assert "batch_sampler" in training_arguments(TrainSettings(output_dir=tmp_path, group_by_length=True), "cpu", "fp32")
