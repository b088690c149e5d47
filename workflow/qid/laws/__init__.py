"""The paper's QiD scaling laws, in rooms:

- equations: the law forms (Eq. 3, 5-8) as pure math.
- paper: every number the paper prints, once, with where.
- fit (with minimize, bootstrap): one law fitted to rows; exclude: the rows no fit uses;
  validate: held-out errors; forms, compare: rival forms side by side; fits: everything
  `qid fit` writes (fit_all).
- predict: laws, draws and intervals from fits; the range check.
"""

from qid.laws.compare import compare_forms
from qid.laws.equations import LAWS, Loss16Law, UnifiedLaw
from qid.laws.fit import fit_law, fit_loss16, log_weights, usable
from qid.laws.fits import bits_key, fit_all, fit_by
from qid.laws.forms import FORMS
from qid.laws.paper import PUBLISHED, PUBLISHED_FIT, PUBLISHED_LOSS16, PUBLISHED_RANGE
from qid.laws.predict import (
    draws_law,
    interval,
    loss16_from_fit,
    loss_q,
    outside,
    parameter_draws,
    predict_ci,
    unified_from_fit,
)
from qid.laws.validate import validate

__all__ = [
    "FORMS",
    "LAWS",
    "PUBLISHED",
    "PUBLISHED_FIT",
    "PUBLISHED_LOSS16",
    "PUBLISHED_RANGE",
    "Loss16Law",
    "UnifiedLaw",
    "bits_key",
    "compare_forms",
    "draws_law",
    "fit_all",
    "fit_by",
    "fit_law",
    "fit_loss16",
    "interval",
    "log_weights",
    "loss16_from_fit",
    "loss_q",
    "outside",
    "parameter_draws",
    "predict_ci",
    "unified_from_fit",
    "usable",
    "validate",
]
