"""qid: quantization-induced degradation (QiD) and its scaling laws (Ouyang et al., 2024)."""

__version__ = "0.1.0"


class QidError(ValueError):
    """A bad input (config key, method, bit width, path): reported as one line, no traceback."""
