"""Every method on every architecture of the test zoo (tests/zoo.py): layers quantized, QiD at
2 and 4 bits (or the one-line refusal), and seconds per cell (quantize + reload + evaluate).

    python benchmarks/zoo.py [--archs llama,gpt2] [--methods rtn,gptq] [--steps 60]

Each model is trained `--steps` steps on the zoo's toy language; GPTQ and AWQ calibrate on 64
in-domain texts of 64 tokens; QiD is measured on 48 held-out texts by qid's evaluator.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts this checkout's qid first on the path)

sys.path.insert(0, str(common.ROOT / "tests"))

import zoo  # noqa: E402

from qid import QidError  # noqa: E402

OPTIONS = {
    "rtn": {"group_size": 32},  # 32 divides neither 72 nor 200: a shorter last group
    "gptq": {"group_size": 32, "calibration_length": 64},
    "awq": {"group_size": 8, "calibration_length": 64},  # AWQ needs whole groups
    "bnb_nf4": {},
}
BITS = {"rtn": (2, 4), "gptq": (2, 4), "awq": (2, 4), "bnb_nf4": (4,)}


def measure(ckpt: Path, method: str, bits: int, texts: Path, work: Path) -> dict:
    from qid.evaluate import run
    from qid.quantize import METHODS, quantize_cell

    calibration = zoo.make_texts(64, seed=7) if METHODS[method].calibration else None
    out = work / f"{ckpt.name}-{method}-{bits}"
    start = time.perf_counter()
    try:
        record = quantize_cell(ckpt, out, Path(f"{out}.json"), method, bits, OPTIONS[method],
                               calibration)  # fmt: skip
    except QidError as err:
        return {"refused": str(err)}
    (q,) = run(ckpt, [texts], [work / "q.json"], method=method, bits=bits, quantized=out,
               context=64, batch_tokens=4096)  # fmt: skip
    return {"loss": q["loss"], "layers": record["quantized_layers"],
            "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    import pandas as pd

    from qid.evaluate import run

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(zoo.ARCHS))
    p.add_argument("--methods", default=",".join(OPTIONS))
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    print(f"machine: {common.machine()}")
    print("| architecture | method | layers | QiD 2-bit | QiD 4-bit | seconds per cell |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts = work / "heldout.parquet"
        pd.DataFrame({"text": zoo.make_texts(48, seed=99)}).to_parquet(texts)
        for arch in args.archs.split(","):
            ckpt = zoo.build(arch, work / arch, steps=args.steps)
            (base,) = run(ckpt, [texts], [work / "base.json"], context=64, batch_tokens=4096)
            for method in args.methods.split(","):
                cells = {b: measure(ckpt, method, b, texts, work) for b in BITS[method]}
                refused = [c["refused"] for c in cells.values() if "refused" in c]
                if refused:
                    print(f"| {arch} | {method} | refused: {refused[0]} | | | |", flush=True)
                    continue
                qid = {b: f"{c['loss'] - base['loss']:+.4f}" for b, c in cells.items()}
                seconds = sum(c["seconds"] for c in cells.values()) / len(cells)
                layers = next(iter(cells.values()))["layers"]
                print(f"| {arch} | {method} | {layers} | {qid.get(2, '')} | {qid.get(4, '')} "
                      f"| {seconds:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
