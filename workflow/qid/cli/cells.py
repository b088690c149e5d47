"""The cell stage: quantize a checkpoint and evaluate it, one cell at a time (quantize,
evaluate) or all of a checkpoint's cells in one process (cells)."""

from __future__ import annotations

import json
from pathlib import Path

from qid import QidError, grid
from qid.cli import imports
from qid.cli.args import Subparsers, _cells, _json, _steps, evaluation_options, set_threads


def _needs(methods) -> list[str]:
    """The libraries a cell command loads (qid.cli.imports): the evaluator and the model
    classes, then each method's backend and library (a 16-bit evaluation: none)."""
    return [*imports.methods(m for m in methods if m), "qid.cells", "qid.data", *imports.MODEL]


def _evaluate(args, outs: list[Path], method=None, bits=None, quantized=None) -> None:
    from qid.cells import EVALUATION_KEYS
    from qid.evaluate import kl_reference, print_records, run

    if len(args.texts) != len(outs):
        raise QidError(f"qid {args.command}: give one output JSON per --texts")
    evaluation = {k: getattr(args, k) for k in EVALUATION_KEYS}
    references = None
    if quantized is not None and not args.no_kl:  # the 16-bit model's top-k, for the KL
        references = kl_reference(args.checkpoint, args.texts, **evaluation)
    print_records(
        run(
            args.checkpoint,
            args.texts,
            outs,
            method=method,
            bits=bits,
            quantized=quantized,
            kl_reference=references,
            **evaluation,
        )
    )


def _no_kl(s) -> None:
    s.add_argument(
        "--no-kl",
        action="store_true",
        help="skip the KL from the 16-bit model (saves its evaluation; qid.divergence)",
    )


def add_quantize(sub: Subparsers) -> None:
    s = sub.add_parser(
        "quantize",
        parents=[evaluation_options()],
        help="quantize one checkpoint with one method and bit width "
        "(and evaluate the result with --texts/--eval-out)",
    )
    s.add_argument("--checkpoint", type=Path, required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--bits", type=int, required=True)
    s.add_argument("--out", type=Path, required=True, help="directory of the quantized model")
    s.add_argument("--record", type=Path, required=True, help="JSON record of the cell")
    s.add_argument("--calibration", type=Path, help="parquet of calibration texts")
    s.add_argument("--options", type=_json, default={}, help="the method's options (JSON)")
    s.add_argument(
        "--eval-out",
        type=Path,
        action="append",
        default=[],
        help="evaluation JSON, one per --texts",
    )
    s.add_argument("--threads", type=int)
    _no_kl(s)
    s.set_defaults(func=cmd_quantize, needs=lambda a: _needs([a.method]))


def cmd_quantize(args) -> None:
    from qid.cells import calibration_texts
    from qid.checkpoints import open_checkpoint
    from qid.data import check_texts
    from qid.quantize import quantize_cell

    # Every input is checked before a model loads: eval texts found wrong only after minutes of
    # quantizing would waste them.
    open_checkpoint(args.checkpoint)
    for path in args.texts:
        check_texts(path, "--texts")
    set_threads(args.threads)
    calibration = calibration_texts(args.calibration)
    info = quantize_cell(
        args.checkpoint, args.out, args.record, args.method, args.bits, args.options, calibration
    )
    print(json.dumps(info, indent=2))
    if args.texts:  # evaluate the saved checkpoint, reloaded from disk, in the same process
        _evaluate(args, args.eval_out, args.method, args.bits, args.out)


def add_cells(sub: Subparsers) -> None:
    s = sub.add_parser(
        "cells",
        parents=[evaluation_options()],
        help="evaluate one checkpoint's 16-bit model, then quantize and evaluate each of its "
        "cells, in one process (outputs at the grid's paths under results/)",
    )
    s.add_argument("--suite", required=True)
    s.add_argument("--size", required=True)
    s.add_argument(
        "--step",
        type=_steps,
        required=True,
        help="a checkpoint's step, or several (40,63,98): each in turn, in this one process",
    )
    s.add_argument("--checkpoint", type=Path, help="default: the grid's path (one --step only)")
    s.add_argument("--cells", type=_cells, required=True, help="e.g. rtn:2,rtn:3,gptq:2")
    s.add_argument(
        "--options", type=_json, required=True, help="each method's options (JSON by method)"
    )
    s.add_argument("--calibration", type=Path, help="parquet of calibration texts")
    s.add_argument(
        "--drop-quantized",
        action="store_true",
        help="delete each cell's quantized model once evaluated (the workflow's default)",
    )
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_cells, needs=lambda a: _needs(m for m, _ in a.cells))


def cmd_cells(args) -> None:
    from qid.cells import EVALUATION_KEYS, Job, check_job, run_cells

    if args.checkpoint and len(args.step) > 1:
        raise QidError("qid cells: --checkpoint names one checkpoint; give one --step with it")
    jobs = []
    for step in args.step:
        ckpt = grid.Checkpoint(args.suite, args.size, step)
        jobs.append(
            Job(
                checkpoint=ckpt,
                path=args.checkpoint or Path(ckpt.path),
                cells=args.cells,
                options=args.options,
                calibration=args.calibration,
                texts=args.texts,
                evaluation={k: getattr(args, k) for k in EVALUATION_KEYS},
                keep_models=not args.drop_quantized,
            )
        )
    for job in jobs:
        check_job(job)  # every cell of every checkpoint is checked before any work is done
    set_threads(args.threads)
    # Exit 0 even when cells failed: their failed records keep the job's finished cells (a
    # failed job's outputs are deleted), and `qid aggregate` refuses them by name.
    for job in jobs:
        run_cells(job)


def add_evaluate(sub: Subparsers) -> None:
    s = sub.add_parser(
        "evaluate",
        parents=[evaluation_options()],
        help="loss of a checkpoint (16-bit, or a quantized cell) on eval sets",
    )
    s.add_argument("--checkpoint", type=Path, required=True, help="the unquantized checkpoint")
    s.add_argument("--method", help="quantization method of --quantized (omit for 16-bit)")
    s.add_argument("--bits", type=int)
    s.add_argument("--quantized", type=Path, help="the quantized checkpoint directory")
    s.add_argument(
        "--out", type=Path, action="append", required=True, help="JSON result, one per --texts"
    )
    s.add_argument("--threads", type=int)
    _no_kl(s)
    s.set_defaults(func=cmd_evaluate, needs=lambda a: _needs([a.method]))


def cmd_evaluate(args) -> None:
    set_threads(args.threads)
    _evaluate(args, args.out, args.method, args.bits, args.quantized)


PARSERS = {
    "quantize": add_quantize,
    "cells": add_cells,
    "evaluate": add_evaluate,
}
