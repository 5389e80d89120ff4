"""multicsr's pieces on tiny inputs: generation with a fake LM (append, resume after a kill, progress), the
`nli_generated` kind through the real reader and GX gate, curation by thresholds, the guide's false-negative mask
and the guided loss, and the human triplets. No pretrained model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from paperline.data.datasets import read_frame
from paperline.data.kinds import get_kind
from paperline.data.kinds.nli_generated import GeneratedTriplet
from paperline.data.kinds.nli_pairs import NliPair
from paperline.data.quality import gate_files, gate_splits
from paperline_projects.multicsr import generation as gen
from paperline_projects.multicsr import guided_loss as losses
from paperline_projects.multicsr import method
from paperline_projects.multicsr import triplets as multicsr_triplets

PROJECT = Path(__file__).resolve().parents[2] / "projects" / "multicsr"

PREMISES = ["A dog runs in a park .", "Two kids swim .", "A man plays a guitar .", "A woman cooks ."]


class FakeLM:
    """Writes '<premise> (same)' / '<premise> (not)', rates the first 4.0 and the second 1.0; counts prompts."""

    def __init__(self, fail_after: int | None = None):
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def write(self, prompts, max_new_tokens):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt  # a kill in the middle of generation
        self.prompts += prompts
        return [("Sentence: '" + p.split("Sentence: ")[-1] + (" (same)'" if "Paraphrase" in p else " (not)'"))
                for p in prompts]

    def rate(self, pairs):
        return [4.0 if b.endswith("(same)") else 1.0 for _, b in pairs]


def test_generation_writes_a_gated_row_per_premise_and_cleans_answers(tmp_path):
    path = tmp_path / "g.tsv"
    lm = FakeLM()
    report = gen.generate_triplets(PREMISES, path, lm.write, lm.rate, batch_size=3, progress=False)
    assert report.rows == report.generated == 4
    rows = get_kind("nli_generated").rows(read_frame(path, "nli_generated"))
    assert rows[0] == GeneratedTriplet(PREMISES[0], PREMISES[0] + " (same)", PREMISES[0] + " (not)", 4.0, 1.0)
    assert gate_splits("g", "nli_generated", {"train": read_frame(path, "nli_generated")}).passed


def test_a_killed_generation_resumes_without_redoing_finished_rows(tmp_path):
    path = tmp_path / "g.tsv"
    killed = FakeLM(fail_after=4)  # two batches of 2 premises = 4 + 4 prompts; the second batch is killed
    with pytest.raises(KeyboardInterrupt):
        gen.generate_triplets(PREMISES, path, killed.write, killed.rate, batch_size=2, progress=False)
    with path.open("a") as f:
        f.write("A half-written\trow")  # what a kill in the middle of a write leaves: no newline
    assert gen.done_premises(path) == set(PREMISES[:2])
    again = FakeLM()
    report = gen.generate_triplets(PREMISES, path, again.write, again.rate, batch_size=2, progress=False)
    assert report.generated == 2 and report.rows == 4
    assert len(again.prompts) == 4 and all("Two kids" not in p and "A dog" not in p for p in again.prompts)
    frame = read_frame(path, "nli_generated")
    assert list(frame.premise) == PREMISES and gate_splits("g", "nli_generated", {"train": frame}).passed


def test_generation_shows_progress_from_where_it_resumed(tmp_path, monkeypatch):
    seen = []

    def bar(total, desc, unit="it", initial=0, enabled=True, leave=True):
        seen.append((total, initial, desc))
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, disable=True)

    monkeypatch.setattr("paperline.ml.progress.bar", bar)
    lm = FakeLM()
    gen.generate_triplets(PREMISES[:2], tmp_path / "g.tsv", lm.write, lm.rate, progress=False)
    gen.generate_triplets(PREMISES, tmp_path / "g.tsv", lm.write, lm.rate, progress=False)
    assert seen == [(2, 0, "generating triplets"), (4, 2, "generating triplets")]


def test_the_gate_refuses_scores_out_of_range_and_repeated_premises(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("premise\tentailment\tcontradiction\tentailment_score\tcontradiction_score\n"
                    "a dog runs\ta dog is running\ta cat sleeps\t7\t1\n"
                    "a dog runs\ta dog is running\ta cat sleeps\t4\thigh\n")
    result = gate_splits("g", "nli_generated", {"train": read_frame(path, "nli_generated")})
    failed = {(f.expectation, f.column) for f in result.failures}
    assert ("expect_column_values_to_be_between", "entailment_score") in failed
    assert ("expect_column_values_to_not_be_null", "contradiction_score") in failed
    assert any(f.expectation == "expect_column_proportion_of_unique_values_to_be_between" for f in result.failures)
    outcome = gate_files([("multicsr_generated", "nli_generated", path, "train")])  # how the flow gates it
    assert not outcome.passed and outcome.results[0].failures == result.failures
    path.write_bytes(path.read_bytes().replace(b"a cat sleeps\t4", b"a caf\xe9 sleeps\t4"))
    (unreadable,) = gate_files([("multicsr_generated", "nli_generated", path, "train")]).results[0].failures
    assert f"{path} is not UTF-8 text" in unreadable.detail and "line 3" in unreadable.detail


def test_curation_keeps_swaps_and_drops_by_the_reference_thresholds():
    rows = [GeneratedTriplet("p1", "e", "c", 4.0, 1.0),   # kept
            GeneratedTriplet("p2", "e", "c", 1.0, 4.0),   # swapped: the "contradiction" is the similar one
            GeneratedTriplet("p3", "e", "c", 3.0, 3.0),   # equal ratings: no gap
            GeneratedTriplet("p4", "e", "c", 2.0, 1.0),   # entailment below 3
            GeneratedTriplet("p5", "e", "c", -1.0, 1.0)]  # no rating
    kept = gen.curate(rows)
    assert kept == [gen.Triplet("p1", "e", "c"), gen.Triplet("p2", "c", "e")]
    assert len(gen.curate(rows, require_gap=False)) == 3 and len(gen.uncurated(rows)) == 5


def test_clean_sentence_takes_the_first_line_without_labels_or_quotes():
    assert gen.clean_sentence("\n New sentence: 'A cat sleeps.'\nBecause...") == "A cat sleeps."


def test_guide_masks_candidates_above_phi_but_never_the_own_positive():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # candidates: positive 0, positive 1, negative 0, negative 1
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.5, 0.5]])
    mask = losses.guided_mask(anchor, candidates, 0.95)
    assert mask.tolist() == [[False, True, False, False], [False, False, True, False]]


class TinyEncoder(torch.nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, features):
        return {"sentence_embedding": self.table[features["ids"]]}


def test_guided_loss_drops_masked_false_negatives_and_equals_mnrl_without_a_guide():
    table = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.02], [0.0, 1.0]])
    features = [{"ids": torch.tensor([0, 2])}, {"ids": torch.tensor([1, 2])}, {"ids": torch.tensor([3, 3])}]
    model = TinyEncoder(table)
    plain = losses.GuidedMultipleNegativesLoss(model)(features)
    scores = torch.nn.functional.normalize(table, dim=-1)
    s = 20 * scores[[0, 2]] @ scores[[1, 2, 3, 3]].T
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(s, torch.arange(2)).item(), rel=1e-5)
    guided_loss = losses.GuidedMultipleNegativesLoss(model, guide=TinyEncoder(table), phi=0.95)
    guided = guided_loss(features)
    assert guided_loss.masked == 2 and guided.item() < plain.item()  # row 0's positive 1 and row 1's positive 0
    assert not list(guided_loss.parameters()) or all(p is model.table for p in guided_loss.parameters())


def test_human_triplets_pair_each_premise_with_its_snli_entailment_and_contradiction():
    rows = [NliPair("p1", "e1", "entailment"), NliPair("p1", "c1", "contradiction"), NliPair("p1", "n1", "neutral"),
            NliPair("p2", "e2", "entailment"), NliPair("p3 ", "c3", "contradiction"), NliPair("p3", "e3", "entailment")]
    triplets = multicsr_triplets.human_triplets(rows, premises=5, seed=0)
    assert sorted(triplets, key=lambda t: t.anchor) == [gen.Triplet("p1", "e1", "c1"), gen.Triplet("p3", "e3", "c3")]
    assert len(multicsr_triplets.human_triplets(rows, premises=1, seed=0)) == 1


def test_every_arm_trains_the_same_number_of_rows():
    small = [gen.Triplet("a", "b", "c"), gen.Triplet("d", "e", "f")]
    dataset = multicsr_triplets.triplet_dataset(small, 5, seed=0)
    assert len(dataset) == 5 and set(dataset.column_names) == {"anchor", "positive", "negative"}
    with pytest.raises(multicsr_triplets.GeneratedDataError):
        multicsr_triplets.triplet_dataset([], 5, seed=0)


def test_the_generation_folder_depends_on_generation_settings_not_on_training_ones(tmp_path):
    import yaml

    raw = yaml.safe_load((PROJECT / "configs" / "smoke.yaml").read_text())
    cfg = method.Config.model_validate(raw)
    root = tmp_path / "runs" / "multicsr-generated"  # the project's generation folder, shared by its runs
    folder = multicsr_triplets.generation_dir(root, cfg, PREMISES)
    assert folder.parent == root
    retrained = method.Config.model_validate({**raw, "train": {**raw["train"], "learning_rate": 1e-4}})
    assert multicsr_triplets.generation_dir(root, retrained, PREMISES) == folder
    more = method.Config.model_validate({**raw, "generate": {**raw["generate"], "temperature": 0.0}})
    assert multicsr_triplets.generation_dir(root, more, PREMISES) != folder
    assert multicsr_triplets.generation_dir(root, cfg, PREMISES[:2]) != folder


def test_a_minimum_margin_drops_rows_whose_ratings_barely_differ():
    rows = [GeneratedTriplet("p1", "e", "c", 2.9, 2.4), GeneratedTriplet("p2", "e", "c", 2.5, 2.9),
            GeneratedTriplet("p3", "e", "c", 2.7, 2.6)]
    kept = gen.curate(rows, positive_min=0.0, negative_max=5.0, min_margin=0.2)
    assert kept == [gen.Triplet("p1", "e", "c"), gen.Triplet("p2", "c", "e")]


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_lm():
    """A tiny random Llama with a byte-level BPE tokenizer and a chat template, as SmolLM2 is shaped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(PREMISES * 8, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<|endoftext|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_the_lm_writer_is_seeded_and_the_rater_gives_a_rating_in_range_for_every_pair(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    write, rate = gen.chat_writer(model, tokenizer, seed=0), gen.chat_rater(model, tokenizer)
    prompts = [gen.generation_prompt(p, r) for p in PREMISES[:2] for r in ("entailment", "contradiction")]
    first = write(prompts, 5)
    assert len(first) == 4 and write(prompts, 5) == first  # the same batch writes the same sentences
    ratings = rate([(PREMISES[0], PREMISES[0]), (PREMISES[0], PREMISES[1])])
    assert len(ratings) == 2 and all(0.0 <= r <= 5.0 for r in ratings) and ratings[0] != ratings[1]
    path = tmp_path / "g.tsv"
    report = gen.generate_triplets(PREMISES, path, write, rate, batch_size=2, max_new_tokens=5, progress=False)
    assert report.rows == 4 and gate_splits("g", "nli_generated", {"train": read_frame(path, "nli_generated")}).passed


KILLED_CHILD = """
import sys, time
from pathlib import Path
from paperline.project.discovery import register_projects
register_projects(Path(sys.argv[1]))
from paperline_projects.multicsr import generation as gen
premises = [f"premise number {i} ." for i in range(40)]

def write(prompts, max_new_tokens):
    time.sleep(0.2)  # slow enough that the parent kills it mid-way
    return ["a sentence" for _ in prompts]

gen.generate_triplets(premises, Path(sys.argv[2]), write, lambda pairs: [2.5] * len(pairs), batch_size=2,
                      progress=False)
"""


def test_a_sigkilled_generation_keeps_its_flushed_rows_and_resumes_after_them(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "g.tsv"
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(PROJECT.parent), str(path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not path.is_file() or path.read_text().count("\n") < 5):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = gen.done_premises(path)
    assert 4 <= len(kept) < 40  # whole batches, flushed before the kill
    lm = FakeLM()
    premises = [f"premise number {i} ." for i in range(40)]
    report = gen.generate_triplets(premises, path, lm.write, lm.rate, batch_size=8, progress=False)
    assert report.generated == 40 - len(kept) and report.rows == 40
    frame = read_frame(path, "nli_generated")
    assert sorted(frame.premise) == sorted(premises)  # every premise once: nothing redone, nothing lost
