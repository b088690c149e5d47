"""qid.fetch.checkpoint_meta: a fetched checkpoint's D and N, from its suite's config block."""

from __future__ import annotations

import pytest

from qid import QidError
from qid.fetch import checkpoint_meta


def test_d_is_the_step_times_the_sizes_or_the_suites_tokens_per_step():
    spec = {"tokens_per_step": 2_097_152, "sizes": {"70m": {"n_params": 18_915_328}}}
    meta = checkpoint_meta(spec, "pythia", "70m", 1000)
    assert meta == {
        "suite": "pythia",
        "size": "70m",
        "step": 1000,
        "tokens": 2_097_152_000,
        "tokens_per_step": 2_097_152,
        "n_params": 18_915_328,
    }
    spec["sizes"]["70m"]["tokens_per_step"] = 1024
    assert checkpoint_meta(spec, "pythia", "70m", 3)["tokens"] == 3072
    assert checkpoint_meta(spec, "pythia", "160m", 3)["n_params"] is None


def test_a_suite_without_tokens_per_step_is_refused_by_name():
    with pytest.raises(QidError, match="suite 'x' gives no tokens_per_step: D would be unknown"):
        checkpoint_meta({"sizes": {}}, "x", "s", 1)
