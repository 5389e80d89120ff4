"""The pixel_linguist project's pure parts: its objectives, batch order and schedule, the sentences it distils on
and scores, its metric names, the student's frozen blocks, a resumed stage, and a saved student served as a pyfunc.

The student here is EfficientNet-Lite0 with random weights (no ImageNet load) on small pictures, so every test runs
in seconds on a CPU; the real flow (smoke config, registry, pyfunc from the registry) is
tests/flows/test_pixel_linguist_flow.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paperline.data.kinds.nli_pairs import NliPair
from paperline.data.kinds.scored_pairs import ScoredPair

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def method():
    from paperline.project.discovery import get_project

    return get_project(ROOT / "projects", "pixel_linguist").method()


@pytest.fixture(scope="module")
def px(method):
    return method.px


@pytest.fixture(scope="module")
def loop(method):
    return method.loop


@pytest.fixture(scope="module")
def S(method):  # noqa: N802 -- the module's own alias in method.py
    return method.S


def tiny_student(px, frozen: int = 3, dim: int = 8):
    torch.manual_seed(0)
    return px.new_student(dim, frozen, seed=0, pretrained=False)


# ---- objectives, batches, schedule ---------------------------------------------------------------------------


def test_distill_loss_is_zero_on_the_teacher_and_mse_is_twice_cosine(loop):
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 16), torch.randn(5, 16)
    assert loop.distill_loss(3.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    cosine, mse = loop.distill_loss(student, teacher, "cosine"), loop.distill_loss(student, teacher, "mse")
    assert mse.item() == pytest.approx(2 * cosine.item(), rel=1e-5)
    with pytest.raises(ValueError, match="cosine or mse"):
        loop.distill_loss(student, teacher, "l1")


def test_info_nce_prefers_the_matching_pairs_and_is_symmetric(loop):
    torch.manual_seed(0)
    anchors = torch.randn(6, 16)
    positives = anchors + 0.05 * torch.randn(6, 16)
    aligned = loop.info_nce(anchors, positives)
    shuffled = loop.info_nce(anchors, positives[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert aligned.item() < 0.1 < shuffled.item()
    assert loop.info_nce(positives, anchors).item() == pytest.approx(aligned.item(), rel=1e-5)


def test_batch_order_is_seeded_whole_epochs_without_a_repeat_in_a_batch(loop):
    order = loop.batch_order(10, steps=7, batch_size=4, seed=3)
    assert order == loop.batch_order(10, steps=7, batch_size=4, seed=3) != loop.batch_order(10, 7, 4, seed=4)
    assert len(order) == 7 and all(len(b) == 4 and len(set(b)) == 4 for b in order)
    assert set(order[0] + order[1]) <= set(range(10))
    small = loop.batch_order(3, steps=2, batch_size=8, seed=0)  # fewer examples than a batch: a batch is an epoch
    assert [sorted(b) for b in small] == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError):
        loop.batch_order(0, 1, 4, 0)


def test_lr_warms_up_then_decays_to_zero(loop):
    factors = [loop.lr_factor(step, 10, 0.2) for step in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[-1] == pytest.approx(0.125) and factors == sorted(factors[:2]) + \
        sorted(factors[2:], reverse=True)


# ---- sentences --------------------------------------------------------------------------------------------------


STS = [ScoredPair("A man plays.", "A man plays guitar.", 4.0), ScoredPair("A cat.", "A man plays.", 0.5)]
NLI = [NliPair("A dog runs.", "An animal moves.", "entailment"),
       NliPair("A dog runs.", "A cat sleeps.", "contradiction"),
       NliPair("Kids play.", "Children play.", "entailment"), NliPair("A cat.", "A pet.", "entailment")]


def test_distillation_sentences_are_deduplicated_seeded_and_never_held_out(S):
    held = {"A cat."}
    sentences = S.distill_sentences(STS, NLI, held, seed=0)
    assert sorted(sentences) == sorted({"A man plays.", "A man plays guitar.", "A dog runs.", "An animal moves.",
                                        "A cat sleeps.", "Kids play.", "Children play.", "A pet."})
    assert sentences == S.distill_sentences(STS, NLI, held, seed=0) != S.distill_sentences(STS, NLI, held, seed=1)
    assert len(S.distill_sentences(STS, NLI, held, seed=0, max_sentences=3)) == 3
    assert S.held_out_sentences({"test": STS[1:]}) == {"A cat.", "A man plays."}


def test_entailment_pairs_leave_out_other_labels_and_held_out_sentences(S):
    pairs = S.entailment_pairs(NLI, held_out={"A cat."}, seed=0)
    assert sorted(pairs) == [("A dog runs.", "An animal moves."), ("Kids play.", "Children play.")]


def test_noisy_rows_keep_the_gold_scores_and_are_the_same_every_time(S):
    rows = [ScoredPair("The quick brown fox jumps over the lazy dog.", "A woman is slicing an onion.", 3.2)]
    once, again = S.noisy_rows(rows, "typos", 0.3, seed=0), S.noisy_rows(rows, "typos", 0.3, seed=0)
    assert once == again and once[0].score == 3.2
    assert once[0].sentence1 != rows[0].sentence1 and len(once[0].sentence1) == len(rows[0].sentence1)


def test_teacher_embeddings_are_computed_once_and_read_back(S, tmp_path, monkeypatch):
    calls = []

    class FakeTeacher:
        def encode(self, sentences, **kwargs):
            calls.append(list(sentences))
            return np.eye(len(sentences), 4, dtype=np.float32)

    import paperline.ml.models as models

    monkeypatch.setattr(models, "load_sentence_transformer", lambda name: FakeTeacher())
    first, listing = S.teacher_embeddings("any", ["a", "b"], tmp_path, progress=False)
    second, _ = S.teacher_embeddings("any", ["a", "b"], tmp_path, progress=False)
    assert len(calls) == 1 and np.array_equal(first, second) and first.shape == (2, 4)
    assert listing.read_text().splitlines() == ["sentence", "a", "b"]


def test_cosine_spearman_scores_each_distinct_sentence_once(method):
    seen = []

    def embed(texts):
        seen.append(list(texts))
        return np.array([[1.0, 0.0] if "same" in t else [0.0, 1.0] for t in texts])

    rows = [ScoredPair("same a", "same b", 5.0), ScoredPair("same a", "other", 0.0), ScoredPair("other", "x", 2.0)]
    score, cosines = method.cosine_spearman(embed, rows)
    assert len(seen) == 1 and sorted(seen[0]) == ["other", "same a", "same b", "x"]
    assert cosines == pytest.approx([1.0, 0.0, 1.0]) and -100 <= score <= 100


# ---- config ---------------------------------------------------------------------------------------------------


def test_metric_names_name_every_arm_noise_and_drop(method):
    cfg = method.Config()
    names = cfg.metric_names()
    for name in ("stsb_test_spearman", "baseline_stsb_test_spearman", "distill_stsb_dev_spearman",
                 "stsb_test_spearman_noise_typos", "baseline_stsb_test_spearman_drop_lookalikes",
                 "distill_stsb_test_spearman_noise_swaps", "robustness_gain_swaps"):
        assert name in names, name
    no_stage2 = method.Config.model_validate({"train": {"contrastive": {"steps": 0}}})
    assert not any(n.startswith("distill_") for n in no_stage2.metric_names())
    no_stage1 = method.Config.model_validate({"train": {"distill": {"steps": 0}}})
    assert not any(n.startswith("distill_") for n in no_stage1.metric_names())
    with pytest.raises(Exception, match="noise_kinds"):
        method.Config.model_validate({"evaluate": {"noise_kinds": ["blur"]}})
    with pytest.raises(Exception, match="nothing would train"):
        method.Config.model_validate({"train": {"distill": {"steps": 0}, "contrastive": {"steps": 0}}})


# ---- the student ------------------------------------------------------------------------------------------------


def test_frozen_blocks_take_no_gradient_and_keep_their_batchnorm_statistics(px):
    student = tiny_student(px, frozen=3)
    frozen = {id(p) for m in student.frozen_modules() for p in m.parameters()}
    assert frozen and all(not p.requires_grad for p in student.parameters() if id(p) in frozen)
    assert all(p.requires_grad for p in student.parameters() if id(p) not in frozen)
    student.train()
    assert not student.encoder.stem_bn.training and student.encoder.blocks[3].project_bn.training
    before = student.encoder.stem_bn.running_mean.clone()
    out = student(torch.randn(4, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (4, 8) and torch.equal(before, student.encoder.stem_bn.running_mean)
    assert student.encoder.stem.weight.grad is None and student.encoder.blocks[3].project.weight.grad is not None


def test_a_killed_stage_resumes_from_its_checkpoint_and_ends_where_it_would_have(px, loop, tmp_path):
    def run():
        student = tiny_student(px, frozen=16)  # only the head conv and the projection train: quick

        def batch_loss(indices):
            g = torch.Generator().manual_seed(sum(indices))
            return loop.distill_loss(student(torch.randn(len(indices), 3, 32, 32, generator=g)),
                                     torch.randn(len(indices), 8, generator=g))

        settings = loop.LoopSettings(steps=4, batch_size=2, learning_rate=1e-3, head_learning_rate=1e-2,
                                     warmup_ratio=0.25, checkpoint_every=2, seed=0, progress=False)
        return student, loop.train(student, batch_loss, 6, settings, tmp_path, "stage")

    straight, first = run()
    assert first["train_resumed_at"] == 0 and first["train_steps_run"] == 4
    import shutil

    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")  # killed after the checkpoint of step 2
    resumed, result = run()  # a new process: the weights and AdamW's moments come from checkpoint-2
    assert result["train_resumed_at"] == 2 and result["train_steps_run"] == 2
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_a_saved_student_is_served_as_a_pyfunc_that_embeds_sentences(px, tmp_path):
    import mlflow

    student = px.new_student(384, 3, seed=0)  # ImageNet weights: two sentences give two pictures' features
    renderer = px.default_renderer()
    folder = px.save_student(student, renderer, tmp_path / "student")
    assert (folder / renderer.font_path.name).is_file()
    loaded, loaded_renderer = px.load_student(folder)
    assert loaded_renderer.fingerprint == renderer.fingerprint
    sentences = ["A man is playing a guitar.", "A woman is slicing an onion."]
    direct = px.encode(loaded, loaded_renderer, sentences)

    project = ROOT / "projects" / "pixel_linguist"
    mlflow.pyfunc.save_model(str(tmp_path / "served"), python_model=str(project / "pyfunc_model.py"),
                             artifacts={"student": str(folder)}, code_paths=[str(project / "pixel_student.py")],
                             input_example=sentences)
    served = mlflow.pyfunc.load_model(str(tmp_path / "served")).predict(sentences)
    assert served.shape == (2, 384) and served.dtype == np.float32
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    assert np.allclose(served, direct, atol=1e-5) and not np.allclose(served[0], served[1])


def test_train_then_evaluate_on_rows_in_memory_and_a_rerun_reuses_the_finished_stages(method, tmp_path):
    from paperline.project.interface import ProjectData, RunContext

    words = ["man", "woman", "dog", "cat", "guitar", "onion", "beach", "car"]
    sts = [ScoredPair(f"A {a} sees a {b}.", f"A {b} sees a {a}.", float(i % 6)) for i, (a, b) in
           enumerate((a, b) for a in words for b in words if a != b)]
    nli = [NliPair(f"A {a} runs.", f"An animal {a} moves.", "entailment") for a in words] + \
          [NliPair(f"A {a} runs.", f"A {a} sleeps.", "contradiction") for a in words]
    data = ProjectData.from_rows({"stsb": {"train": sts[:30], "dev": sts[30:42], "test": sts[42:56]},
                                  "snli": {"dev": nli[:8], "test": nli[8:]}})
    cfg = method.Config.model_validate({
        "base_model": "sentence-transformers/all-MiniLM-L6-v2", "threads": 1,
        "train": {"distill": {"steps": 2, "batch_size": 4, "checkpoint_every": 1},
                  "contrastive": {"steps": 1, "batch_size": 4}},
        "evaluate": {"batch_size": 8}})
    ctx = RunContext(workdir=tmp_path, progress=False)
    model = method.train(cfg, data, ctx)
    assert model.flavor == "pyfunc" and model.path == model.output("contrastive") == model.output("student")
    assert model.metrics["distill_train_steps_run"] == 2 and model.metrics["contrastive_train_steps_run"] == 1
    assert model.metrics["distill_sentences"] == 8  # 2 steps x 4: only the sentences the steps reach
    held = {s for r in sts[30:56] for s in (r.sentence1, r.sentence2)}
    listing = model.output("teacher_sentences").read_text().splitlines()[1:]
    assert listing and not held & set(listing)

    result = method.evaluate(model, cfg, data, ctx)
    assert cfg.metric_names() <= set(result.metrics), cfg.metric_names() - set(result.metrics)
    assert result.artifacts["noise_example.png"].is_file() and "stsb_test" in result.predictions
    again = method.train(cfg, data, ctx)  # both stages are on disk: nothing trains
    assert "distill_train_steps_run" not in again.metrics and again.path == model.path
