"""The results stage: the QiD table, the fitted laws, Table 1, the summary and the figures."""

from __future__ import annotations

import json
from pathlib import Path

from qid import grid
from qid.cli.args import Subparsers, _data, load_fits, write_table
from qid.config import schema_key
from qid.strict_json import save


def add_aggregate(sub: Subparsers) -> None:
    s = sub.add_parser("aggregate", help="join evaluation JSONs into the QiD parquet table")
    s.add_argument("inputs", type=Path, nargs="+", help="evaluation JSONs (16-bit and quantized)")
    s.add_argument("--out", type=Path, default=Path(grid.QID_TABLE))
    s.add_argument("--config-hash", default="", help="provenance: hash of the study config")
    s.set_defaults(func=cmd_aggregate, needs=lambda a: ["qid.aggregate"])


def cmd_aggregate(args) -> None:
    from qid.aggregate import aggregate

    table = aggregate(args.inputs, config_hash=args.config_hash)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out)
    print(f"{len(table)} rows -> {args.out}")


def add_fit(sub: Subparsers) -> None:
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
    s.add_argument(
        "--likelihood",
        choices=schema_key("fit", "likelihood")["enum"],
        default=schema_key("fit", "likelihood")["default"],
        help="se: every cell in linear space with its qid_se, no truncation bias at the noise"
        " floor; log: least squares on log QiD, cells with QiD <= 0 dropped (default: %(default)s,"
        " config key fit.likelihood)",
    )
    s.add_argument("--starts", type=int, default=1, help="starting points (best cost kept)")
    s.add_argument(
        "--metric",
        choices=["qid", "kl"],
        default="qid",
        help="fit QiD (default) or the KL from the 16-bit model (table columns kl, kl_se)",
    )
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
    s.set_defaults(func=cmd_fit, needs=lambda a: ["qid.data", "qid.laws"])


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
        likelihood=args.likelihood,
        metric=args.metric,
    )
    save(args.out, fits)
    u = fits["unified"]["params"]
    print(
        ("unified (KL): " if args.metric == "kl" else "unified: ")
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


def add_table1(sub: Subparsers) -> None:
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
    s.set_defaults(func=cmd_table1, needs=lambda a: ["qid.table1"])


def cmd_table1(args) -> None:
    from qid.table1 import table1, to_markdown

    frame = table1(load_fits(args.fits), by_bits=args.by_bits, confidence=args.confidence)
    text = to_markdown(frame, f"Table 1 from {args.fits or 'the published law'}")
    write_table(frame, text, args.out_csv, args.out_md)
    if not args.out_md:
        print(text, end="")


def add_summary(sub: Subparsers) -> None:
    s = sub.add_parser("summary", help="the fitted laws beside the paper's numbers (Markdown)")
    s.add_argument("--fits", type=Path, default=Path(grid.FITS))
    s.add_argument("--out", type=Path, default=Path(grid.SUMMARY))
    s.set_defaults(func=cmd_summary, needs=lambda a: ["qid.report"])


def cmd_summary(args) -> None:
    from qid.report import summary

    text = summary(json.loads(args.fits.read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"summary -> {args.out}")


def add_figures(sub: Subparsers) -> None:
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
    s.set_defaults(func=cmd_figures, needs=_needs_figures)


def _needs_figures(args) -> list[str]:
    """The drawer module of each figure drawn (qid.cli.imports); an unknown name adds none."""
    from qid import figures

    names = [n for n in args.names or figures.FIGURES if n in figures.FIGURES]
    drawers = (figures.FIGURES[n].draws.split(":")[0] for n in names)
    return ["qid.figures.draw", *(f"qid.figures.{d}" for d in dict.fromkeys(drawers))]


def cmd_figures(args) -> None:
    from qid.figures.draw import make_all

    data: dict[str, list[Path]] = {}
    for key, path in args.data:
        data.setdefault(key, []).append(path)
    for path in make_all(args.table, args.fits, args.out_dir, args.names, data):
        print(path)


PARSERS = {
    "aggregate": add_aggregate,
    "fit": add_fit,
    "table1": add_table1,
    "summary": add_summary,
    "figures": add_figures,
}
