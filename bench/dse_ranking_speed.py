"""Ranking speed of DSE: 1 query against 10,000 candidates, the cross-encoder teacher vs the distilled student.

The point of DSE (Barkan et al., AAAI 2020, arXiv 1908.05161) is that the student embeds each sentence on its
own, so candidate embeddings are computed once, offline; ranking a query then costs one encode and a pass of the
small pair head over the cached embeddings, while the teacher must run its transformer on every (query,
candidate) pair. Goal: the student >= 100x faster than the teacher. Both score the same query against the same
candidates (distinct STS-B sentences), in the same process, alternating rounds; each side's fastest round is
the figure (the median beside it), so load from other processes hits both alike. The student's one-off cost of
embedding the candidates is printed too, and how many of the teacher's top 10 the student's top 10 holds.

The models are the registered ones: `cross_encoder_sts@champion` and `distilled_sentence_embedding@champion`
from the workspace's MLflow (run both projects first). `--untrained` builds the same architectures from
all-MiniLM-L6-v2 instead (a new head each): the timings are the same, the top-10 overlap is meaningless.
The student's encoder runs on ONNX Runtime by default (`--backend onnx`, paperline.ml.fast_encode; the line
above the table gives its min cosine to the PyTorch student); `--backend torch` is the PyTorch student.

Run (repo root):
    .venv/bin/python bench/dse_ranking_speed.py                  # registered champions, torch's default threads
    .venv/bin/python bench/dse_ranking_speed.py --untrained --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "projects" / "distilled_sentence_embedding"))


def _sentences(data: Path) -> list[str]:
    from paperline.data.datasets import DatasetRef, read_split

    ref = DatasetRef("stsb", "scored_pairs", data, "")
    return list(dict.fromkeys(s for split in ("train", "dev", "test") for r in read_split(ref, split)
                              for s in (r.sentence1, r.sentence2)))


def _registered(teacher_uri: str, student_uri: str, folder: Path):
    import mlflow

    from paperline.ml import cross_encoder
    from paperline.core.settings import Settings
    from paperline.ops.tracking.client import connect

    import dse

    connect(Settings.from_env(ROOT))
    try:
        teacher_dir = mlflow.artifacts.download_artifacts(teacher_uri, dst_path=str(folder / "teacher"))
        student_dir = mlflow.artifacts.download_artifacts(student_uri, dst_path=str(folder / "student"))
    except Exception as error:  # MLflow's own error types: a missing model or alias
        sys.exit(f"dse_ranking_speed: cannot load the registered models ({str(error).splitlines()[0]}); run "
                 "`paperline run distilled_sentence_embedding` first, or pass --untrained")
    student_folder = Path(student_dir) / "artifacts" / "student"
    return cross_encoder.load_logged(Path(teacher_dir)), *dse.load_student(student_folder), student_folder / dse.ENCODER


def _untrained():
    from paperline.ml import cross_encoder
    from paperline.ml.models import load_sentence_transformer, resolve_model_path

    import dse

    encoder = load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2")
    head = dse.PairHead(encoder.get_embedding_dimension(), 512).eval()
    return (cross_encoder.load_cross_encoder("sentence-transformers/all-MiniLM-L6-v2"), encoder, head,
            resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))


class OnnxStudent:
    """The student's sentence encoder on ONNX Runtime (paperline.ml.fast_encode), with the `encode` that
    dse.embed calls; the pair head stays in PyTorch."""

    def __init__(self, folder: Path, variant: str):
        from paperline.ml.fast_encode import load_encoder

        self.onnx = load_encoder(folder, variant)

    def encode(self, sentences, batch_size=64, convert_to_tensor=True, show_progress_bar=False):
        import torch

        return torch.from_numpy(self.onnx.encode(sentences, batch_size=batch_size))


def main() -> None:
    import torch

    from paperline.ml import cross_encoder

    import dse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "stsb"))
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--teacher", default="models:/cross_encoder_sts@champion")
    p.add_argument("--student", default="models:/distilled_sentence_embedding@champion")
    p.add_argument("--untrained", action="store_true", help="same architectures from MiniLM, no registry needed")
    p.add_argument("--backend", choices=["torch", "onnx", "onnx-int8"], default="onnx",
                   help="the student's encoder: PyTorch, or ONNX Runtime fp32 / int8 (paperline.ml.fast_encode)")
    args = p.parse_args()

    sentences = _sentences(Path(args.data))
    if len(sentences) < args.candidates + 1:
        sys.exit(f"dse_ranking_speed: only {len(sentences)} distinct sentences under {args.data}; "
                 "run `paperline data pull` or ask for fewer --candidates")
    query, candidates = sentences[0], sentences[1 : args.candidates + 1]
    with tempfile.TemporaryDirectory() as tmp:
        teacher, encoder, head, encoder_dir = (_untrained() if args.untrained else
                                               _registered(args.teacher, args.student, Path(tmp)))
        agreement = ""
        if args.backend != "torch":  # checked against the PyTorch student on the first 64 candidates
            fast = OnnxStudent(Path(encoder_dir), "int8" if args.backend == "onnx-int8" else "optimized")
            cosine = torch.nn.functional.cosine_similarity(dse.embed(fast, candidates[:64]),
                                                           dse.embed(encoder, candidates[:64]).cpu()).min()
            encoder, agreement = fast, f", min cosine to the PyTorch student {float(cosine):.4f}"

    began = time.perf_counter()
    cached = dse.embed(encoder, candidates, args.batch_size)  # offline, once: the student's index
    precompute = time.perf_counter() - began
    teacher_times, student_times = [], []
    for _ in range(args.rounds):
        began = time.perf_counter()
        teacher_scores = cross_encoder.predict(teacher, [(query, c) for c in candidates], args.batch_size)
        teacher_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        student_scores = dse.rank(encoder, head, query, cached)
        student_times.append(time.perf_counter() - began)

    top_teacher = set(torch.from_numpy(teacher_scores).topk(10).indices.tolist())
    top_student = set(student_scores.topk(10).indices.tolist())
    teacher_s, student_s = min(teacher_times), min(student_times)
    print(f"1 query x {len(candidates)} candidates, {args.rounds} rounds, torch threads {torch.get_num_threads()}"
          f"{', untrained models' if args.untrained else ''}; student encoder on {args.backend}{agreement}")
    print(f"{'side':<40} {'fastest s':>10} {'median s':>10}")
    print(f"{'teacher (cross-encoder, every pair)':<40} {teacher_s:>10.3f} {statistics.median(teacher_times):>10.3f}")
    print(f"{'student (1 encode + pair head)':<40} {student_s:>10.4f} {statistics.median(student_times):>10.4f}")
    print(f"{'student, embedding the candidates once':<40} {precompute:>10.2f}")
    print(f"speed-up (teacher / student, fastest rounds): {teacher_s / student_s:.0f}x  (goal >= 100x)")
    print(f"teacher's top 10 found in the student's top 10: {len(top_teacher & top_student)}")


if __name__ == "__main__":
    main()
