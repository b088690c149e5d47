"""KL from the 16-bit model against QiD on a finished default study's RTN cells.

Recomputes the RTN cells (2, 3, 4 bits, group 32, on sotu) of every checkpoint of a finished run
(`results/` of `snakemake --profile profiles/default`, read only) in the current directory, checks
that its losses are bit-identical to the run's `qid.parquet`, and prints the cells' measures, the
correlation of KL with QiD, and how many cells each leaves at or below 0.

    cd $(mktemp -d) && python /path/to/benchmarks/kl_vs_qid.py /path/to/results
"""

from __future__ import annotations

import sys
from pathlib import Path

import common  # noqa: F401  (this checkout's qid first on the path)


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch

    from qid import grid
    from qid.aggregate import aggregate
    from qid.cells import Job, run_cells

    torch.set_num_threads(1)
    run = Path(sys.argv[1])
    paths = []
    for size in ("h64-l2", "h128-l4", "h256-l4"):
        for step in (40, 63, 98, 153, 240):
            ckpt = grid.Checkpoint("neox-sotu", size, step)
            job = Job(
                checkpoint=ckpt,
                path=run / f"neox-sotu/checkpoints/{size}/step{step}",
                cells=[("rtn", 2), ("rtn", 3), ("rtn", 4)],
                options={"rtn": {"group_size": 32}},
                calibration=None,
                texts=[run / "data/eval/sotu.parquet"],
                evaluation={"context": 128, "batch_tokens": 2048, "dtype": "auto"},
                keep_models=False,
            )
            run_cells(job)
            variants = (grid.BASE, "rtn-2bit", "rtn-3bit", "rtn-4bit")
            paths += [ckpt.eval_path(v, "sotu") for v in variants]
    mine = aggregate(paths)
    theirs = pd.read_parquet(run / "qid.parquet")
    theirs = theirs[(theirs.method == "rtn") & (theirs.eval_set == "sotu")]
    m = mine.merge(theirs, on=["size", "step", "bits"], suffixes=("", "_run"))
    same = (m.loss_q == m.loss_q_run).all() and (m.loss_16 == m.loss_16_run).all()
    cols = ["size", "step", "bits", "qid", "qid_se", "kl", "kl_se", "top1_agreement", "qid_bpb"]
    print(mine[cols].to_string())
    print(f"{len(m)} cells matched the run's table; losses bit-identical: {same}")
    print(f"pearson(kl, qid): {np.corrcoef(mine.kl, mine.qid)[0, 1]:.3f}")
    print(f"spearman(kl, qid): {mine.kl.rank().corr(mine.qid.rank()):.3f}")
    print(f"cells with qid <= 0: {(mine.qid <= 0).sum()}, with kl <= 0: {(mine.kl <= 0).sum()}")
    print(
        f"median kl/kl_se: {(mine.kl / mine.kl_se).median():.1f}, "
        f"median |qid|/qid_se: {(mine.qid.abs() / mine.qid_se).median():.1f}"
    )
    mine.to_csv("kl_vs_qid.csv", index=False)


if __name__ == "__main__":
    main()
