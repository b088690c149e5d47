"""The laws as equations: pure math, no data and no fitting.

Eq. (5) qid = b D^beta,  Eq. (6) qid = a / N^alpha,  Eq. (7) qid = c / P^gamma,
Eq. (8) qid = k D^beta / (N^alpha P^gamma),  Eq. (3) loss16 = ((Nc/N)^(aN/aD) + Dc/D)^aD.
All the QiD laws are linear in log space: log qid = log coef + beta log D - ...
A single-factor law shares its exponent across the data and gives each combination of the other
two factors its own coefficient (e.g. Eq. 5: one b per (N, P), one beta for all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnifiedLaw:
    """Eq. (8). With gamma = 0 it is a law for one bit width (P drops out)."""

    k: float
    alpha: float
    beta: float
    gamma: float = 0.0

    def qid(self, n, tokens, bits=1.0):
        """Predicted QiD (nats) of a model with `n` non-embedding parameters trained on `tokens`
        tokens, quantized to `bits` bits."""
        return (
            self.k
            * np.power(tokens, self.beta)
            / (np.power(n, self.alpha) * np.power(bits, self.gamma))
        )

    def tokens_for(self, qid, n, bits=1.0):
        """Training tokens at which the model reaches `qid` (the inverse; Table 1's question)."""
        return np.power(
            np.asarray(qid) * np.power(n, self.alpha) * np.power(bits, self.gamma) / self.k,
            1.0 / self.beta,
        )


# UnifiedLaw's parameters in the order fits and draws store them.
DRAW_NAMES = ["k", "alpha", "beta", "gamma"]

# law name -> coefficient name, {exponent: (column, sign in log space)}, grouping columns
LAWS: dict[str, tuple[str, dict[str, tuple[str, int]], list[str]]] = {
    "unified": ("k", {"beta": ("tokens", 1), "alpha": ("n_params", -1), "gamma": ("bits", -1)}, []),
    "tokens": ("b", {"beta": ("tokens", 1)}, ["n_params", "bits"]),
    "size": ("a", {"alpha": ("n_params", -1)}, ["tokens", "bits"]),
    "bits": ("c", {"gamma": ("bits", -1)}, ["n_params", "tokens"]),
}


@dataclass(frozen=True)
class Loss16Law:
    """Eq. (3): loss16(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD, the 16-bit loss in nats of a model
    with N non-embedding parameters trained on D tokens (no irreducible term, as in the paper)."""

    nc: float
    dc: float
    alpha_n: float
    alpha_d: float

    def loss(self, n, tokens):
        return np.exp(
            log_loss16(
                np.log(self.nc),
                np.log(self.dc),
                self.alpha_n,
                self.alpha_d,
                np.log(n),
                np.log(tokens),
            )
        )


def log_loss16(log_nc, log_dc, alpha_n, alpha_d, log_n, log_d):
    """log of Eq. (3) in the log parameters its fit uses."""
    # logaddexp keeps the sum of the two terms finite when either is huge (Nc ~ 1e19).
    return alpha_d * np.logaddexp(alpha_n / alpha_d * (log_nc - log_n), log_dc - log_d)
