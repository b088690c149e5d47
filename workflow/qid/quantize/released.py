"""The paper authors' own GPTQ checkpoints, evaluated as a method of their own so that our GPTQ
cells can be compared with theirs: `Xu-Ouyang/pythia-{size}-int{bits}-step{step}-GPTQ-wikitext2`.

"Quantizing" a cell fetches the released checkpoint for the cell's (size, step, bits) from the
hub (through the HF cache, like a Pythia revision) and links it at the cell's path; it loads
with GPTQModel like our own GPTQ checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from qid.checkpoints import read_meta
from qid.fetch import hub_snapshot
from qid.quantize import METHODS, gptq

RELEASED = METHODS["released"]


def quantize(checkpoint: Path, out: Path, bits: int, options: dict, calibration=None) -> dict:
    meta = read_meta(checkpoint)
    fields = {"size": meta["size"], "step": meta["step"], "bits": bits}
    repo = RELEASED.option(options, "repo").format(**fields)
    revision = RELEASED.option(options, "revision").format(**fields)
    files, commit = hub_snapshot(repo, revision, RELEASED.option(options, "cache_dir"))
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(files.iterdir()):
        (out / f.name).symlink_to(f.resolve())
    return {"backend": "released", "repo": repo, "revision": revision, "commit": commit,
            "storage": "packed"}  # fmt: skip


def load(path: Path):
    return gptq.load(path)


dequantize = gptq.dequantize
