"""What each command imports to run: a job's fixed cost, made measurable (issue 14).

Each command's module registers, beside its handler, a function of the parsed arguments that
lists the modules the command loads when it runs (`s.set_defaults(needs=...)`), in the order
it loads them. An entry is

    "module"        imported;
    "module:Name"   imported, then `Name` read from it (transformers builds its classes lazily:
                    `from transformers import GPTNeoXForCausalLM` is where the cost is paid);
    "-module"       kept out of the process: marked absent in `sys.modules`, so that libraries
                    which probe for it (`importlib.util.find_spec`) find it missing.

With QID_IMPORT_ONLY=1 in the environment, `qid <command> ...` parses its arguments, applies
these entries and exits 0: the process start-up, the parse and the imports of a real job, no
work. benchmarks/fixed_cost.py times it against `python -c "import torch"`; tests/test_fixed_cost.py
checks which libraries it loads. A real run applies the keep-out entries only (the command's
own code imports the rest, each backend in its own order: GPTQModel's banner goes to stderr,
bitsandbytes' warning filter is set before it loads).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable

IMPORT_ONLY = "QID_IMPORT_ONLY"

# transformers imports torchao whenever it is installed (its torchao quantizer, loaded with
# every model class), ~0.4 s and a Triton probe per job; GPTQModel installs it. qid loads no
# torchao-quantized checkpoint, so the commands that quantize with neither GPTQ nor AWQ keep it
# out (transformers then reports torchao unavailable, as on a machine without it).
NO_TORCHAO = "-torchao"

# What every 16-bit or quantized model load reaches: the tokenizer, then the model classes
# (`from_pretrained` imports transformers.modeling_utils and the architecture's module).
MODEL = (
    "torch",
    "qid.evaluate",
    "qid.checkpoints",
    "qid.bitnet",
    "transformers:AutoTokenizer",
    "transformers:AutoModelForCausalLM",
    "transformers.modeling_utils",
)

# The library each quantization backend module imports when it quantizes or loads a cell.
BACKEND_LIBRARIES = {
    "qid.quantize.gptq": ("gptqmodel",),
    "qid.quantize.awq": ("llmcompressor",),
    "qid.quantize.bnb": ("bitsandbytes",),
}
NEEDS_TORCHAO = ("qid.quantize.gptq", "qid.quantize.awq")  # GPTQModel and llm-compressor use it


def methods(names: Iterable[str]) -> list[str]:
    """The entries of the quantization methods `names`: each backend module, then its library;
    torchao kept out when none of them needs it. An unknown name adds nothing (the command
    itself refuses it, in one line)."""
    from qid.quantize import METHODS

    backends = list(dict.fromkeys(METHODS[m].module for m in names if m in METHODS))
    keep_out = [] if any(b in NEEDS_TORCHAO for b in backends) else [NO_TORCHAO]
    libraries = [lib for b in backends for lib in BACKEND_LIBRARIES.get(b, ())]
    return keep_out + ["qid.quantize", *backends, *libraries]


def keep_out(entries: Iterable[str]) -> None:
    """Mark the "-module" entries absent, unless the module is already loaded."""
    for entry in entries:
        if entry.startswith("-"):
            sys.modules.setdefault(entry[1:], None)  # find_spec -> None, import -> ImportError


def load(entries: Iterable[str]) -> None:
    """Apply every entry: keep-outs first, then the imports in order."""
    entries = list(entries)
    keep_out(entries)
    for entry in entries:
        if entry.startswith("-"):
            continue
        module, _, name = entry.partition(":")
        loaded = importlib.import_module(module)
        if name:
            getattr(loaded, name)


def import_only() -> bool:
    return os.environ.get(IMPORT_ONLY, "") not in ("", "0")
