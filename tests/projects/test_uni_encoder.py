"""The uni_encoder project on a tiny random BERT (MiniLM's tokenizer): the arrow mask and its invariant, the token
layout, the examples and candidate sets, the metrics, the resumable loop, train/evaluate, and the pyfunc.

The encoder is a 2-layer, 32-wide `BertConfig` with random weights, so every test runs in seconds; the arrow
invariant is exact arithmetic and needs no pretrained quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paperline.data.kinds.dialogues import Turn

ROOT = Path(__file__).resolve().parents[2]
TURNS = ["hi there, how are you doing today?", "fine thanks, and you?", "tired, long week at work"]
CANDIDATES = ["sorry to hear that", "I like turtles very much indeed, they are great", "no", "what happened?"]


@pytest.fixture(scope="module")
def project():
    from paperline.project.discovery import get_project

    return get_project(ROOT / "projects", "uni_encoder")


@pytest.fixture(scope="module")
def method(project):
    return project.method()


@pytest.fixture(scope="module")
def uni(method):
    return method.uni


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from paperline.ml.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tokenizer):
    """A saved tiny random BERT with MiniLM's tokenizer: a base_model folder for the method."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _scorer(uni, tiny, mode: str, **layout):
    from transformers import AutoModel

    torch.manual_seed(0)
    return uni.new_scorer(AutoModel.from_pretrained(str(tiny)), uni.Layout(mode=mode, **layout)).eval()


def test_card_and_every_config_validate(project):
    from paperline.project.contract import check_project

    assert check_project(project) == []
    cfg = project.load_config("default")
    assert {"test_r10_at_1", "test_r10_at_2", "test_mrr", "square_test_r10_at_1", "square_candidates_per_s",
            "diag_test_mrr", "arrow_candidates_per_s"} <= cfg.metric_names()


def test_config_refuses_a_run_without_the_arrow_arm_or_too_long_sequences(project):
    from paperline.core.config import ConfigError

    with pytest.raises(ConfigError, match="must include 'arrow'"):
        project.load_config("smoke", ["train.arms=[diag, square]"])
    with pytest.raises(ConfigError, match="<= 512"):
        project.load_config("smoke", ["examples.max_context_tokens=480", "examples.max_candidate_tokens=64"])


# ---- the layout and the mask -----------------------------------------------------------------------------------


def test_candidates_share_positions_that_continue_the_context(uni, tokenizer):
    ctx, cands = uni.tokenize_example(tokenizer, uni.Layout(max_context_tokens=12, max_candidate_tokens=5),
                                      TURNS, CANDIDATES)
    assert len(ctx) == 12 and ctx[0] == tokenizer.cls_token_id and ctx[-1] == tokenizer.sep_token_id
    # truncated from the left: the most recent turn survives whole, the oldest is cut
    assert tokenizer.decode(ctx[1:]).endswith("tired, long week at work [SEP]")
    assert all(c[0] == tokenizer.cls_token_id and c[-1] == tokenizer.sep_token_id and len(c) <= 5 for c in cands)
    batch = uni.arrow_batch([ctx], [cands], tokenizer.pad_token_id)
    positions, segments = batch["position_ids"][0].tolist(), batch["segments"][0].tolist()
    for k, cand in enumerate(cands):
        where = [i for i, s in enumerate(segments) if s == k + 1]
        assert [positions[i] for i in where] == list(range(12, 12 + len(cand)))
    assert batch["token_type_ids"][0].tolist()[:12] == [0] * 12


def test_arrow_mask_context_sees_context_and_each_candidate_sees_context_and_itself(uni):
    segments = torch.tensor([[0, 0, 1, 1, 2, 3, -1]])
    mask = uni.arrow_mask(segments, torch.float32)
    assert mask.shape == (1, 1, 7, 7)
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed[0] == [1, 1, 0, 0, 0, 0, 0]  # context: the context only
    assert allowed[2] == [1, 1, 1, 1, 0, 0, 0]  # candidate 1: context and itself
    assert allowed[4] == [1, 1, 0, 0, 1, 0, 0]  # candidate 2
    assert allowed[6] == [0] * 7  # padding sees nothing (its output is never pooled)
    assert torch.isfinite(mask).all()  # the dtype's minimum, not -inf: no NaN from an all-blocked row


def test_arrow_scores_equal_each_candidate_run_alone_after_its_context(uni, tiny, tokenizer):
    """The method's invariant: candidates in one sequence do not see each other, so each one's score is the one
    it gets alone after the context (same positions, same mask rows)."""
    scorer = _scorer(uni, tiny, "arrow")
    ctx, cands = uni.tokenize_example(tokenizer, scorer.layout, TURNS, CANDIDATES)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        together = scorer([ctx, ctx[-6:]], [cands, cands[::-1]], pad)  # padding from the shorter 2nd row too
        alone = torch.tensor([scorer([ctx], [[c]], pad)[0, 0].item() for c in cands])
        states = scorer.candidate_states(uni.arrow_batch([ctx], [cands], pad))
        states_alone = torch.cat([scorer.candidate_states(uni.arrow_batch([ctx], [[c]], pad))[0] for c in cands])
    torch.testing.assert_close(together[0], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[0], states_alone, atol=1e-5, rtol=1e-5)
    # the candidates' order does not matter either
    with torch.no_grad():
        reordered = scorer([ctx], [cands[::-1]], pad)[0]
    torch.testing.assert_close(reordered, together[0].flip(0), atol=1e-5, rtol=1e-5)

    # ... and the mask is what makes it so: full attention over the same sequence lets candidates meet
    batch = uni.arrow_batch([ctx], [cands], pad)
    with torch.no_grad():
        full = scorer.encoder(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                              position_ids=batch["position_ids"]).last_hidden_state
        masked = scorer.encoder(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                position_ids=batch["position_ids"],
                                attention_mask=uni.arrow_mask(batch["segments"], torch.float32)).last_hidden_state
    last = batch["segments"][0] == len(cands)
    assert (full[0, last] - masked[0, last]).abs().max() > 1e-3


def test_square_is_one_full_attention_pass_per_pair(uni, tiny, tokenizer):
    arrow, square = _scorer(uni, tiny, "arrow"), _scorer(uni, tiny, "square")
    square.head.load_state_dict(arrow.head.state_dict())
    ctx, cands = uni.tokenize_example(tokenizer, arrow.layout, TURNS, CANDIDATES)
    pad = tokenizer.pad_token_id
    batch = uni.pair_batch([ctx, ctx], [cands, cands], pad)
    assert batch["input_ids"].shape[0] == 2 * len(cands)
    with torch.no_grad():
        s = square([ctx], [cands], pad)
        a = arrow([ctx], [cands], pad)
    assert s.shape == a.shape == (1, len(cands))
    # same layout and head; the difference is that in a pair the context also attends to the candidate
    assert not torch.allclose(s, a, atol=1e-6)


def test_diag_scores_are_scaled_cosines_of_separate_encodings(uni, tiny, tokenizer):
    scorer = _scorer(uni, tiny, "diag", logit_scale=20.0)
    assert scorer.head is None
    ctx, cands = uni.tokenize_example(tokenizer, scorer.layout, TURNS, CANDIDATES)
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        logits = scorer([ctx], [cands], pad)[0]
        c = scorer.embed([ctx], pad)[0]
        expected = torch.stack([20 * torch.cosine_similarity(c, scorer.embed([x], pad)[0], dim=0) for x in cands])
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


# ---- examples and metrics ----------------------------------------------------------------------------------------


def _rows(conversations: int = 6, turns: int = 5) -> list[Turn]:
    return [Turn(f"c{c}", t, "AB"[t % 2], f"conversation {c} turn {t}") for c in range(conversations)
            for t in range(turns)]


def test_examples_negatives_come_from_other_conversations_and_are_seeded(method):
    ex = method.examples
    convs = ex.conversations(_rows())
    first = ex.sample_examples(convs, 10, 4, seed=3)
    assert first == ex.sample_examples(convs, 10, 4, seed=3) and first != ex.sample_examples(convs, 10, 4, seed=4)
    assert len({(e.conversation, e.turn) for e in first}) == 10
    for e in first:
        assert e.turn >= 1 and len(e.candidates) == 4 and e.candidates[e.label] == (e.conversation, e.turn)
        assert all(c != e.conversation for j, (c, _) in enumerate(e.candidates) if j != e.label)
    context, texts = ex.texts(convs, first[0], max_context_turns=2)
    assert context == convs[first[0].conversation][max(0, first[0].turn - 2): first[0].turn]
    assert texts[first[0].label] == convs[first[0].conversation][first[0].turn]


def test_candidate_sets_round_trip_through_their_file(method, tmp_path):
    ex = method.examples
    convs = ex.conversations(_rows())
    sets = {"dev": (convs, ex.sample_examples(convs, 4, 3, 1)), "test": (convs, ex.sample_examples(convs, 5, 3, 2))}
    sha = ex.write_candidate_sets(tmp_path / "c.tsv", sets)
    from paperline.data.derived import sha256_file

    assert sha == sha256_file(tmp_path / "c.tsv")
    back = ex.read_candidate_sets(tmp_path / "c.tsv")
    assert back == {"dev": sets["dev"][1], "test": sets["test"][1]}


def test_ranking_metrics_count_ties_against_the_positive(method):
    m = method.examples.ranking_metrics([[3, 1, 2], [1, 3, 2], [0, 0, 0]], [0, 2, 1])
    assert m["r10_at_1"] == pytest.approx(100 / 3) and m["r10_at_2"] == pytest.approx(200 / 3)
    assert m["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3)


# ---- the loop, train and evaluate, the pyfunc -------------------------------------------------------------------


def test_a_killed_loop_resumes_from_its_checkpoint_to_the_same_weights(method, uni, tiny, tokenizer, tmp_path):
    loop = method.loop
    convs = method.examples.conversations(_rows(8))
    data = method.examples.sample_examples(convs, 8, 4, 0)
    layout = uni.Layout(mode="arrow", max_context_tokens=24, max_candidate_tokens=8)

    def batch_of(indices):
        tokens = [uni.tokenize_example(tokenizer, layout, *method.examples.texts(convs, data[i], 5)) for i in indices]
        return [t[0] for t in tokens], [t[1] for t in tokens], [data[i].label for i in indices], tokenizer.pad_token_id

    settings = loop.LoopSettings(steps=4, batch_size=2, learning_rate=1e-3, head_learning_rate=1e-2,
                                 warmup_ratio=0.25, checkpoint_every=2, seed=0, progress=False)
    straight = _scorer(uni, tiny, "arrow", max_context_tokens=24, max_candidate_tokens=8)
    loop.train(straight, batch_of, len(data), settings, tmp_path / "straight", "arrow")

    first = _scorer(uni, tiny, "arrow", max_context_tokens=24, max_candidate_tokens=8)
    loop.train(first, batch_of, len(data), loop.LoopSettings(**{**settings.__dict__, "steps": 4}),
               tmp_path / "killed", "arrow")
    # a kill after step 2: drop the last checkpoint, then a fresh process resumes from checkpoint-2
    import shutil

    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "checkpoint-4")
    resumed = _scorer(uni, tiny, "arrow", max_context_tokens=24, max_candidate_tokens=8)
    result = loop.train(resumed, batch_of, len(data), settings, tmp_path / "killed", "arrow")
    assert result["train_resumed_at"] == 2 and result["train_steps_run"] == 2
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    start = _scorer(uni, tiny, "arrow", max_context_tokens=24, max_candidate_tokens=8)
    assert not torch.allclose(start.head.weight, resumed.head.weight)  # it did train


def _data():
    """`dialogues` rows for every split."""
    from paperline.project.interface import ProjectData

    return ProjectData.from_rows({"dialogues": {
        split: [Turn(f"{split}-{r.conversation}", r.turn, r.speaker, f"{split} {r.text}")
                for r in _rows(conversations=12 if split == "train" else 6)] for split in ("train", "dev", "test")}})


def test_train_and_evaluate_smoke_then_the_pyfunc_returns_the_methods_scores(project, method, uni, tiny, tmp_path):
    import mlflow

    from paperline.project.interface import RunContext

    cfg = project.load_config("smoke", [f"base_model={tiny}", "examples.candidates=4"])
    ctx = RunContext(workdir=tmp_path / "work", progress=False)
    model = method.train(cfg, _data(), ctx)
    assert model.flavor == "pyfunc" and model.path == model.output("arrow")
    assert {"diag", "square", "arrow", "candidate_sets"} <= set(model.outputs)
    result = method.evaluate(model, cfg, _data(), ctx)
    assert cfg.metric_names() <= set(result.metrics)
    assert result.metrics["test_r10_at_1"] == result.metrics["arrow_test_r10_at_1"]
    from paperline.data.derived import sha256_file

    assert result.tags["uni_encoder.candidate_sets_sha256"] == sha256_file(model.output("candidate_sets"))
    assert result.tables["arms"]["arm"] == ["diag", "diag", "square", "square", "arrow", "arrow",
                                            "baseline_diag", "baseline_diag"]

    # The served model: [context (one turn a line), candidates...] -> the scores the method computes
    scorer, tokenizer = uni.load(model.path)
    requests = [(TURNS, CANDIDATES), (TURNS[:1], CANDIDATES[:2])]
    direct = uni.score(scorer, tokenizer, requests)
    kwargs = model.serving.log_model_kwargs()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("ue", artifact_location=str(tmp_path / "artifacts")))
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", **kwargs)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        served = loaded.predict([["\n".join(turns), *cands] for turns, cands in requests])
    finally:
        mlflow.set_tracking_uri(None)
    assert [len(row) for row in served] == [4, 2]
    for got, want in zip(served, direct):
        assert got == pytest.approx(want, abs=1e-5)
