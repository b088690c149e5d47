"""Every number the paper prints that qid uses, once, with where it is printed (Ouyang et al.
2024; transcribed in ../shared/facts.md). Code compares against these; nothing else holds them."""

from __future__ import annotations

from qid.laws.equations import DRAW_NAMES, Loss16Law, UnifiedLaw

# Fig. 6: Eq. (8) fitted on GPTQ-quantized Pythia.
PUBLISHED = UnifiedLaw(k=0.017, alpha=0.2261, beta=0.5251, gamma=5.4967)

# What Fig. 6 was fitted on: Pythia 160m..12b non-embedding parameters, steps 512..98000 of
# 2,097,152 tokens each, GPTQ at 2..4 bits.
PYTHIA_STEP_TOKENS = 2_097_152
PUBLISHED_RANGE = {
    "n_params": [85_056_000.0, 11_327_027_200.0],
    "tokens": [512 * float(PYTHIA_STEP_TOKENS), 98_000 * float(PYTHIA_STEP_TOKENS)],
    "bits": [2.0, 4.0],
}
# The same range as the summary words it (tests/test_report.py checks it against the numbers).
PUBLISHED_DATA = "GPTQ on Pythia (N 85M–11.3B non-embedding parameters, D 1.1B–206B tokens)"

# The published law in the shape of a fit (no uncertainty: the paper gives none).
PUBLISHED_FIT = {
    "params": {name: {"value": getattr(PUBLISHED, name)} for name in DRAW_NAMES},
    "range": PUBLISHED_RANGE,
    "source": "published (Ouyang et al. 2024, Fig. 6)",
}

# Figs. 3-5: the single-factor laws' exponents, Eq. (5)-(7): law -> (exponent, value).
SINGLE_FACTOR = {"tokens": ("beta", 0.5316), "size": ("alpha", 0.2276), "bits": ("gamma", 5.4812)}

# Fig. 7: Eq. (3) fitted on Pythia, ((4.74e19 / N)^(0.045 / 0.399) + 7.63e10 / D)^0.399.
PUBLISHED_LOSS16 = Loss16Law(nc=4.74e19, dc=7.63e10, alpha_n=0.045, alpha_d=0.399)

# Table 1: the training tokens (trillions) at which QiD reaches each level. Rows: nominal
# parameter counts; columns: QiD levels (Sec. 4.2's grades of "fully trained") x bit widths.
SIZES = {"1B": 1e9, "7B": 7e9, "70B": 70e9, "405B": 405e9}
LEVELS = (0.2, 0.3, 0.4, 0.5)
BITS = (2, 3, 4)
# As printed: per model, one (2, 3, 4 bits) triple per QiD level in LEVELS.
TABLE1 = {
    "1B": [
        (0.0011, 0.1089, 1.4424),
        (0.0025, 0.1990, 2.6786),
        (0.0043, 0.3051, 4.1556),
        (0.0066, 0.4251, 5.8422),
    ],
    "7B": [
        (0.0026, 0.3038, 4.5066),
        (0.0057, 0.5550, 8.3689),
        (0.0099, 0.8512, 12.9836),
        (0.0152, 1.1860, 18.2531),
    ],
    "70B": [
        (0.0071, 1.0228, 17.3499),
        (0.0154, 1.8687, 32.2192),
        (0.0267, 2.8659, 49.9854),
        (0.0409, 3.9932, 70.2723),
    ],
    "405B": [
        (0.0151, 2.5807, 48.4861),
        (0.0328, 4.7151, 90.0398),
        (0.0567, 7.2311, 139.6892),
        (0.0868, 10.0754, 196.3829),
    ],
}


def paper_value(model: str, level: float, bits: int) -> float:
    """The printed entry of Table 1 (trillions of tokens)."""
    return TABLE1[model][LEVELS.index(level)][BITS.index(bits)]


# Fig. 1: projected models (nominal parameter counts, as labelled), its token axis and widths.
FIG1_MODELS = {"7B": 7e9, "70B": 70e9, "405B": 405e9}
FIG1_TOKENS = (1e9, 1e14)
FIG1_BITS = (2, 3, 4)
LLAMA3_VOCAB = 128_256  # Llama-3's vocabulary, the paper's reference tokenizer (Appendix A.1)
