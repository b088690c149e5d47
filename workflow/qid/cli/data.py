"""The data stage: the tokenizer and training ids, the eval sets, the calibration texts."""

from __future__ import annotations

import json
from pathlib import Path

from qid import grid
from qid.cli.args import Subparsers, _json

# The libraries each command loads (qid.cli.imports): the BPE trainer and its transformers
# wrapper; the sampled texts (datasets only for a Hub source).
CORPUS = ("qid.data", "tokenizers", "transformers:PreTrainedTokenizerFast")


def _texts(*specs: dict) -> list[str]:
    return ["qid.texts"] + ["datasets"] * any(s.get("source") == "hf" for s in specs)


def add_corpus(sub: Subparsers) -> None:
    s = sub.add_parser("corpus", help="train the BPE and write the training split's token ids")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--data", type=_json, required=True, help="the config's `data` block (JSON)")
    s.add_argument("--tokenizer", type=Path, default=Path(grid.TOKENIZER))
    s.add_argument("--train-ids", type=Path, default=Path(grid.TRAIN_IDS))
    s.set_defaults(func=cmd_corpus, needs=lambda a: CORPUS)


def cmd_corpus(args) -> None:
    from qid.data import build_corpus

    print(json.dumps(build_corpus(args.data, args.seed, args.tokenizer, args.train_ids), indent=2))


def add_evalset(sub: Subparsers) -> None:
    s = sub.add_parser("evalset", help="sample one eval set (seeded) and store it as parquet")
    s.add_argument("--name", required=True, help="the eval set's name (its key in `eval_sets`)")
    s.add_argument("--spec", type=_json, required=True, help="its block in `eval_sets` (JSON)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument(
        "--data", type=_json, help="the `data` block (JSON): source heldout needs its corpus keys"
    )
    s.add_argument("--out", type=Path, required=True, help="parquet of text_id, text")
    s.set_defaults(func=cmd_evalset, needs=lambda a: _texts(a.spec))


def cmd_evalset(args) -> None:
    from qid.texts import build_eval_set

    summary = build_eval_set(args.name, args.spec, args.seed, args.out, args.data)
    print(json.dumps(summary, indent=2))


def add_calibration(sub: Subparsers) -> None:
    s = sub.add_parser("calibration", help="sample the calibration texts (seeded)")
    s.add_argument("--spec", type=_json, required=True, help="`data.calibration` (JSON)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument(
        "--data", type=_json, help="the `data` block (JSON): source corpus needs its corpus keys"
    )
    s.add_argument("--out", type=Path, default=Path(grid.CALIBRATION))
    s.set_defaults(func=cmd_calibration, needs=lambda a: _texts(a.spec))


def cmd_calibration(args) -> None:
    from qid.texts import build_calibration

    print(json.dumps(build_calibration(args.spec, args.seed, args.out, args.data), indent=2))


def add_data(sub: Subparsers) -> None:
    s = sub.add_parser(
        "data", help="build all of corpus, eval sets and calibration in one process (by hand)"
    )
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--data", type=_json, required=True, help="the config's `data` block (JSON)")
    s.add_argument("--eval-sets", type=_json, required=True, help="the `eval_sets` block (JSON)")
    s.add_argument("--tokenizer", type=Path, default=Path(grid.TOKENIZER))
    s.add_argument("--train-ids", type=Path, default=Path(grid.TRAIN_IDS))
    s.add_argument("--calibration", type=Path, default=Path(grid.CALIBRATION))
    s.add_argument("--eval-dir", type=Path, default=Path(grid.EVAL_TEXTS).parent)
    s.set_defaults(func=cmd_data, needs=_needs_data)


def _needs_data(args) -> list[str]:
    specs = [*args.eval_sets.values(), args.data.get("calibration", {})]
    return [*(CORPUS if args.data.get("tokenizer") else ()), *_texts(*specs)]


def cmd_data(args) -> None:
    """Everything `corpus`, `evalset` and `calibration` build, in one process (by hand)."""
    from qid.data import build_corpus
    from qid.texts import build_calibration, build_eval_set

    summary = {}
    if args.data.get("tokenizer"):  # a study of released checkpoints trains no tokenizer
        summary["corpus"] = build_corpus(args.data, args.seed, args.tokenizer, args.train_ids)
    summary["eval_sets"] = {
        name: build_eval_set(name, spec, args.seed, args.eval_dir / f"{name}.parquet", args.data)
        for name, spec in args.eval_sets.items()
    }
    summary["calibration"] = build_calibration(
        args.data["calibration"], args.seed, args.calibration, args.data
    )
    print(json.dumps(summary, indent=2))


PARSERS = {
    "corpus": add_corpus,
    "evalset": add_evalset,
    "calibration": add_calibration,
    "data": add_data,
}
