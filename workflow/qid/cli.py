"""`qid <stage>`: one subcommand per workflow stage. Each Snakemake rule runs exactly one of these
commands (printed in its log), so any grid cell can be rerun by hand with the same command.

Heavy libraries are imported inside the commands so that `qid --help` and the light stages
(aggregate, fit, figures) start fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from qid import QidError, grid
from qid.strict_json import dumps


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def _steps(text: str) -> list[int]:
    return [int(s) for s in text.split(",")]


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_corpus(args) -> None:
    from qid.data import build_corpus

    print(json.dumps(build_corpus(args.data, args.seed, args.tokenizer, args.train_ids), indent=2))


def cmd_evalset(args) -> None:
    from qid.texts import build_eval_set

    summary = build_eval_set(args.name, args.spec, args.seed, args.out, args.data)
    print(json.dumps(summary, indent=2))


def cmd_calibration(args) -> None:
    from qid.texts import build_calibration

    print(json.dumps(build_calibration(args.spec, args.seed, args.out, args.data), indent=2))


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


def cmd_grid(args) -> None:
    from qid.config import load_config

    config = load_config(args.configfile)
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


def cmd_fetch(args) -> None:
    from qid.fetch import fetch

    sizes = args.spec.get("sizes", {}).get(args.size, {})
    per_step = sizes.get("tokens_per_step", args.spec.get("tokens_per_step"))
    if per_step is None:
        raise QidError(f"suite {args.suite!r} gives no tokens_per_step: D would be unknown")
    meta = {
        "suite": args.suite,
        "size": args.size,
        "step": args.step,
        "tokens": args.step * per_step,
        "tokens_per_step": per_step,
        "n_params": sizes.get("n_params"),
    }
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


def cmd_release(args) -> None:
    from qid.checkpoints import read_meta
    from qid.fetch import release

    meta = read_meta(args.checkpoint)
    if "commit" not in meta:
        raise QidError(f"checkpoint {str(args.checkpoint)!r} was not fetched from the hub")
    freed = release(meta["repo"], meta["commit"], args.cache_dir)
    record = {k: meta[k] for k in ("repo", "revision", "commit")} | {"freed_bytes": freed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{meta['repo']}@{meta['revision']}: {freed / 1e9:.2f} GB freed")


def _evaluate(args, outs: list[Path], method=None, bits=None, quantized=None) -> None:
    from qid.cells import EVALUATION_KEYS
    from qid.evaluate import print_records, run

    if len(args.texts) != len(outs):
        raise QidError(f"qid {args.command}: give one output JSON per --texts")
    evaluation = {k: getattr(args, k) for k in EVALUATION_KEYS}
    print_records(
        run(
            args.checkpoint,
            args.texts,
            outs,
            method=method,
            bits=bits,
            quantized=quantized,
            **evaluation,
        )
    )


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
    _threads(args.threads)
    calibration = calibration_texts(args.calibration)
    info = quantize_cell(
        args.checkpoint, args.out, args.record, args.method, args.bits, args.options, calibration
    )
    print(json.dumps(info, indent=2))
    if args.texts:  # evaluate the saved checkpoint, reloaded from disk, in the same process
        _evaluate(args, args.eval_out, args.method, args.bits, args.out)


def _cells(text: str) -> list[tuple[str, int]]:
    try:
        return [(m, int(b)) for m, b in (cell.split(":") for cell in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected method:bits,method:bits...") from None


def cmd_cells(args) -> None:
    from qid.cells import EVALUATION_KEYS, Job, check_job, run_cells

    ckpt = grid.Checkpoint(args.suite, args.size, args.step)
    job = Job(
        checkpoint=ckpt,
        path=args.checkpoint or Path(ckpt.path),
        cells=args.cells,
        options=args.options,
        calibration=args.calibration,
        texts=args.texts,
        evaluation={k: getattr(args, k) for k in EVALUATION_KEYS},
        keep_models=not args.drop_quantized,
    )
    check_job(job)  # every cell is checked before any work is done
    _threads(args.threads)
    # Exit 0 even when cells failed: their failed records keep the job's finished cells (a
    # failed job's outputs are deleted), and `qid aggregate` refuses them by name.
    run_cells(job)


def cmd_evaluate(args) -> None:
    _threads(args.threads)
    _evaluate(args, args.out, args.method, args.bits, args.quantized)


def cmd_aggregate(args) -> None:
    from qid.aggregate import aggregate

    table = aggregate(args.inputs, config_hash=args.config_hash)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out)
    print(f"{len(table)} rows -> {args.out}")


def _dump(data) -> str:
    """Indented JSON with each innermost list of numbers on one line (bootstrap draws, ranges);
    strict: a NaN or infinite number is written as null (qid.strict_json)."""
    return re.sub(
        r'\[[^\[\]{}"]*\]',
        lambda m: "[" + " ".join(m.group()[1:-1].split()) + "]",
        dumps(data, indent=2),
    )


def _load_fits(path: Path | None) -> dict | None:
    return None if path is None else json.loads(Path(path).read_text())


def cmd_fit(args) -> None:
    from qid.data import read_table
    from qid.laws import fit_all

    fits = fit_all(
        read_table(args.table, "--table"),
        method=args.method,
        eval_set=args.eval_set,
        confidence=args.confidence,
        weighted=not args.unweighted,
        loss=args.loss,
        starts=args.starts,
        bootstrap=args.bootstrap,
        seed=args.seed,
        validation=args.validate,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump(fits) + "\n")
    u = fits["unified"]["params"]
    print(
        "unified: "
        + ", ".join(f"{k}={v['value']:.4g}" for k, v in u.items())
        + f"; R2(log)={fits['unified']['r2_log']:.3f}"
    )
    for f in fits["excluded"]["flagged"]:
        where = "/".join(str(f[k]) for k in ("suite", "size", "step") if k in f)
        print(f"excluded (flagged): {where}: {f['flag']}")
    for c in fits["excluded"].get("collapsed", []):
        print(f"excluded (collapsed): {_cell(c)}: {c['why']}")
    if "validation" in fits:
        v = fits["validation"]
        print(f"held out: RMSE(log) {_num(v['rmse_log'])}, MAE {_num(v['mae_nats'])} nats")


def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:.3g}"


def _cell(c: dict) -> str:
    """micro/h32-l1/step8 gptq-3bit on sotu, from the keys a table has."""
    where = "/".join(
        str(c[k]) if k != "step" else f"step{c[k]}" for k in ("suite", "size", "step") if k in c
    )
    variant = f"{c['method']}-{c['bits']}bit" if {"method", "bits"} <= set(c) else ""
    on = f"on {c['eval_set']}" if "eval_set" in c else ""
    return " ".join(p for p in (where, variant, on) if p)


def _write_table(frame, markdown: str, out_csv: Path | None, out_md: Path | None) -> None:
    for out, write in ((out_csv, lambda p: frame.to_csv(p, index=False)),
                       (out_md, lambda p: p.write_text(markdown))):  # fmt: skip
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            write(out)


def cmd_table1(args) -> None:
    from qid.table1 import table1, to_markdown

    frame = table1(_load_fits(args.fits), by_bits=args.by_bits, confidence=args.confidence)
    text = to_markdown(frame, f"Table 1 from {args.fits or 'the published law'}")
    _write_table(frame, text, args.out_csv, args.out_md)
    if not args.out_md:
        print(text, end="")


def cmd_summary(args) -> None:
    from qid.report import summary

    text = summary(json.loads(args.fits.read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"summary -> {args.out}")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _bit_list(text: str) -> list[float]:
    try:
        return [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected bit widths, e.g. 2 or 2,3,4"
        ) from None


def _save(path: Path | None, data: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(data) + "\n")


def _print_estimate(result: dict, indent: str = "") -> None:
    ci = ""
    if result["tokens_low"] is not None:
        ci = (
            f" ({result['confidence']:.0%} interval {result['tokens_low']:.3g}"
            f"-{result['tokens_high']:.3g}, {result['ci']})"
        )
    print(f"estimated training tokens D = {result['tokens']:.3g}{ci} [law: {result['law']}]")
    print(indent + result["verdict"])
    levels = ", ".join(f"{q}: {d:.3g}" for q, d in result["thresholds"].items())
    print(f"{indent}tokens at which QiD reaches each level: {levels}")
    for warning in result["warnings"]:
        print(f"{indent}warning: {warning}")


def cmd_diagnose(args) -> None:
    from qid.diagnose import diagnose

    if (args.checkpoint is None) == (args.qid is None or args.n_params is None):
        raise QidError("give either --n-params and --qid, or --checkpoint (with --texts)")
    fits = _load_fits(args.fits)  # read before minutes of measuring, not after
    law = {
        "by_bits": args.by_bits,
        "confidence": args.confidence,
        "seed": args.seed,
        "extrapolate": args.extrapolate,
    }
    if args.checkpoint is not None:
        _diagnose_checkpoint(args, fits, law)
        return
    if len(args.bits) != 1:
        raise QidError("--qid is a measurement at one bit width: give one --bits")
    if args.method != ["rtn"] or args.calibration:
        raise QidError("--method and --calibration go with --checkpoint, which they quantize")
    result = diagnose(args.qid, args.n_params, args.bits[0], fits, qid_se=args.qid_se, **law)
    _save(args.out, result)
    if args.json:
        print(dumps(result, indent=2))
    else:
        _print_estimate(result)


def _diagnose_checkpoint(args, fits: dict | None, law: dict) -> None:
    """Measure QiD of each (method, bits) on a checkpoint, print and save it, then estimate D."""
    from qid.diagnose import (
        cell_entry,
        estimate_cells,
        measure_cells,
        prepare,
        quantized_layers,
    )
    from qid.streams import stdout_to_stderr

    if len(args.texts) != 1:
        raise QidError("--checkpoint needs one --texts parquet to measure QiD on")
    if args.qid_se is not None:
        raise QidError("--qid-se goes with --qid: --checkpoint measures its own standard error")
    if any(b != int(b) for b in args.bits):
        bad = next(b for b in args.bits if b != int(b))
        raise QidError(f"--bits {bad:g}: a checkpoint is quantized at whole bit widths")

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    doc = {"checkpoint": str(args.checkpoint), "texts": str(args.texts[0])}
    # Everything libraries print while checking and measuring goes to stderr: stdout holds the
    # results alone (with --json, the JSON document).
    with stdout_to_stderr():
        plan = prepare(
            args.checkpoint,
            args.texts[0],
            args.method,
            [int(b) for b in args.bits],
            args.options,
            args.calibration,
            args.seed,
        )
        for warning in plan.warnings:
            say(f"warning: {warning}")
        doc |= {"calibration": plan.calibration_info, "base": None, "cells": []}

        def keep(base: dict, cell: dict) -> None:  # saved as measured: a crash keeps it
            doc["base"] = base
            doc["cells"].append(cell_entry(cell))
            _save(args.out, doc)

        _threads(args.threads)
        _, cells = measure_cells(
            plan,
            progress=say,
            on_cell=keep,
            context=args.context,
            batch_tokens=args.batch_tokens,
            reference_tokenizer=args.reference_tokenizer,
            dtype=args.dtype,
            fake_quant=args.fake_quant,
        )
    if not args.json:  # the measurement first: it stands whatever the law says
        base = doc["base"]
        print(
            f"{args.checkpoint}: N = {base['n_params']:,} non-embedding parameters, "
            f"16-bit loss {base['loss_16']:.5f} on {base['texts']} texts of {args.texts[0]}"
        )
        for c in cells:
            print(
                f"  {c['method']} {c['bits']}-bit: QiD {c['qid']:.4g} (se {c['qid_se']:.2g}) "
                f"nats, loss {c['loss_q']:.5f}{quantized_layers(c)}; {c['seconds']:.1f} s"
            )
        for method, info in plan.calibration_info.items():
            print(
                f"  {method} calibration: {info['source']}, {info['texts']} texts x "
                f"{info['length']} tokens"
            )
    doc["cells"] = estimate_cells(cells, fits, **law)
    _save(args.out, doc)
    if args.json:
        print(dumps(doc, indent=2))
    else:
        for entry in doc["cells"]:
            print(f"{entry['method']} {entry['bits']}-bit: ", end="")
            if entry["estimate"] is None:
                print(f"no estimate: {entry['refused']}")
            else:
                _print_estimate(entry["estimate"], indent="  ")
    if all(entry["estimate"] is None for entry in doc["cells"]):
        say("qid diagnose: the law refused every estimate; the measurement stands (see above)")


def _data(text: str) -> tuple[str, Path]:
    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise argparse.ArgumentTypeError(f"expected KEY=PATH, got {text!r}")
    return key, Path(path)


def cmd_figures(args) -> None:
    from qid.figures import make_all

    data: dict[str, list[Path]] = {}
    for key, path in args.data:
        data.setdefault(key, []).append(path)
    for path in make_all(args.table, args.fits, args.out_dir, args.names, data):
        print(path)


def cmd_weights(args) -> None:
    from qid.weights import dynamics

    moves, samples = dynamics(args.sizes, per_type=args.sample, seed=args.seed)
    for out, frame in ((args.changes, moves), (args.samples, samples)):
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out)
    for (size, kind), part in moves.groupby(["size", "layer_type"], sort=False):
        rate = (part.mean_abs_change / part.steps_between).tolist()
        print(f"{size} {kind}: mean |dW| per step {rate[0]:.3g} (first) -> {rate[-1]:.3g} (last)")


def cmd_bitnet(args) -> None:
    import pandas as pd

    from qid.bitnet import compare, to_markdown
    from qid.data import read_table

    evals = [json.loads(Path(p).read_text()) for p in args.evals]
    table = read_table(args.table, "--table") if args.table else pd.DataFrame()
    frame = compare(evals, table, bits=args.bits)
    text = to_markdown(frame)
    _write_table(frame, text, args.out_csv, args.out_md)
    print(text, end="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qid", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="<stage>")

    s = sub.add_parser("corpus", help="train the BPE and write the training split's token ids")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--data", type=_json, required=True, help="the config's `data` block (JSON)")
    s.add_argument("--tokenizer", type=Path, default=Path(grid.TOKENIZER))
    s.add_argument("--train-ids", type=Path, default=Path(grid.TRAIN_IDS))
    s.set_defaults(func=cmd_corpus)

    s = sub.add_parser("evalset", help="sample one eval set (seeded) and store it as parquet")
    s.add_argument("--name", required=True, help="the eval set's name (its key in `eval_sets`)")
    s.add_argument("--spec", type=_json, required=True, help="its block in `eval_sets` (JSON)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument(
        "--data", type=_json, help="the `data` block (JSON): source heldout needs its corpus keys"
    )
    s.add_argument("--out", type=Path, required=True, help="parquet of text_id, text")
    s.set_defaults(func=cmd_evalset)

    s = sub.add_parser("calibration", help="sample the calibration texts (seeded)")
    s.add_argument("--spec", type=_json, required=True, help="`data.calibration` (JSON)")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument(
        "--data", type=_json, help="the `data` block (JSON): source corpus needs its corpus keys"
    )
    s.add_argument("--out", type=Path, default=Path(grid.CALIBRATION))
    s.set_defaults(func=cmd_calibration)

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
    s.set_defaults(func=cmd_data)

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
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("grid", help="size of a study: checkpoints, cells, jobs, disk, GPU-hours")
    s.add_argument("--configfile", type=Path, default=Path("config/config.yaml"))
    s.set_defaults(func=cmd_grid)

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
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("release", help="delete a fetched hub revision from the HF cache")
    s.add_argument("--checkpoint", type=Path, required=True, help="as written by qid fetch")
    s.add_argument("--cache-dir", help="the HF cache (default: the environment's)")
    s.add_argument("--out", type=Path, required=True, help="JSON record of what was freed")
    s.set_defaults(func=cmd_release)

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

    s = sub.add_parser(
        "quantize",
        parents=[evaluation],
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
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser(
        "cells",
        parents=[evaluation],
        help="evaluate one checkpoint's 16-bit model, then quantize and evaluate each of its "
        "cells, in one process (outputs at the grid's paths under results/)",
    )
    s.add_argument("--suite", required=True)
    s.add_argument("--size", required=True)
    s.add_argument("--step", type=int, required=True)
    s.add_argument("--checkpoint", type=Path, help="default: the grid's path of the checkpoint")
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
    s.set_defaults(func=cmd_cells)

    s = sub.add_parser(
        "evaluate",
        parents=[evaluation],
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
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("aggregate", help="join evaluation JSONs into the QiD parquet table")
    s.add_argument("inputs", type=Path, nargs="+", help="evaluation JSONs (16-bit and quantized)")
    s.add_argument("--out", type=Path, default=Path(grid.QID_TABLE))
    s.add_argument("--config-hash", default="", help="provenance: hash of the study config")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("fit", help="fit the QiD scaling laws, Eq. (5)-(8), with lmfit")
    s.add_argument("--table", type=Path, default=Path(grid.QID_TABLE))
    s.add_argument("--out", type=Path, default=Path(grid.FITS))
    s.add_argument("--method", help="fit this method's rows (required if the table has several)")
    s.add_argument("--eval-set", help="fit this eval set's rows (required if several)")
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument(
        "--unweighted",
        action="store_true",
        help="ignore the table's qid_se (default: weight by qid / qid_se)",
    )
    s.add_argument(
        "--loss",
        choices=["linear", "huber"],
        default="linear",
        help="least squares in log space (default) or Huber, robust to outlying cells",
    )
    s.add_argument("--starts", type=int, default=1, help="starting points (best cost kept)")
    s.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="add percentile intervals from N resamples of the rows (e.g. 1000; default off)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    s.add_argument(
        "--validate",
        action="store_true",
        help="add held-out errors: refit without each model size and without the last steps",
    )
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser(
        "table1", help="Table 1: training tokens at which QiD reaches 0.2-0.5 (1B-405B, 2-4 bits)"
    )
    s.add_argument("--fits", type=Path, help="fits.json of qid fit (default: the published law)")
    s.add_argument(
        "--by-bits",
        action="store_true",
        help="use the fit to each bit width alone where fits.json has it (the paper's 3/4-bit)",
    )
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument("--out-md", type=Path, help="Markdown table (default: print it)")
    s.add_argument("--out-csv", type=Path, help="CSV, one row per model, level and bit width")
    s.set_defaults(func=cmd_table1)

    s = sub.add_parser(
        "diagnose",
        parents=[evaluation],
        help="estimate a model's training tokens from its measured QiD (Sec. 4.2), "
        "or from a checkpoint it quantizes and evaluates",
    )
    s.add_argument("--n-params", type=float, help="non-embedding parameters N")
    s.add_argument("--qid", type=float, help="measured QiD in nats")
    s.add_argument(
        "--checkpoint",
        type=Path,
        help="instead of --n-params/--qid: a causal LM directory to quantize with each --method "
        "at each --bits and evaluate, 16-bit (once) and quantized, on --texts",
    )
    s.add_argument(
        "--method", type=_names, default=["rtn"], help="with --checkpoint: e.g. rtn,gptq (rtn)"
    )
    s.add_argument(
        "--options",
        type=_json,
        default={"group_size": 128},
        help='with --checkpoint: options (JSON) for every method, or per method: {"rtn": {...}, '
        '"gptq": {...}}; match the fitted law\'s',
    )
    s.add_argument(
        "--calibration",
        type=Path,
        help="with --checkpoint: calibration parquet for gptq/awq (default: the size their "
        "library recommends, cut from Wikipedia lead sections, offline)",
    )
    s.add_argument("--threads", type=int)
    s.add_argument(
        "--bits",
        type=_bit_list,
        required=True,
        help="bit width P of the measurement; with --checkpoint, several: 2,3,4",
    )
    s.add_argument("--qid-se", type=float, help="standard error of the measured QiD")
    s.add_argument("--fits", type=Path, help="fits.json of qid fit (default: the published law)")
    s.add_argument("--by-bits", action="store_true", help="use the fit to that bit width alone")
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0, help="of the interval's draws and calibration")
    s.add_argument(
        "--extrapolate",
        action="store_true",
        help="answer outside the fitted range of N, D, P (with a warning) instead of refusing",
    )
    s.add_argument(
        "--json", action="store_true", help="print the full result as JSON (alone on stdout)"
    )
    s.add_argument(
        "--out",
        type=Path,
        help="save the result (JSON); with --checkpoint, as each cell is measured",
    )
    s.set_defaults(func=cmd_diagnose)

    s = sub.add_parser("figures", help="draw the paper's figures from the table and the fits")
    s.add_argument("--table", type=Path, default=Path(grid.QID_TABLE))
    s.add_argument("--fits", type=Path, default=Path(grid.FITS))
    s.add_argument("--out-dir", type=Path, default=Path(grid.FIGURE).parent)
    s.add_argument("--names", nargs="*", help="figures to draw (default: all)")
    s.add_argument(
        "--data",
        type=_data,
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="another table a figure draws from (repeat; same keys concatenate): "
        "weight_changes=, weight_samples= (Fig. 12), train= (training logs, Fig. 14)",
    )
    s.set_defaults(func=cmd_figures)

    s = sub.add_parser(
        "weights", help="weight change between consecutive checkpoints, per layer type (Fig. 12)"
    )
    s.add_argument("sizes", type=Path, nargs="+", help="directories of step*/ checkpoints")
    s.add_argument("--changes", type=Path, required=True, help="parquet: change per layer type")
    s.add_argument("--samples", type=Path, required=True, help="parquet: sampled weights")
    s.add_argument("--sample", type=int, default=8, help="weights sampled per layer type")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser(
        "bitnet",
        help="final loss of BitNet b1.58 models beside their 16-bit twins and 2-bit PTQ (Sec. 4.4)",
    )
    s.add_argument("evals", type=Path, nargs="+", help="qid evaluate JSONs of BitNet checkpoints")
    s.add_argument("--table", type=Path, help="the QiD table (16-bit and quantized losses)")
    s.add_argument("--bits", type=int, default=2, help="bit width of the PTQ compared")
    s.add_argument("--out-md", type=Path)
    s.add_argument("--out-csv", type=Path)
    s.set_defaults(func=cmd_bitnet)

    s = sub.add_parser("summary", help="the fitted laws beside the paper's numbers (Markdown)")
    s.add_argument("--fits", type=Path, default=Path(grid.FITS))
    s.add_argument("--out", type=Path, default=Path(grid.SUMMARY))
    s.set_defaults(func=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (QidError, FileNotFoundError) as err:
        print(f"qid {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
