"""Quantization methods: a registry of what each method supports, and the entry point of a cell.

The registry is read when the Snakefile is parsed (to reject method/bit-width pairs before any
job runs), so it imports no backend library; each backend module is imported only when used.
A backend module exposes

    quantize(checkpoint: Path, out: Path, bits: int, options: dict, calibration: list[str] | None)
        -> dict          # extra fields for the cell's JSON record
    load(path: Path) -> transformers.PreTrainedModel   # reload the saved quantized checkpoint
    check(model, bits: int, options: dict) -> None   # optional: refuse (QidError, one line) what
                     # cannot work on this architecture; `model` is on the meta device (no weights)
    check_layers(layers, bits, options, where) -> None   # optional: the width rules alone, for
                     # widths a config fixes (trained suites), checked at the dry run
    dequantize(model) -> model   # optional: packed layers -> nn.Linear with dequantized weights
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from qid import QidError
from qid.strict_json import dumps


@dataclass(frozen=True)
class Calibration:
    """A calibration set's size: texts, and tokens per text."""

    n_texts: int
    length: int


@dataclass(frozen=True)
class Option:
    """An option a method's config block may set: the value its backend uses when the config
    gives none, the JSON schema of a value (`qid.config` adds it to the config schema as
    `methods.<method>.<option>`) and what it does. The default stays out of the schema so that a
    config's options, and so the cells' settings, are what the user wrote."""

    default: Any
    schema: dict
    description: str


# Input columns per scale, 128 as GPTQModel's QuantizeConfig and llm-compressor's AWQ presets.
GROUP_SIZE = Option(
    128,
    {"type": "integer", "minimum": -1},
    "input columns per quantization group; -1 = one per row",
)
AWQ_MAPPINGS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["smooth", "balance"],
        "properties": {
            "smooth": {"type": "string", "minLength": 1},
            "balance": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
            },
        },
    },
}


@dataclass(frozen=True)
class Method:
    name: str
    bits: tuple[int, ...]
    calibration: bool
    module: str
    doc: str
    # What the method's library recommends, used where the user gives no calibration: GPTQModel
    # warns below 256 samples or an average under 256 tokens; llm-compressor's AWQ examples
    # calibrate on 256 samples of 512 tokens.
    recommended: Calibration | None = None
    # Whether a width the group size does not divide is quantized with a shorter last group
    # (True) or refused (False); None: the method has no groups.
    partial_groups: bool | None = None
    # The options of its config block besides `bits` and `threads`, by name.
    options: dict[str, Option] = field(default_factory=dict, hash=False)

    @property
    def group_size(self) -> int | None:
        """The group size when a config gives none (None: no groups)."""
        return self.options["group_size"].default if "group_size" in self.options else None

    def option(self, options: dict[str, Any], name: str) -> Any:
        """Option `name` of a cell's `options`, else the method's default for it."""
        return options.get(name, self.options[name].default)

    def backend(self) -> ModuleType:
        return importlib.import_module(self.module)


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "rtn",
            (2, 3, 4, 5, 6, 7, 8),
            False,
            "qid.quantize.rtn",
            "round-to-nearest, per-group asymmetric (ours)",
            partial_groups=True,
            options={
                "group_size": GROUP_SIZE,
                "quantize_head": Option(
                    False,
                    {"type": "boolean"},
                    "quantize the output head too (default false: it stays 16-bit, as GPTQ, AWQ "
                    "and bitsandbytes leave it; a head tied to the input embeddings quantizes "
                    "them too)",
                ),
            },
        ),
        Method(
            "gptq",
            (2, 3, 4, 8),
            True,
            "qid.quantize.gptq",
            "GPTQ through GPTQModel",
            Calibration(256, 256),
            partial_groups=True,
            options={
                "group_size": GROUP_SIZE,
                "desc_act": Option(
                    False,
                    {"type": "boolean"},
                    "quantize columns in order of decreasing activation (act-order)",
                ),
                "damp_percent": Option(
                    0.01,
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "dampening added to the Hessian's diagonal, as a fraction of its mean",
                ),
                "symmetric": Option(True, {"type": "boolean"}, "symmetric integer weights"),
            },
        ),
        Method(
            "released",
            (2, 3, 4),
            False,
            "qid.quantize.released",
            "the paper authors' GPTQ checkpoints, fetched from the hub",
            options={
                "repo": Option(
                    "Xu-Ouyang/pythia-{size}-int{bits}-step{step}-GPTQ-wikitext2",
                    {"type": "string"},
                    "hub repo of a cell's checkpoint, `{size}`/`{step}`/`{bits}` filled in",
                ),
                "revision": Option("main", {"type": "string"}, "revision of that repo"),
                "cache_dir": Option(
                    None, {"type": ["string", "null"]}, "the HF cache to fetch into"
                ),
            },
        ),
        # The bit widths qid.quantize.awq.SUPPORTED_BITS lists (not imported: see above).
        Method(
            "awq",
            (2, 3, 4, 5, 6, 7, 8),
            True,
            "qid.quantize.awq",
            "AWQ through llm-compressor",
            Calibration(256, 512),
            partial_groups=False,
            options={
                "group_size": GROUP_SIZE,
                "duo_scaling": Option(
                    True,
                    {"type": "boolean"},
                    "scales from activations and weights (true, llm-compressor's default) or "
                    "from activations alone (false)",
                ),
                "n_grid": Option(
                    20,
                    {"type": "integer", "minimum": 3},
                    "points of the per-layer grid search over the scaling exponent "
                    "(llm-compressor's default 20)",
                ),
                "mappings": Option(
                    None,
                    AWQ_MAPPINGS,
                    "which module's output AWQ scales (smooth) and the linear layers reading it "
                    "that absorb the inverse scales (balance), as regexes matched from the start "
                    'of full module names (e.g. {smooth: ".*post_attention_layernorm$", balance: '
                    "[\".*up_proj$\"]}). Default: qid's for GPT-NeoX, else llm-compressor's for "
                    "the architecture.",
                ),
            },
        ),
        Method("bnb_nf4", (4,), False, "qid.quantize.bnb", "bitsandbytes 4-bit NormalFloat"),
        Method("bnb_fp4", (4,), False, "qid.quantize.bnb", "bitsandbytes 4-bit float"),
    ]
}


class UnknownMethodError(QidError):
    pass


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise UnknownMethodError(f"unknown quantization method {name!r} (known: {known})") from None


def check_bits(name: str, bits: int) -> None:
    method = get_method(name)
    if bits not in method.bits:
        raise QidError(
            f"method {name!r} does not support {bits}-bit weights "
            f"(supported: {', '.join(map(str, method.bits))})"
        )


def check_widths(method: str, bits: list[int], options: dict, layers: list, where: str) -> None:
    """A method's group size and bit widths against known layer widths (`layers.Layer`s of
    `where`), without a model: the backend's `check_layers` where it has width rules of its own,
    else the group size against the method's `partial_groups`."""
    spec = get_method(method)
    options = {**options, "method": method}
    options.setdefault("group_size", spec.group_size)
    backend = spec.backend()  # backend modules import no library at the top
    if hasattr(backend, "check_layers"):
        for b in bits:
            backend.check_layers(layers, b, options, where)
    elif options["group_size"] is not None and spec.partial_groups is not None:
        from qid.quantize.layers import check_group_size

        check_group_size(layers, options["group_size"], method, spec.partial_groups, f" of {where}")


def preflight(method: str, bits: int, options: dict[str, Any], checkpoint: Path) -> None:
    """Refuse, in one line, a cell that cannot work on `checkpoint` before any weights load: the
    backend's `check` sees the architecture built from its config on the meta device."""
    from qid.checkpoints import open_checkpoint

    check_bits(method, bits)
    checkpoint = open_checkpoint(checkpoint, weights=False)  # the architecture needs no weights
    backend = get_method(method).backend()
    if hasattr(backend, "check"):
        from qid.quantize.layers import meta_model

        backend.check(meta_model(checkpoint), bits, {**options, "method": method})


def quantize_cell(
    checkpoint: Path,
    out: Path,
    record: Path,
    method: str,
    bits: int,
    options: dict[str, Any],
    calibration: list[str] | None,
) -> dict[str, Any]:
    """Quantize one checkpoint with one (method, bits); write the checkpoint and its JSON record.

    The quantized files get the mode the umask gives (`qid.checkpoints.share`)."""
    from qid.checkpoints import open_checkpoint, share

    preflight(method, bits, options, checkpoint)
    checkpoint = open_checkpoint(checkpoint)  # its weights, before a backend loads them
    spec = get_method(method)
    if spec.calibration and not calibration:
        raise QidError(f"method {method!r} needs calibration texts, none were given")
    options = {**options, "method": method}
    start = time.perf_counter()
    extra = spec.backend().quantize(
        Path(checkpoint), Path(out), bits, options, calibration if spec.calibration else None
    )
    if extra.get("quantized_layers") == 0:
        raise QidError(
            f"{method} quantized no layer of {checkpoint}: no linear map was found in its decoder "
            f"blocks (left alone: {', '.join(extra.get('skipped_layers', {})) or 'nothing'})"
        )
    share(Path(out))
    info = {
        "method": method,
        "bits": bits,
        "group_size": options.get("group_size"),
        "options": {k: v for k, v in options.items() if k != "method"},
        "checkpoint": str(checkpoint),
        "output": str(out),
        "seconds": round(time.perf_counter() - start, 3),
        "size_bytes": sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file()),
        **extra,
    }
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    Path(record).write_text(dumps(info, indent=2) + "\n")
    return info


def load_quantized(method: str, path: Path, fake_quant: bool = False):
    """Load a quantized checkpoint written by `quantize_cell` for evaluation; with `fake_quant`,
    as a plain model holding the dequantized weights (backends storing packed weights expose
    `dequantize(model)`; the others store dequantized weights already)."""
    backend = get_method(method).backend()
    model = backend.load(Path(path))
    if fake_quant and hasattr(backend, "dequantize"):
        model = backend.dequantize(model)
    return model
