"""`paperline encode`, `search`, `monitor` and `data watch`: what follows the champion (docs/production.md)."""

from __future__ import annotations

from pathlib import Path

from paperline.cli.common import connect_prefect, load_flow, print_table, workspace_settings
from paperline.core.errors import BAD_DATA


def cmd_encode(args) -> int:
    """Embed a corpus with a model version (resumable), then build, check and serve its search index."""
    settings = workspace_settings()
    connect_prefect(settings)
    outcome = load_flow("embed")(model=args.model, dataset=args.dataset, text=args.text, backend=args.backend,
                                 limit=args.limit, build_index=not args.no_index, min_recall=args.min_recall)
    print("\n".join(outcome.lines))
    if outcome.index:
        print(f"search it: paperline search {outcome.index}@serving \"a large animal with a trunk\"")
    return 0 if outcome.index is None or outcome.serving else 1


def cmd_search(args) -> int:
    from paperline.ops.production.index import search
    from paperline.ops.tracking.client import connect

    client = connect(workspace_settings())
    found = search(client, args.index, [args.query], k=args.k, query_model=args.model)
    print_table(["rank", "score", "label", "text"],
                [(r.rank, f"{r.score:.3f}", r.label, _short(r.text)) for r in found.itertuples()])
    return 0


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_monitor(args) -> int:
    settings = workspace_settings()
    connect_prefect(settings)
    outcome = load_flow("monitor")(model=args.model, reference=args.reference, current=args.current,
                                   max_rows=args.max_rows)
    print("\n".join(outcome.lines))
    return 0


def cmd_data_watch(args) -> int:
    settings = workspace_settings()
    connect_prefect(settings)
    result = load_flow("data_watch")()
    print("\n".join(result.lines()))
    return BAD_DATA if result.failed else 0


def add_commands(sub) -> None:
    from paperline.ops.production.defaults import BACKENDS, DEFAULT_BACKEND, DEFAULT_MAX_ROWS, MIN_RECALL

    encode = sub.add_parser("encode", help="embed a versioned corpus with a model version (chunked, resumable), "
                            "then serve a search index over it behind @serving once it passes a recall check")
    encode.add_argument("model", help="<model>@<alias> or <model>/<version>, e.g. sbert_sts@champion")
    encode.add_argument("--dataset", required=True, metavar="NAME[:SPLIT]",
                        help="a dataset in data/, all splits or one (definitions, definitions:test)")
    encode.add_argument("--text", metavar="COLUMN", help="the column to embed (default: the kind's corpus column)")
    encode.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT_BACKEND,
                        help=f"how to encode (default here: {DEFAULT_BACKEND}; openvino where installed, else onnx: "
                             "both give PyTorch's embeddings to cosine >= 0.999)")
    encode.add_argument("--limit", type=int, metavar="N", help="only the first N rows (a quick try)")
    encode.add_argument("--no-index", action="store_true", help="encode only; build no search index")
    encode.add_argument("--min-recall", type=float, default=MIN_RECALL, metavar="R",
                        help=f"recall@10 against exact search the index must reach to serve (default {MIN_RECALL})")
    encode.set_defaults(func=cmd_encode)

    search = sub.add_parser("search", help="nearest rows of a served search index: `paperline search "
                            "sbert_sts-definitions@serving \"a large animal with a trunk\"`")
    search.add_argument("index", help="<index>@<alias> or <index>/<version>")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=10, help="answers (default 10)")
    search.add_argument("--model", metavar="MODEL@ALIAS",
                        help="refuse unless this names the model version the index's vectors are of")
    search.set_defaults(func=cmd_search)

    monitor = sub.add_parser("monitor", help="embedding drift of the texts a model meets against a reference; "
                             "logs a report and the metric's history to MLflow, emits a drift event")
    monitor.add_argument("model", help="<model>@<alias>, e.g. sbert_sts@champion")
    monitor.add_argument("--reference", required=True, metavar="NAME[:SPLIT]", help="what the model was made for")
    monitor.add_argument("--current", required=True, metavar="NAME[:SPLIT]|FOLDER",
                         help="what it meets: a dataset, or a folder of .txt files (one text per line)")
    monitor.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, metavar="N",
                         help=f"texts sampled from each side (default {DEFAULT_MAX_ROWS}; the cost is bounded by it)")
    monitor.set_defaults(func=cmd_monitor)
