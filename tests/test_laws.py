import json
import warnings

import numpy as np
import pandas as pd
import pytest

from qid import QidError
from qid.diagnose import check_range
from qid.laws import PUBLISHED, UnifiedLaw, fit_all, fit_law, outside, unified_from_fit
from qid.laws.fit import _param
from qid.strict_json import dumps

TRUE = UnifiedLaw(k=0.05, alpha=0.3, beta=0.6, gamma=4.0)


def synthetic(law: UnifiedLaw, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "n_params": n,
            "tokens": d,
            "bits": b,
            "method": "m",
            "eval_set": "e",
            "qid": law.qid(n, d, b) * np.exp(rng.normal(0, noise)),
        }
        for n in (1e5, 1e6, 1e7)
        for d in np.geomspace(1e6, 1e9, 6)
        for b in (2, 3, 4)
    ]
    return pd.DataFrame(rows)


def test_unified_fit_recovers_known_parameters():
    fit = fit_all(synthetic(TRUE, noise=0.05))["unified"]
    for name in ("alpha", "beta", "gamma"):
        assert fit["params"][name]["value"] == pytest.approx(getattr(TRUE, name), abs=0.05)
    assert fit["params"]["k"]["value"] == pytest.approx(TRUE.k, rel=0.3)
    assert fit["r2_log"] > 0.99
    assert fit["n_points"] == 54 and fit["n_excluded"] == 0


def test_confidence_intervals_cover_the_truth_at_their_level():
    hits = {name: 0 for name in ("k", "alpha", "beta", "gamma")}
    for seed in range(40):
        params = fit_law(synthetic(TRUE, noise=0.05, seed=seed), "unified")["params"]
        for name in hits:
            hits[name] += params[name]["ci_low"] < getattr(TRUE, name) < params[name]["ci_high"]
    assert all(33 <= h for h in hits.values()), hits  # 95% intervals: expect ~38 of 40


def test_single_factor_fits_share_the_exponent():
    fits = fit_all(synthetic(TRUE, noise=0.02))
    assert fits["tokens"]["params"]["beta"]["value"] == pytest.approx(TRUE.beta, abs=0.02)
    assert fits["size"]["params"]["alpha"]["value"] == pytest.approx(TRUE.alpha, abs=0.02)
    assert fits["bits"]["params"]["gamma"]["value"] == pytest.approx(TRUE.gamma, abs=0.1)
    # Eq. (5) has one coefficient per (N, P): 3 sizes x 3 bit widths.
    assert len(fits["tokens"]["coefficients"]) == 9


def test_fit_counts_rows_it_cannot_use():
    table = synthetic(TRUE, noise=0.0)
    table.loc[:4, "qid"] = [-0.01, 0.0, np.nan, np.inf, -1e-5]
    fit = fit_law(table, "unified")
    assert (fit["n_points"], fit["n_excluded"]) == (49, 5)
    assert fit["params"]["beta"]["value"] == pytest.approx(TRUE.beta, abs=1e-6)


def test_one_bit_width_fixes_gamma_and_skips_the_bits_law():
    table = synthetic(TRUE, noise=0.01)
    fits = fit_all(table[table.bits == 3])
    assert fits["unified"]["fixed"] == {"gamma": 0.0}
    assert "gamma" not in fits["unified"]["params"]
    assert "skipped" in fits["bits"]


def test_tokens_for_inverts_qid():
    n, bits = np.array([1e8, 7e9, 4.05e11]), np.array([2, 3, 4])
    tokens = np.array([1e10, 1e12, 1e14])
    for law in (TRUE, PUBLISHED, UnifiedLaw(k=0.2, alpha=0.1, beta=0.5)):
        assert law.tokens_for(law.qid(n, tokens, bits), n, bits) == pytest.approx(tokens, rel=1e-9)


def test_gamma_zero_is_a_one_bit_width_law():
    law = UnifiedLaw(k=0.1, alpha=0.2, beta=0.5)
    assert law.qid(1e6, 1e9, 2) == law.qid(1e6, 1e9, 4) == law.qid(1e6, 1e9)


def test_fit_all_names_missing_columns_and_ambiguous_rows():
    with pytest.raises(QidError, match="lacks column.*n_params"):
        fit_all(pd.DataFrame({"qid": [0.1], "tokens": [1], "bits": [2]}))
    two = pd.concat([synthetic(TRUE, 0.01), synthetic(TRUE, 0.01).assign(method="other")])
    with pytest.raises(QidError, match="several values of method.*--method"):
        fit_all(two)
    with pytest.raises(QidError, match="method 'gptq' is not in the table"):
        fit_all(two, method="gptq")
    assert fit_all(two, method="other")["meta"]["method"] == "other"


def test_weighting_by_the_standard_error_beats_ignoring_it():
    """Rows at the noise floor (large qid_se) must not outvote the rows that carry the signal."""
    errors = {True: 0.0, False: 0.0}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        table = synthetic(TRUE, noise=0.0)
        sigma = np.where(table.bits == 4, 0.8, 0.02)  # log-space noise per row
        table["qid"] *= np.exp(rng.normal(0, sigma))
        table["qid_se"] = table.qid * sigma
        for weighted in errors:
            fit = fit_law(table, "unified", weighted=weighted)
            assert fit["weighted"] is weighted
            errors[weighted] += abs(fit["params"]["alpha"]["value"] - TRUE.alpha)
    assert errors[True] < 0.5 * errors[False], errors


def two_methods_two_suites() -> pd.DataFrame:
    """Method "m" at 2-4 bits and "other" at 4 bits only, each in suites "a" and "b"."""
    m = synthetic(TRUE, noise=0.05)
    other = synthetic(TRUE, noise=0.05, seed=1).assign(method="other")
    table = pd.concat([m, other[other.bits == 4]], ignore_index=True)
    suite_b = table.assign(n_params=table.n_params * 2, qid=table.qid * 0.9)
    return pd.concat([table.assign(suite="a"), suite_b.assign(suite="b")], ignore_index=True)


def _finite_params(fit: dict) -> bool:
    return all(np.isfinite(p["value"]) for p in fit["params"].values())


def test_fit_all_writes_the_per_method_and_held_out_suite_laws():
    table = two_methods_two_suites()
    table["flag"] = np.where((table.method == "other") & (table.tokens == 1e9), "loss_rise:x", "")
    fits = fit_all(table, method="m", confidence=0.9, weighted=False, starts=2)
    assert set(fits["by_method"]) == {"4"} and set(fits["by_method"]["4"]) == {"m", "other"}
    for fit in [*fits["by_method"]["4"].values(), *fits["suite_transfer"].values()]:
        assert _finite_params(fit) and unified_from_fit(fit).qid(1e6, 1e8) > 0
        assert fit["confidence"] == 0.9 and fit["weighted"] is False
    # The per-method fits see every method on the eval set, less the rows fit_all leaves out.
    assert fits["by_method"]["4"]["other"]["n_points"] == 2 * 3 * 5
    assert fits["by_method"]["4"]["m"]["fixed"] == {"gamma": 0.0}
    # Eq. (8) without suite "a" is fitted on suite "b" alone (method "m", 3 bit widths).
    assert set(fits["suite_transfer"]) == {"a", "b"}
    assert fits["suite_transfer"]["a"]["range"]["n_params"] == [2e5, 2e7]
    assert fits["suite_transfer"]["a"]["n_points"] == 54


def test_one_suite_and_one_method_per_width_give_empty_side_fits():
    fits = fit_all(synthetic(TRUE, noise=0.05).assign(suite="a"))
    assert fits["by_method"] == {} and fits["suite_transfer"] == {}


def test_a_wide_coefficient_interval_is_inf_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = _param(2.0, 400.0, 2.0, log=True)
    assert p["ci_high"] == np.inf and p["ci_low"] == 0.0 and p["value"] == np.exp(2.0)
    assert json.loads(dumps(p))["ci_high"] is None


def test_one_range_check_for_table1_and_diagnose():
    fit = {"range": {"n_params": [1e6, 1e8], "tokens": [1e9, 1e10], "bits": [2.0, 4.0]}}
    assert outside(fit, n_params=1e7, tokens=1e9, bits=2) == {}
    assert outside(fit, bits=8, n_params=1e9) == {"bits": (2.0, 4.0), "n_params": (1e6, 1e8)}
    assert outside({}, n_params=1e12) == {}
    assert check_range(fit, True, bits=8) == [
        "P = 8 is outside the range the law was fitted on (P in [2, 4])"
    ]


def floor_table(noise: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """TRUE's cells with additive Gaussian noise of `noise` times each cell's qid_se, the se
    set so that most 4-bit cells sit at the noise floor (several <= 0)."""
    table = synthetic(TRUE, noise=0.0, seed=seed)
    rng = np.random.default_rng(seed)
    se = float(table.qid[table.bits == 4].median()) * rng.uniform(0.5, 1.5, len(table))
    return table.assign(qid=table.qid + rng.normal(0, noise * se), qid_se=se)


def test_se_likelihood_fits_every_cell_and_the_default_is_unchanged():
    table = floor_table()
    log, se = fit_all(table), fit_all(table, likelihood="se")
    assert log["unified"]["n_excluded"] == (table.qid <= 0).sum() > 0
    assert "likelihood" not in log["unified"] and "excess" not in log["unified"]
    u = se["unified"]
    assert u["likelihood"] == "se" and u["n_excluded"] == 0
    assert u["n_nonpositive"] == (table.qid <= 0).sum()
    assert set(u["excess"]) == {"phi", "s"} and "covariance" in u
    for name in ("alpha", "beta", "gamma"):
        p = u["params"][name]
        assert p["ci_low"] < getattr(TRUE, name) < p["ci_high"]
    assert all(f["likelihood"] == "se" for f in se["by_bits"].values())


def test_se_likelihood_needs_the_standard_errors():
    with pytest.raises(QidError, match="qid_se"):
        fit_law(synthetic(TRUE, noise=0.05), "unified", likelihood="se")
    with pytest.raises(QidError, match="likelihood"):
        fit_law(floor_table(), "unified", likelihood="tobit")


def test_se_likelihood_measures_noise_beyond_the_standard_errors():
    # Noise 3x the stated se: phi = sqrt(3^2 - 1) = 2.8 (measured 2.66; maximum likelihood
    # runs a little low), and the intervals widen to match (measured 2.7x).
    exact, over = (fit_law(floor_table(n), "unified", likelihood="se") for n in (1, 3))
    assert exact["excess"]["phi"] < 1.0 < 2.0 < over["excess"]["phi"] < 4.0
    assert over["params"]["gamma"]["stderr"] > 2 * exact["params"]["gamma"]["stderr"]


def test_se_likelihood_bootstrap_brackets_the_point_fit():
    fit = fit_law(floor_table(), "unified", likelihood="se", bootstrap=200, seed=1)
    boot = fit["bootstrap"]
    assert boot["n"] == 200 and boot["n_failed"] == 0
    for name in ("alpha", "beta", "gamma"):
        assert boot["params"][name]["low"] < fit["params"][name]["value"]
        assert fit["params"][name]["value"] < boot["params"][name]["high"]


def test_se_single_factor_law_keeps_its_interval_when_a_group_sits_at_the_floor():
    # One (N, P) group of Eq. (5) entirely below 0: its coefficient runs to 0, where the fit no
    # longer depends on it; it is held there (no interval) and beta keeps a finite one.
    table = floor_table()
    floor = (table.n_params == 1e7) & (table.bits == 4)
    table.loc[floor, "qid"] = -table.loc[floor, "qid_se"]
    fit = fit_law(table, "tokens", likelihood="se")
    beta = fit["params"]["beta"]
    assert np.isfinite(beta["stderr"]) and beta["ci_low"] < TRUE.beta < beta["ci_high"]
    lost = [c for c in fit["coefficients"] if not np.isfinite(c["stderr"])]
    assert [(c["n_params"], c["bits"]) for c in lost] == [(1e7, 4)]
