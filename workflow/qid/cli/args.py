"""Argument types and helpers that several `qid` commands share.

The types keep their underscored names: argparse names a type function in its error message
("invalid _steps value"), so renaming one would change what a user reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

Subparsers = argparse._SubParsersAction


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def _steps(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def _cells(text: str) -> list[tuple[str, int]]:
    try:
        return [(m, int(b)) for m, b in (cell.split(":") for cell in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected method:bits,method:bits...") from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _bit_list(text: str) -> list[float]:
    try:
        return [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected bit widths, e.g. 2 or 2,3,4"
        ) from None


def _data(text: str) -> tuple[str, Path]:
    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH, got {text!r}")
    return key, Path(path)


def evaluation_options() -> argparse.ArgumentParser:
    """The evaluation flags of quantize, cells, evaluate and diagnose (a parent parser)."""
    evaluation = argparse.ArgumentParser(add_help=False)
    e = evaluation.add_argument_group("evaluation")
    e.add_argument(
        "--texts",
        type=Path,
        action="append",
        default=[],
        help="parquet of eval texts (repeat for several eval sets)",
    )
    e.add_argument("--context", type=int, default=128, help="tokens per evaluation window")
    e.add_argument(
        "--batch-tokens",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="padded tokens per forward, or auto: from the GPU's free memory (CPU: 2048)",
    )
    e.add_argument(
        "--reference-tokenizer",
        help="tokenizer (path or hub id) whose token count normalises the loss; "
        "default: the model's own",
    )
    e.add_argument("--dtype", default="auto", help="weights of the 16-bit model")
    e.add_argument(
        "--fake-quant",
        action="store_true",
        help="evaluate quantized models by their dequantized weights (plain kernels)",
    )
    return evaluation


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def load_fits(path: Path | None) -> dict | None:
    return None if path is None else json.loads(Path(path).read_text())


def write_table(frame, markdown: str, out_csv: Path | None, out_md: Path | None) -> None:
    for out, write in ((out_csv, lambda p: frame.to_csv(p, index=False)),
                       (out_md, lambda p: p.write_text(markdown))):  # fmt: skip
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            write(out)
