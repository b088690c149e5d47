"""A quantize cell (`qid.quantize.quantize_cell`) against its backend library called bare.

Compared, per method, on the same checkpoint, bit width and options:

- rtn (2-bit, group 32): our backend *is* the library, so the bare side is the three steps
  `quantize_cell` wraps, written out by hand: `from_pretrained`, `rtn.quantize_model`,
  `save_pretrained` (+ the tokenizer);
- gptq (2-bit, group 32, the default study's options): GPTQModel's own API,
  `GPTQModel.load(path, QuantizeConfig(...))`, `.quantize(rows)`, `.save(out)`, with the settings
  and CPU workarounds of `qid.quantize.gptq` (fp32 load, `offload_to_disk=False`, the explicit
  `act_group_aware`, GPTQModel's CPU worker count, calibration texts tokenized and truncated to
  `calibration_length` the same way), because without them the bare call fails or quantizes
  something else;
- bnb_nf4: transformers' `from_pretrained(..., quantization_config=BitsAndBytesConfig(...))` with
  the same NF4 settings, then `save_pretrained` (+ the tokenizer).

What the ratio measures is the cost `quantize_cell` adds on top of the library: option handling,
log silencing, the record (GPTQ's quant_log parsed, the output's size summed) and its JSON.
Why it is fair: one process, every library imported and each side warmed up once before timing;
each run writes a fresh output directory; the sides alternate order run by run and the medians of
`--repeats` runs are compared. Both sides' console output goes to the same sink. `quantize_cell`
silences GPTQModel's logging and progress bars, which the bare call renders; a third side,
`bare+quiet`, runs the bare call under the same switch to separate that from the wrapper's cost.

Checkpoint: the largest trained one under results/ if the study has been run, else a seeded
random-init GPT-NeoX of the default study's largest shape (hidden 256, 4 layers, vocabulary 4,096)
with the study's BPE; calibration: results/data/calibration.parquet, else 32 samples built as
`qid data` builds them.

    python benchmarks/quantize_overhead.py
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common

OPTIONS = {
    "rtn": {"group_size": 32},
    "gptq": {"group_size": 32, "desc_act": False, "damp_percent": 0.01},
    "bnb_nf4": {},
}
BITS = {"rtn": 2, "gptq": 2, "bnb_nf4": 4}


def bare_rtn(checkpoint: Path, out: Path, bits: int, options: dict, calibration=None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qid.quantize.rtn import quantize_model

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    quantize_model(model, bits, options["group_size"])
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)


def bare_gptq(checkpoint: Path, out: Path, bits: int, options: dict, calibration: list[str]):
    # qid's CPU workaround (GPTQModel's worker count) must be set before gptqmodel is imported.
    importlib.import_module("qid.quantize.gptq")
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    length = options["calibration_length"]
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = []
    for text in calibration:
        enc = tokenizer(text, truncation=True, max_length=length)
        if len(enc["input_ids"]) > 10:
            rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    qcfg = QuantizeConfig(
        bits=bits,
        group_size=options["group_size"],
        desc_act=options["desc_act"],
        sym=True,
        damp_percent=options["damp_percent"],
        act_group_aware=not options["desc_act"] and options["group_size"] > 0,
        offload_to_disk=False,
    )
    model = GPTQModel.load(str(checkpoint), qcfg, device="cpu", dtype=torch.float32)
    model.quantize(rows, batch_size=1, calibration_data_min_length=10)
    model.save(str(out))
    tokenizer.save_pretrained(out)


def bare_bnb(checkpoint: Path, out: Path, bits: int, options: dict, calibration=None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_use_double_quant=False,
    )
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, quantization_config=config, device_map="cpu", dtype=torch.float32
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)


def bare_gptq_quiet(checkpoint: Path, out: Path, bits: int, options: dict, calibration: list[str]):
    """The bare call under the log switch qid flips (GPTQModel's INFO tables, progress bars)."""
    from qid.quantize.gptq import _quiet

    with _quiet():
        bare_gptq(checkpoint, out, bits, options, calibration)


BARE: dict[str, Callable] = {"rtn": bare_rtn, "gptq": bare_gptq, "bnb_nf4": bare_bnb}


def ours(method: str) -> Callable:
    from qid.quantize import quantize_cell

    def run(checkpoint: Path, out: Path, bits: int, options: dict, calibration) -> None:
        quantize_cell(checkpoint, out, out.with_suffix(".json"), method, bits, options, calibration)

    return run


def prepare(args, work: Path) -> tuple[Path, list[str], str]:
    """(checkpoint, calibration texts, description)."""
    import pandas as pd

    checkpoint = None if args.random else (args.checkpoint or common.trained_checkpoint())
    if checkpoint is None:
        model = common.random_model(args.hidden, args.layers, args.heads, args.vocab, 128)
        checkpoint = common.save_checkpoint(
            model, common.build_tokenizer(args.vocab), work / "checkpoint"
        )
        what = f"random-init GPT-NeoX h{args.hidden}-l{args.layers} vocab {args.vocab}"
        calib_file = None
    else:
        what = f"checkpoint {checkpoint}"
        calib_file = common.study_file(checkpoint, "data/calibration.parquet")
    if calib_file is not None:
        calibration = pd.read_parquet(calib_file)["text"].tolist()
    else:
        from qid.data import calibration_texts

        train, _ = common.sotu_split()
        calibration = calibration_texts(train, args.n_samples, 8 * args.length, common.SEED)
    return Path(checkpoint), calibration, what


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    common.add_model_args(p)
    p.add_argument("--n-samples", type=int, default=32, help="calibration samples (config)")
    p.add_argument("--length", type=int, default=128, help="calibration length (config)")
    p.add_argument("--methods", nargs="+", default=list(BARE), choices=list(BARE))
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each side (alternating)")
    args = p.parse_args(argv)

    common.quiet_logs()
    import torch

    torch.set_num_threads(args.threads)
    # Import the backends (and their libraries) before any timing: neither side pays for it.
    from qid.quantize import get_method

    for method in args.methods:
        backend = get_method(method).backend()
        if method == "gptq":
            backend._import()
        elif method.startswith("bnb"):
            import bitsandbytes  # noqa: F401

    print(f"machine: {common.machine()}, torch threads {args.threads}")
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="qid-bench-") as tmp:
        work = Path(tmp)
        with contextlib.redirect_stderr(io.StringIO()):  # "Writing model shards" bars
            checkpoint, calibration, what = prepare(args, work)
        print(f"checkpoint: {what}; {len(calibration)} calibration texts")
        for method in args.methods:
            options = {**OPTIONS[method], "calibration_length": args.length}
            sides = {"qid": ours(method), "bare": BARE[method]}
            if method == "gptq":
                sides["bare+quiet"] = bare_gptq_quiet
            seconds: dict[str, list[float]] = {name: [] for name in sides}
            for r in range(args.repeats + 1):  # run 0 warms both sides up and is not counted
                for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                    out = work / f"{method}-{name}-{r}"
                    sink = io.StringIO()
                    start = time.perf_counter()
                    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                        sides[name](checkpoint, out, BITS[method], options, calibration)
                    elapsed = time.perf_counter() - start
                    if r:
                        seconds[name].append(elapsed)
                    shutil.rmtree(out)
                    out.with_suffix(".json").unlink(missing_ok=True)
            med = {name: common.median(s) for name, s in seconds.items()}
            ratios[method] = med["qid"] / med["bare"]
            print(f"{method} {BITS[method]}-bit, medians of {args.repeats} runs:")
            for name, s in seconds.items():
                runs = " ".join(f"{x:.3f}" for x in s)
                vs = "" if name == "qid" else f"; qid / {name} = {med['qid'] / med[name]:.3f}x"
                if name != "qid":  # runs r of both sides ran back to back: their ratio
                    paired = common.median([q / b for q, b in zip(seconds["qid"], s, strict=True)])
                    vs += f" (median of run-by-run ratios {paired:.3f}x)"
                print(f"  {name:>10}: {med[name]:.3f} s ({runs}){vs}")
    summary = ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items())
    print(f"quantize overhead ratio (qid cell / bare library): {summary} (goal <= 1.1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
