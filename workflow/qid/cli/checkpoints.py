"""The checkpoint stage: train or fetch each checkpoint, size a study, release hub revisions,
and the two studies of checkpoints themselves (weight dynamics, BitNet)."""

from __future__ import annotations

import json
from pathlib import Path

from qid import grid
from qid.cli import imports
from qid.cli.args import Subparsers, _cells, _json, _steps, write_table

# The libraries each command loads (qid.cli.imports). Training builds the concrete GPT-NeoX
# class (no quantization library; torchao kept out).
TRAIN = (
    imports.NO_TORCHAO,
    "torch",
    "pandas",
    "tqdm",
    "qid.checkpoints",
    "transformers:AutoTokenizer",
    "transformers:GPTNeoXForCausalLM",
    "qid.bitnet",
)
FETCH = ("qid.fetch", "huggingface_hub", "transformers:AutoConfig")


def add_train(sub: Subparsers) -> None:
    s = sub.add_parser("train", help="train one model size, saving every checkpoint step")
    s.add_argument("--suite", required=True)
    s.add_argument("--size", required=True)
    s.add_argument("--arch", type=_json, required=True, help="the size's architecture (JSON)")
    s.add_argument("--training", type=_json, required=True, help="the suite's `training` (JSON)")
    s.add_argument("--steps", type=_steps, required=True, help="checkpoint steps, e.g. 40,63,98")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--train-ids", type=Path, default=Path(grid.TRAIN_IDS))
    s.add_argument("--tokenizer", type=Path, default=Path(grid.TOKENIZER))
    s.add_argument("--out", type=Path, required=True, help="directory for step*/ checkpoints")
    s.add_argument("--log", type=Path, required=True, help="parquet of the loss per step")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--bitnet",
        action="store_true",
        help="BitNet b1.58: ternary weights, 8-bit activations in the decoder blocks (Sec. 4.4)",
    )
    s.set_defaults(func=cmd_train, needs=lambda a: TRAIN)


def cmd_train(args) -> None:
    from qid.checkpoints import train

    frame = train(
        args.suite,
        args.size,
        args.arch,
        args.training,
        args.steps,
        args.seed,
        args.train_ids,
        args.tokenizer,
        args.out,
        args.log,
        threads=args.threads,
        bitnet=args.bitnet,
    )
    print(
        f"{args.suite}/{args.size}{' (BitNet b1.58)' * args.bitnet}: "
        f"N={frame.n_params.iloc[0]:,} non-embedding parameters, "
        f"{len(args.steps)} checkpoints, final training loss {frame.loss.iloc[-1]:.4f}"
    )


def add_grid(sub: Subparsers) -> None:
    s = sub.add_parser("grid", help="size of a study: checkpoints, cells, jobs, disk, GPU-hours")
    s.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    s.set_defaults(func=cmd_grid, needs=lambda a: ["qid.config"])


def cmd_grid(args) -> None:
    from qid.config import load

    config = load(args.configfile)
    e = grid.estimate(config)
    suites = ", ".join(
        f"{name} ({len(s['sizes'])} sizes x {len(s['steps'])} steps, "
        f"{len(grid.suite_variants(config, name))} cells each)"
        for name, s in config["suites"].items()
    )
    keep = config.get("execution", {}).get("keep_quantized", True)
    print(f"suites: {suites}")
    print(
        f"grid: {e['checkpoints']} checkpoints, {e['cells']} cells, "
        f"{e['evaluations']} evaluations (eval sets: {', '.join(config['eval_sets'])})"
    )
    print(f"GPU jobs: {e['gpu_jobs']} (execution.per_job)")
    print(
        f"disk: 16-bit checkpoints {e['checkpoint_bytes'] / 1e12:.2f} TB in all (hub revisions "
        f"are deleted once evaluated unless `keep`); quantized models "
        f"{e['quantized_bytes'] / 1e12:.2f} TB" + ("" if keep else " (not kept)")
    )
    unit = "GPU-hours" if config.get("resources", {}).get("gpu", 0) else "job-hours (CPU)"
    print(f"{unit} requested (per-size runtime table, an upper bound): {e['gpu_hours']:,.0f}")


def add_fetch(sub: Subparsers) -> None:
    s = sub.add_parser(
        "fetch", help="put a hub revision or a local checkpoint at the grid's checkpoint path"
    )
    s.add_argument("--suite", required=True)
    s.add_argument("--size", required=True)
    s.add_argument("--step", type=int, required=True)
    s.add_argument("--spec", type=_json, required=True, help="the suite's config block (JSON)")
    s.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    s.add_argument("--cells", type=_cells, default=[], help="check these method:bits,... cells")
    s.add_argument("--options", type=_json, default={}, help="JSON: method -> its options")
    s.add_argument(
        "--context", type=int, help="evaluate.context: check it against the model's positions"
    )
    s.set_defaults(func=cmd_fetch, needs=_needs_fetch)


def _needs_fetch(args) -> list[str]:
    return [*imports.methods(m for m, _ in args.cells), *FETCH, *imports.MODEL]


def cmd_fetch(args) -> None:
    from qid.fetch import checkpoint_meta, fetch

    meta = checkpoint_meta(args.spec, args.suite, args.size, args.step)
    meta = fetch(args.spec, args.size, args.step, args.out, meta)
    print(json.dumps(meta, indent=2))
    if args.context is not None:  # before any evaluation, as the cells below
        from qid.fetch import check_context

        check_context(args.out, args.context, meta)
    if args.cells:  # every cell against the architecture, before any evaluation
        from qid.quantize import preflight

        for method, bits in args.cells:
            preflight(method, bits, args.options.get(method, {}), args.out)
        print(f"cells {', '.join(f'{m}:{b}' for m, b in args.cells)}: fit this architecture")


def add_release(sub: Subparsers) -> None:
    s = sub.add_parser("release", help="delete a fetched hub revision from the HF cache")
    s.add_argument("--checkpoint", type=Path, required=True, help="as written by qid fetch")
    s.add_argument("--cache-dir", help="the HF cache (default: the environment's)")
    s.add_argument("--out", type=Path, required=True, help="JSON record of what was freed")
    s.set_defaults(func=cmd_release, needs=lambda a: FETCH[:2])


def cmd_release(args) -> None:
    from qid.fetch import release_checkpoint

    record = release_checkpoint(args.checkpoint, args.cache_dir, args.out)
    print(f"{record['repo']}@{record['revision']}: {record['freed_bytes'] / 1e9:.2f} GB freed")


def add_weights(sub: Subparsers) -> None:
    s = sub.add_parser(
        "weights", help="weight change between consecutive checkpoints, per layer type (Fig. 12)"
    )
    s.add_argument("sizes", type=Path, nargs="+", help="directories of step*/ checkpoints")
    s.add_argument("--changes", type=Path, required=True, help="parquet: change per layer type")
    s.add_argument("--samples", type=Path, required=True, help="parquet: sampled weights")
    s.add_argument("--sample", type=int, default=8, help="weights sampled per layer type")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_weights, needs=lambda a: ["qid.weights"])


def cmd_weights(args) -> None:
    from qid.weights import dynamics

    moves, samples = dynamics(args.sizes, per_type=args.sample, seed=args.seed)
    for out, frame in ((args.changes, moves), (args.samples, samples)):
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out)
    for (size, kind), part in moves.groupby(["size", "layer_type"], sort=False):
        rate = (part.mean_abs_change / part.steps_between).tolist()
        print(f"{size} {kind}: mean |dW| per step {rate[0]:.3g} (first) -> {rate[-1]:.3g} (last)")


def add_bitnet(sub: Subparsers) -> None:
    s = sub.add_parser(
        "bitnet",
        help="final loss of BitNet b1.58 models beside their 16-bit twins and 2-bit PTQ (Sec. 4.4)",
    )
    s.add_argument("evals", type=Path, nargs="+", help="qid evaluate JSONs of BitNet checkpoints")
    s.add_argument("--table", type=Path, help="the QiD table (16-bit and quantized losses)")
    s.add_argument("--bits", type=int, default=2, help="bit width of the PTQ compared")
    s.add_argument("--out-md", type=Path)
    s.add_argument("--out-csv", type=Path)
    s.set_defaults(func=cmd_bitnet, needs=lambda a: ["pandas", "qid.bitnet_table", "qid.data"])


def cmd_bitnet(args) -> None:
    import pandas as pd

    from qid.bitnet_table import compare, read_evals, to_markdown
    from qid.data import read_table

    evals = read_evals(args.evals)
    table = read_table(args.table, "--table") if args.table else pd.DataFrame()
    frame = compare(evals, table, bits=args.bits)
    text = to_markdown(frame)
    write_table(frame, text, args.out_csv, args.out_md)
    print(text, end="")


PARSERS = {
    "train": add_train,
    "grid": add_grid,
    "fetch": add_fetch,
    "release": add_release,
    "weights": add_weights,
    "bitnet": add_bitnet,
}
