"""Learning-rate schedules: the rate at every step of a run trained here (`training.schedule`)
and at the revisions of a hub suite whose schedule is published (`lr_schedule`), so that the
rate at each checkpoint is data (column `lr` of the QiD table), not an assumption.

Catalan-Tatjer, Ajroldi and Geiping 2025 (arXiv 2510.06213) report that QiD rises when the rate
decays, largely independently of D; under cosine, D and the decay move together (Pythia's along
the paper's steps), so a suite trained under WSD, whose rate stays at its peak until the last
`decay_fraction` of the steps, separates the two.
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "wsd", "constant")


def lr_at(
    step: int,
    peak: float,
    warmup: int,
    total: int,
    min_ratio: float,
    schedule: str = "cosine",
    decay_fraction: float | None = None,
) -> float:
    """The rate at `step` (counted from 1): linear warmup over `warmup` steps, then
    cosine: cosine decay to `min_ratio * peak` at `total` (GPT-NeoX's, so Pythia's);
    wsd: the peak until `decay_start`, then linear decay to `min_ratio * peak` at `total`;
    constant: the peak."""
    if step <= warmup:
        return peak * step / max(1, warmup)
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if schedule == "constant":
        return peak
    if schedule == "wsd":
        start = decay_start(schedule, warmup, total, decay_fraction)
        if step <= start:
            return peak
        progress = min(1.0, (step - start) / max(1, total - start))
        return peak * (1 - (1 - min_ratio) * progress)
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (known: {', '.join(SCHEDULES)})")


def decay_start(
    schedule: str, warmup: int, total: int, decay_fraction: float | None = None
) -> int | None:
    """The last step before the rate starts to fall (None for a constant rate): the end of
    warmup under cosine, `total - round(decay_fraction * total)` under WSD."""
    if schedule == "constant":
        return None
    if schedule == "wsd":
        if decay_fraction is None:
            raise ValueError("a wsd schedule needs decay_fraction")
        return max(warmup, total - round(decay_fraction * total))
    return warmup


def training_lr(step: int, training: dict, total: int) -> float:
    """The rate at `step` of a run trained here under `training` (a suite's block) to `total`."""
    return lr_at(
        step,
        training["lr"],
        training["warmup_steps"],
        total,
        training["min_lr_ratio"],
        training.get("schedule", "cosine"),  # absent: cosine, the schedule before it was a key
        training.get("decay_fraction"),
    )


def schedule_meta(step: int, spec: dict, total: int, peak: float | None = None) -> dict:
    """What a checkpoint records of its schedule: the schedule's name, the rate at `step` and
    the step where the decay starts (`decay_step`, None for a constant rate). `spec` holds
    `lr` (unless `peak` overrides it), `warmup_steps`, `min_lr_ratio` and, as a `training`
    block does, optionally `schedule` and `decay_fraction`."""
    spec = {**spec, "lr": peak if peak is not None else spec["lr"]}
    name = spec.get("schedule", "cosine")
    return {
        "schedule": name,
        "lr": training_lr(step, spec, total),
        "decay_step": decay_start(name, spec["warmup_steps"], total, spec.get("decay_fraction")),
    }


def schedule_problem(config: dict) -> str | None:
    """What is wrong with a suite's schedule, naming the config key, or None: a WSD decay that
    would start inside warmup, decay_fraction without WSD, a published schedule (`lr_schedule`)
    on a trained suite or without a peak rate for every size."""
    for suite, spec in config["suites"].items():
        trained, published = spec.get("training"), spec.get("lr_schedule")
        if published is not None and spec["source"] == "train":
            return (
                f"config key 'suites.{suite}.lr_schedule' is for hub/local suites "
                "(a trained suite's is `training.schedule`)"
            )
        schedule = trained or published
        if schedule is None:
            continue
        key = f"suites.{suite}.{'training' if trained else 'lr_schedule'}"
        name, fraction = schedule.get("schedule", "cosine"), schedule.get("decay_fraction")
        if (name == "wsd") != (fraction is not None):
            return f"config key '{key}.decay_fraction' goes with schedule wsd only (here {name})"
        total = schedule.get("total_steps", spec["steps"][-1])
        if name == "wsd" and decay_start(name, 0, total, fraction) <= schedule["warmup_steps"]:
            return (
                f"config key '{key}.decay_fraction' ({fraction}): the decay would start inside "
                f"the {schedule['warmup_steps']} warmup steps"
            )
        if published and any(
            spec["sizes"][size].get("lr", published.get("lr")) is None for size in spec["sizes"]
        ):
            return f"config key '{key}.lr' (or sizes.<size>.lr for every size) is required"
    return None


def matched_tokens(table, method: str | None = None, eval_set: str | None = None):
    """QiD at matched D across schedules: a row per (size, bits, step) that every schedule of
    `table` (the QiD table) has, with each schedule's QiD, its standard error and rate
    (`qid_<schedule>`, `se_<schedule>`, `lr_<schedule>`); rows of `method` and `eval_set` where
    given. With two schedules, also `diff` (the second minus the first, alphabetically) and
    `diff_se` (the two standard errors in quadrature: independent runs)."""
    rows = table[table.schedule.fillna("") != ""]
    for column, value in (("method", method), ("eval_set", eval_set)):
        if value is not None:
            rows = rows[rows[column] == value]
    keys = ["size", "n_params", "bits", "step", "tokens"]
    wide = rows.pivot_table(
        index=keys, columns="schedule", values=["qid", "qid_se", "lr"], aggfunc="first"
    ).dropna()
    wide.columns = [f"{'se' if v == 'qid_se' else v}_{s}" for v, s in wide.columns]
    names = sorted(rows.schedule.unique())
    if len(names) == 2:
        first, second = names
        wide["diff"] = wide[f"qid_{second}"] - wide[f"qid_{first}"]
        wide["diff_se"] = (wide[f"se_{first}"] ** 2 + wide[f"se_{second}"] ** 2) ** 0.5
    return wide.reset_index()
