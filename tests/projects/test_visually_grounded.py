"""The visually_grounded project's parts: the recall rule for repeated captions, chance, the multi-positive
InfoNCE, the step plan of the arms, the two towers (the cached split of the image tower, the identity start of the
shared space, save and load), a killed arm that resumes to the same weights, the request rows the pyfunc serves,
and the config.

The text tower is a tiny random BERT with MiniLM's tokenizer and the image tower EfficientNet-Lite0 with random
weights on small pictures, so every test runs in seconds; the real flow (smoke config, gate, registry, `mlflow
models serve`) is tests/flows/test_visually_grounded_flow.py.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_sentence_transformer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(ROOT / "projects", "visually_grounded")


@pytest.fixture(scope="module")
def method(project):
    return project.method()


@pytest.fixture(scope="module")
def towers():
    from paperline_projects.visually_grounded import towers

    return towers


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("tiny"))


def tiny_encoder(towers, tiny_text, frozen_blocks: int = 11, seed: int = 0):
    from sentence_transformers import SentenceTransformer

    from paperline.ml.image_encoder import load_efficientnet_lite0

    torch.manual_seed(seed)
    text = SentenceTransformer(str(tiny_text), device="cpu")
    return towers.GroundedEncoder(text, load_efficientnet_lite0(pretrained=False), dim=32,
                                  frozen_blocks=frozen_blocks, image_size=64).eval()


def png_base64(color=(200, 30, 30), size=48) -> str:
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(picture).rectangle([8, 8, size - 8, size - 8], fill=color)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---- the recall rule and chance -------------------------------------------------------------------------------


def test_recall_counts_a_caption_by_its_text_both_ways(method):
    scoring = method.scoring
    # pictures 0 and 1 share caption "star"; picture 2 is "cat", picture 3 is "dog"
    texts, ids = scoring.distinct(["star", "star", "cat", "dog"])
    assert texts == ["star", "cat", "dog"] and ids.tolist() == [0, 0, 1, 2]
    images = np.eye(4, dtype=np.float32)
    captions = np.array([[0, 1, 0, 0],     # "star" nearest picture 1 (a star: a hit at 1)
                         [0, 0, 0.2, 0.9],  # "cat" nearest the dog, then the cat (a hit at 5, not at 1)
                         [1, 0, 0, 0]],     # "dog" nearest a star, the dog last but within 5
                        dtype=np.float32)
    values = scoring.recall(captions, images, ids)
    assert values["caption_to_image_recall_at_1"] == pytest.approx(100 / 3)
    assert values["caption_to_image_recall_at_5"] == pytest.approx(100.0)
    # picture -> its caption among 3 distinct captions: picture 0 -> "dog" first (sim 1) then "star"/"cat" (0):
    # "star" comes before "cat" (a stable tie), so picture 0 hits at 5, not at 1
    assert values["image_to_caption_recall_at_1"] == pytest.approx(100 * 2 / 4)  # pictures 1 and 3
    assert values["mean_recall"] == pytest.approx(np.mean([values[m] for m in scoring.RETRIEVAL_METRICS[:-1]]))


def test_chance_recall_matches_a_random_ranking(method):
    scoring = method.scoring
    _, ids = scoring.distinct(["a", "a", "a", "b", "c", "d", "e", "f", "g", "h"])
    chance = scoring.chance_recall(8, ids)
    rng = np.random.default_rng(0)
    draws = [scoring.recall(rng.normal(size=(8, 4)), rng.normal(size=(10, 4)), ids) for _ in range(3000)]
    for name in ("caption_to_image_recall_at_1", "caption_to_image_recall_at_5", "image_to_caption_recall_at_1"):
        assert np.mean([d[name] for d in draws]) == pytest.approx(chance[name], abs=1.5)
    assert chance["image_to_caption_recall_at_10"] == 100.0  # 8 captions: any 10 hold every one


# ---- objective and plan ---------------------------------------------------------------------------------------


def test_info_nce_is_clips_symmetric_loss_and_counts_repeated_captions_as_positives(method):
    loop = method.loop
    torch.manual_seed(0)
    texts = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * texts @ images.T
    clip = (torch.nn.functional.cross_entropy(logits, torch.arange(5)) +
            torch.nn.functional.cross_entropy(logits.T, torch.arange(5))) / 2
    assert loop.info_nce(texts, images, torch.arange(5), scale).item() == pytest.approx(clip.item(), rel=1e-6)
    # rows 0 and 1 share a caption: swapping their pictures changes nothing
    ids = torch.tensor([0, 0, 1, 2, 3])
    swapped = images[torch.tensor([1, 0, 2, 3, 4])]
    assert loop.info_nce(texts, swapped, ids, scale).item() == pytest.approx(
        loop.info_nce(texts, images, ids, scale).item(), rel=1e-6)
    # ... where one-hot targets would call the other copy a negative and push the two pictures apart
    assert loop.info_nce(texts, swapped, torch.arange(5), scale).item() != pytest.approx(
        loop.info_nce(texts, images, torch.arange(5), scale).item(), rel=1e-3)


def test_the_grounded_sts_plan_alternates_the_grounded_and_sts_only_batches(method):
    loop = method.loop

    def settings(caption_steps, sts_steps):
        return loop.LoopSettings(caption_steps, sts_steps, batch_size=4, sts_batch_size=3, learning_rate=1e-5,
                                 image_learning_rate=1e-4, head_learning_rate=1e-3, warmup_ratio=0.1,
                                 checkpoint_every=2, seed=7)

    both = loop.plan(settings(5, 5), n_captions=10, n_pairs=7)
    grounded = loop.plan(settings(5, 0), n_captions=10, n_pairs=7)
    sts_only = loop.plan(settings(0, 5), n_captions=10, n_pairs=7)
    assert [task for task, _ in both] == ["caption", "sts"] * 5
    assert [b for t, b in both if t == "caption"] == [b for _, b in grounded]
    assert [b for t, b in both if t == "sts"] == [b for _, b in sts_only]
    assert all(len(b) == 4 and len(set(b)) == 4 for _, b in grounded)  # whole batches, no repeat inside one
    small = loop.epoch_batches(3, 2, 8, 0)  # fewer rows than a batch: each batch is a whole epoch
    assert len(small) == 2 and all(sorted(b) == [0, 1, 2] for b in small)


# ---- the towers -------------------------------------------------------------------------------------------------


def test_the_cached_split_of_the_image_tower_is_the_whole_network(towers, tiny_text):
    encoder = tiny_encoder(towers, tiny_text)
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        whole = encoder.image.feature_map(pixels).mean(dim=(2, 3))
        split = encoder.image_suffix(encoder.image_prefix(pixels).half().float())  # the float16 cache of training
    assert torch.allclose(whole, split, atol=2e-2, rtol=1e-2)
    assert isinstance(encoder.image.classifier, torch.nn.Identity)
    encoder.train()
    assert not encoder.image.training and encoder.text.training  # BatchNorm keeps ImageNet's statistics


def test_the_shared_space_starts_as_the_text_towers_own(towers, tiny_text):
    encoder = tiny_encoder(towers, tiny_text)
    own, shared = encoder.encode_texts(["a red apple", "two cats on a sofa"])
    assert np.allclose(own, shared, atol=1e-6) and np.allclose(np.linalg.norm(shared, axis=1), 1.0, atol=1e-5)


def test_a_saved_encoder_loads_back_to_the_same_embeddings(towers, tiny_text, tmp_path):
    encoder = tiny_encoder(towers, tiny_text)
    with torch.no_grad():
        encoder.text_proj.weight.add_(0.1 * torch.randn_like(encoder.text_proj.weight))  # moved off the identity
    folder = towers.save(encoder, tmp_path / "model")
    again = towers.load(folder)
    rows = [("a red apple", None), (None, png_base64())]
    assert np.allclose(towers.encode_requests(encoder, rows), towers.encode_requests(again, rows), atol=1e-5)


def test_request_rows_take_exactly_one_caption_or_one_base64_png(towers, tiny_text):
    encoder = tiny_encoder(towers, tiny_text)
    out = towers.encode_requests(encoder, [("a red apple", None), (None, png_base64()),
                                           (None, "data:image/png;base64," + png_base64((0, 0, 200)))])
    assert out.shape == (3, 32) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for rows, problem in [([("a cat", png_base64())], "got both"), ([(None, "  ")], "got neither"),
                          ([(None, "not base64 at all!")], "not base64"),
                          ([(None, base64.b64encode(b"no picture here").decode())], "does not decode")]:
        with pytest.raises(ValueError, match=problem):
            towers.encode_requests(encoder, rows)


def test_a_killed_arm_resumes_from_its_checkpoint_to_the_same_weights(method, towers, tiny_text, tmp_path):
    loop = method.loop
    captions = ["a star", "a cat", "a dog", "a star", "a tree", "a car"]
    ids = torch.tensor([0, 1, 2, 0, 3, 4])
    maps = torch.randn(6, 320, 2, 2)  # after the last block: the suffix is the head alone (frozen_blocks=16)

    def run(out: Path, kill_after: int | None = None):
        encoder = tiny_encoder(towers, tiny_text, frozen_blocks=16)

        def caption_step(batch):
            if kill_after is not None and caption_step.calls == kill_after:
                raise KeyboardInterrupt
            caption_step.calls += 1
            index = torch.tensor(batch)
            texts = encoder.project_texts(encoder.text_features([captions[i] for i in batch], 16))
            return loop.info_nce(texts, encoder.project_images(encoder.image_suffix(maps[index])), ids[index],
                                 encoder.scale())

        caption_step.calls = 0
        settings = loop.LoopSettings(4, 0, batch_size=3, sts_batch_size=2, learning_rate=1e-3,
                                     image_learning_rate=1e-3, head_learning_rate=1e-2, warmup_ratio=0.25,
                                     checkpoint_every=2, seed=0, progress=False)
        result = loop.train(encoder, settings, True, caption_step, None, len(captions), 0, out, "grounded")
        return encoder, result

    whole, _ = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_after=3)
    resumed, result = run(tmp_path / "killed")
    assert result["train_resumed_at"] == 2 and result["train_steps_run"] == 2
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


# ---- config -----------------------------------------------------------------------------------------------------


def test_card_and_every_config_validate_and_name_the_primary_metric(project, method):
    assert project.problems == []
    card = project.card
    for name in project.configs:
        cfg = project.load_config(name)
        names = cfg.metric_names()
        assert card.primary_metric.name in names and "text_only_stsb_test_spearman" in names
        assert {"grounded_sts_test_mean_recall", "sts_only_sts12_16_avg_spearman"} <= names
        assert "sts_only_test_mean_recall" not in names  # no picture side, no retrieval
    with pytest.raises(Exception, match="train.serve 'grounded_sts' must be one of"):
        project.load_config("smoke", ["train.arms=[grounded]"])


def test_the_leaderboards_image_text_task_ranks_by_the_cards_primary_metric(project):
    from paperline.ops.registry.champions import TASKS
    from paperline.ops.registry.policy import load_policy

    task = TASKS["image-text-retrieval"]
    assert task.test == project.card.primary_metric.name and project.card.primary_metric.greater_is_better
    names = project.load_config("default").metric_names()
    assert {task.test, *task.extra} <= names
    policy = load_policy(ROOT / "registry" / "policy.yaml", "visually_grounded")
    assert policy.min_primary_metric == 10.0 and policy.unscored_champion == "recorded"
