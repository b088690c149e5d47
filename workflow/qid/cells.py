"""One checkpoint's cells in one process (`qid cells`, the workflow's per-checkpoint job).

A failing cell does not throw away the others: its eval JSONs are written as failed records
(`status: failed` and the error) and the job goes on, so Snakemake, which deletes every
output of a failed job, keeps the finished cells; `qid aggregate` then refuses the failed
records by name. A rerun reuses a cell whose eval JSONs are all results (`ok` or
`collapsed`) with the `settings` digest the cell would be computed with now, and recomputes
anything else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qid import QidError, grid
from qid.grid import BASE, CHECKPOINT_META
from qid.integrity import sha256_file, weight_files
from qid.strict_json import dumps

# What an evaluation depends on besides the model: the keys of qid.evaluate.run's settings.
EVALUATION_KEYS = ("context", "batch_tokens", "dtype", "fake_quant", "reference_tokenizer")
# The statuses of an eval record that are results (qid.evaluate.collapse_status), not failures.
RESULTS = ("ok", "collapsed")


@dataclass(frozen=True)
class Failure:
    variant: str
    error: str


def one_line(err: BaseException) -> str:
    """`ExceptionType: message`, its whitespace collapsed into one line."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def checkpoint_identity(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's weights: the fingerprint its qid_checkpoint.json carries, else the weight
    files' sizes and mtimes (hashing gigabytes on every rerun would cost more than it saves)."""
    meta = Path(checkpoint) / CHECKPOINT_META
    if meta.is_file():
        fingerprint = json.loads(meta.read_text()).get("fingerprint")
        if fingerprint:
            return {"fingerprint": fingerprint}
    files = weight_files(Path(checkpoint))
    return {"weights": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files}}


def digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """Everything one checkpoint's job is computed from."""

    checkpoint: grid.Checkpoint
    path: Path  # the 16-bit checkpoint's directory
    cells: list[tuple[str, int]]
    options: dict[str, dict]
    calibration: Path | None
    texts: list[Path]
    evaluation: dict[str, Any]
    keep_models: bool = True

    def base_settings(self) -> dict[str, Any]:
        """What the 16-bit eval's result depends on (and every cell's, which adds its own)."""
        from qid.evaluate import resolve_dtype

        device = _device()
        evaluation = {k: self.evaluation.get(k) for k in EVALUATION_KEYS}
        # "auto" means float32 on a CPU, bfloat16 on a GPU: the resolved dtype is the setting.
        evaluation["dtype"] = str(resolve_dtype(evaluation["dtype"] or "auto", device))
        return {
            "checkpoint": checkpoint_identity(self.path),
            "texts": {Path(t).stem: sha256_file(t) for t in self.texts},
            "evaluation": evaluation,
        }

    def cell_settings(self, base: dict[str, Any], method: str, bits: int) -> dict[str, Any]:
        from qid.quantize import get_method

        options = self.options[method]
        calibration = None
        if get_method(method).calibration:
            calibration = sha256_file(self.calibration) if self.calibration else None
        else:  # a method that does not calibrate ignores the calibration set's length
            options = {k: v for k, v in options.items() if k != "calibration_length"}
        return {
            **base,
            "method": method,
            "bits": bits,
            "options": options,
            "calibration": calibration,
        }

    def eval_paths(self, variant: str) -> list[Path]:
        return [Path(self.checkpoint.eval_path(variant, Path(t).stem)) for t in self.texts]


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_done(paths: list[Path], settings: str) -> bool:
    """All of a model's eval JSONs exist, are results (`ok`, or `collapsed`: a diverged model
    is a result too), and were computed with these settings."""
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        if record.get("status") not in RESULTS or record.get("settings") != settings:
            return False
    return True


def _evaluate(job: Job, paths: list[Path], settings: str, **model) -> None:
    from qid.evaluate import print_records, run

    print_records(run(job.path, job.texts, paths, settings=settings, **job.evaluation, **model))


def _write_failed(job: Job, cell: grid.Cell, settings: str, error: str) -> None:
    """The cell's outputs as failed records, so Snakemake keeps the job's other outputs."""
    c = job.checkpoint
    for path in job.eval_paths(cell.variant):
        record = {
            "suite": c.suite,
            "size": c.size,
            "step": c.step,
            "variant": cell.variant,
            "method": cell.method,
            "bits": cell.bits,
            "eval_set": path.stem,
            "status": "failed",
            "error": error,
            "settings": settings,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(record) + "\n")
    quant = {"method": cell.method, "bits": cell.bits, "status": "failed", "error": error}
    Path(cell.record).parent.mkdir(parents=True, exist_ok=True)
    Path(cell.record).write_text(json.dumps(quant, indent=2) + "\n")
    if job.keep_models:  # a declared output: present, and empty rather than half written
        shutil.rmtree(cell.quantized, ignore_errors=True)
        Path(cell.quantized).mkdir(parents=True)


def _cell_done(job: Job, cell: grid.Cell, settings: str) -> bool:
    if not is_done(job.eval_paths(cell.variant), settings) or not Path(cell.record).is_file():
        return False
    # A kept model must still be there (with `execution.keep_quantized` it is an output).
    model = Path(cell.quantized)
    return not job.keep_models or (model.is_dir() and any(model.iterdir()))


def _run_cell(
    job: Job,
    cell: grid.Cell,
    settings: str,
    calibration: list[str] | None,
    references: dict | None = None,
) -> None:
    from qid.quantize import quantize_cell

    shutil.rmtree(cell.quantized, ignore_errors=True)  # nothing of an earlier try is reused
    try:
        info = quantize_cell(
            job.path,
            Path(cell.quantized),
            Path(cell.record),
            cell.method,
            cell.bits,
            job.options[cell.method],
            calibration,
        )
        print(f"{cell.variant}: quantized in {info['seconds']:.1f} s -> {cell.quantized}")
        paths = job.eval_paths(cell.variant)
        _evaluate(
            job,
            paths,
            settings,
            method=cell.method,
            bits=cell.bits,
            quantized=Path(cell.quantized),
            kl_reference=references,
        )
    finally:
        if not job.keep_models:
            shutil.rmtree(cell.quantized, ignore_errors=True)


def _release_memory() -> None:
    """What a failed cell's frames held (often the cause: GPU memory) is freed for the next."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def calibration_texts(path: Path | None) -> list[str] | None:
    """The calibration texts of a parquet (column `text`), if given."""
    from qid.data import read_texts

    return None if path is None else read_texts(path, "--calibration")


def run_cells(job: Job) -> list[Failure]:
    """The 16-bit eval (its failure fails the job), then each cell; a failing cell is written
    as failed records and the next cell runs. Returns the failed cells."""
    base = job.base_settings()
    base_digest = digest(base)
    cells = [
        (grid.Cell(job.checkpoint, m, b), digest(job.cell_settings(base, m, b)))
        for m, b in job.cells
    ]
    pending = [(cell, s) for cell, s in cells if not _cell_done(job, cell, s)]
    # The cells to run compare their distributions with the 16-bit model's (qid.divergence),
    # held in memory only: a kept 16-bit model is evaluated again for them, its records kept.
    references: dict = {}
    if is_done(job.eval_paths(BASE), base_digest):
        print(f"kept {BASE}")
        if pending:
            from qid.evaluate import kl_reference

            references = kl_reference(job.path, job.texts, **job.evaluation)
    else:
        _evaluate(job, job.eval_paths(BASE), base_digest, kl_reference=references)
    calibration = None
    failures = []
    for cell, settings in cells:
        if (cell, settings) not in pending:
            print(f"kept {cell.variant}")
            continue
        if calibration is None and job.calibration is not None:
            calibration = calibration_texts(job.calibration)  # read once, when a cell needs it
        try:
            _run_cell(job, cell, settings, calibration, references)
            continue
        except Exception as err:  # noqa: BLE001 - any failure of one cell is that cell's
            traceback.print_exc()
            failures.append(Failure(cell.variant, one_line(err)))
        _write_failed(job, cell, settings, failures[-1].error)
        print(f"{cell.variant}: failed: {failures[-1].error}")
        _release_memory()
    c = job.checkpoint
    for f in failures:
        print(
            f"qid cells: {c.suite}/{c.size}/step{c.step}/{f.variant} failed: {f.error}",
            file=sys.stderr,
        )
    return failures


def check_job(job: Job) -> None:
    """Refuse, before any work, a cell that cannot run (unknown method, bad bits or options)."""
    from qid.data import check_texts
    from qid.quantize import check_bits, get_method, preflight

    for path in job.texts:
        check_texts(path, "--texts")
    if job.calibration is not None:
        check_texts(job.calibration, "--calibration")
    for method, bits in job.cells:
        check_bits(method, bits)
        if method not in job.options:
            raise QidError(f"no --options for method {method!r}")
        if get_method(method).calibration and not job.calibration:
            raise QidError(f"method {method!r} needs --calibration")
        preflight(method, bits, job.options[method], job.path)
