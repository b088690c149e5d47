"""`qid diagnose`: a model's training tokens from its QiD, given or measured on a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from qid import QidError
from qid.cli import imports
from qid.cli.args import Subparsers, _bit_list, _json, _names, evaluation_options, load_fits
from qid.quantize import GROUP_SIZE
from qid.strict_json import dumps, save


def add_diagnose(sub: Subparsers) -> None:
    s = sub.add_parser(
        "diagnose",
        parents=[evaluation_options()],
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
        default={"group_size": GROUP_SIZE.default},
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
    s.set_defaults(func=cmd_diagnose, needs=_needs)


def _needs(args) -> list[str]:
    """The law alone, or a checkpoint's measurement: its methods and the evaluator."""
    if args.checkpoint is None:
        return ["qid.diagnose"]
    return [*imports.methods(args.method), "qid.diagnose", "qid.cells", *imports.MODEL]


def cmd_diagnose(args) -> None:
    from qid.diagnose import diagnose

    if (args.checkpoint is None) == (args.qid is None or args.n_params is None):
        raise QidError("give either --n-params and --qid, or --checkpoint (with --texts)")
    fits = load_fits(args.fits)  # read before minutes of measuring, not after
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
    save(args.out, result)
    if args.json:
        print(dumps(result, indent=2))
    else:
        _print_estimate(result)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _diagnose_checkpoint(args, fits: dict | None, law: dict) -> None:
    """Check the flags of a measurement, run it (qid.diagnose) and print what it found."""
    from qid.diagnose import diagnose_checkpoint

    if len(args.texts) != 1:
        raise QidError("--checkpoint needs one --texts parquet to measure QiD on")
    if args.qid_se is not None:
        raise QidError("--qid-se goes with --qid: --checkpoint measures its own standard error")
    if any(b != int(b) for b in args.bits):
        bad = next(b for b in args.bits if b != int(b))
        raise QidError(f"--bits {bad:g}: a checkpoint is quantized at whole bit widths")

    def print_measurement(plan, doc: dict, cells: list[dict]) -> None:
        if not args.json:  # the measurement first: it stands whatever the law says
            _print_measurement(args.checkpoint, args.texts[0], plan, doc["base"], cells)

    doc = diagnose_checkpoint(
        args.checkpoint,
        args.texts[0],
        args.method,
        [int(b) for b in args.bits],
        args.options,
        args.calibration,
        args.seed,
        fits=fits,
        law=law,
        out=args.out,
        threads=args.threads,
        progress=_say,
        on_measured=print_measurement,
        context=args.context,
        batch_tokens=args.batch_tokens,
        reference_tokenizer=args.reference_tokenizer,
        dtype=args.dtype,
        fake_quant=args.fake_quant,
    )
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
        _say("qid diagnose: the law refused every estimate; the measurement stands (see above)")


def _print_measurement(checkpoint: Path, texts: Path, plan, base: dict, cells: list) -> None:
    from qid.diagnose import divergence, quantized_layers

    print(
        f"{checkpoint}: N = {base['n_params']:,} non-embedding parameters, "
        f"16-bit loss {base['loss_16']:.5f} on {base['texts']} texts of {texts}"
    )
    for c in cells:
        print(
            f"  {c['method']} {c['bits']}-bit: QiD {c['qid']:.4g} (se {c['qid_se']:.2g}) "
            f"nats, loss {c['loss_q']:.5f}{quantized_layers(c)}; {c['seconds']:.1f} s\n"
            f"    {divergence(c)}"
        )
    for method, info in plan.calibration_info.items():
        print(
            f"  {method} calibration: {info['source']}, {info['texts']} texts x "
            f"{info['length']} tokens"
        )


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


PARSERS = {"diagnose": add_diagnose}
