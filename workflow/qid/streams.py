"""Standard streams: keep stdout for a command's own output (`qid diagnose --json`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout to stderr for the duration, at the file-descriptor
    level: GPTQModel, LogBar, llm-compressor and tqdm write to fd 1, to `sys.stdout` or to a
    stream they captured at import, and `--json` promises a stdout holding the document alone."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 to move (closed): the Python-level swap still applies
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
