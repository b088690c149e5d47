import numpy as np
import pandas as pd

from qid.laws import PUBLISHED, PUBLISHED_RANGE, UnifiedLaw, fit_all
from qid.laws.paper import PUBLISHED_DATA
from qid.report import summary

TRUE = UnifiedLaw(k=0.05, alpha=0.3, beta=0.6, gamma=4.0)


def test_summary_puts_our_fit_beside_the_papers_numbers():
    rng = np.random.default_rng(0)
    rows = [
        {
            "n_params": n,
            "tokens": d,
            "bits": b,
            "qid": TRUE.qid(n, d, b) * rng.lognormal(0, 0.05),
            "qid_se": 1e-4,
        }
        for n in (1e5, 1e6, 1e7)
        for d in np.geomspace(1e6, 1e9, 5)
        for b in (2, 3, 4)
    ]
    fits = fit_all(pd.DataFrame(rows), bootstrap=200, validation=True)
    text = summary(fits)
    beta = fits["unified"]["params"]["beta"]["value"]
    assert f"| beta | {beta:.4g} |" in text
    assert f"{PUBLISHED.beta:g} |" in text and "0.5316" in text  # joint and single-factor paper
    assert "bootstrap, 200 resamples" in text
    assert "Held-out validation" in text and "n_params=100000" in text
    assert "## Eq. (8) per bit width" in text
    assert "Not fitted: the table has no loss_16" in text
    assert "Largest relative deviation over the 16 cells" in text


def test_the_papers_data_in_words_matches_its_range():
    (n_lo, n_hi), (d_lo, d_hi) = PUBLISHED_RANGE["n_params"], PUBLISHED_RANGE["tokens"]
    words = f"N {n_lo / 1e6:.0f}M–{n_hi / 1e9:.3g}B non-embedding parameters, "
    words += f"D {d_lo / 1e9:.2g}B–{d_hi / 1e9:.0f}B tokens"
    assert words in PUBLISHED_DATA
