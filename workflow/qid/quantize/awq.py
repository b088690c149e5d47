"""AWQ (activation-aware weight quantization) through llm-compressor's own API.

`llmcompressor.oneshot` runs two modifiers on the fp32 checkpoint, on CPU: `AWQModifier` searches
per-channel scales from the calibration activations and folds them into the weights (and their
inverse into the preceding LayerNorm or Linear; which feeds which are the "mappings", see
`resolve_mappings`), then `QuantizationModifier` quantizes the linear maps of the decoder blocks
(`qid.quantize.layers.survey`, named one by one) with per-group asymmetric integer weights
(min-max scales and zero points). The
result is saved with `save_pretrained(save_compressed=True)`: the compressed-tensors
"pack-quantized" format (weights packed into int32, fp32 scales, int zero points), the format
vLLM serves. transformers has no packed int kernel for it, so `load` decompresses the weights as
the checkpoint loads: the reloaded model is an ordinary fp32 model whose Linear weights are the
dequantized ones, i.e. evaluation is by dequantized weights (fake-quant) on CPU and GPU alike.
Embeddings and the output head stay fp32.

AutoAWQ, the library of the paper's era, is deprecated; its work moved into llm-compressor. Two
differences remain: llm-compressor has no weight-clipping search (AutoAWQ's auto_clip) and no
scaling of dense_4h_to_h (see MAPPINGS).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from qid import QidError
from qid.quantize import METHODS
from qid.quantize import layers as found
from qid.streams import stdout_to_stderr

if TYPE_CHECKING:
    from transformers import PreTrainedModel

AWQ = METHODS["awq"]
DEFAULT_CALIBRATION_LENGTH = 128
# Bit widths run end to end here (quantize, save packed, reload, loss): compressed-tensors packs
# 1 to 8 bits into int32 and AWQ's grid search is bit-agnostic (1 bit also runs, but two levels
# per group is not a setting AWQ is meant for). The fast packed AWQ GPU kernels (AutoAWQ's GEMM,
# vLLM's Marlin) are 4-bit only; this storage does not depend on them.
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)

# GPT-NeoX layer mappings (llm-compressor's registry has none for it): each LayerNorm's output
# feeds exactly one Linear layer, so AWQ can divide the LayerNorm's weight and
# bias by the scales s and multiply that Linear's input columns by s without changing the
# function. With GPT-NeoX's parallel residual (Pythia's default) both LayerNorms read the same
# block input x (attention(ln1(x)) + mlp(ln2(x)) + x), but each has its own affine parameters, so
# the two scalings are independent. The two other Linear layers get no scales, only min-max
# quantization: attention.dense follows the fused query_key_value, whose value rows are
# interleaved per head (llm-compressor's fused-qkv case assumes v is the last third, which would
# scale the wrong rows; AutoAWQ's GPT-NeoX model skips this mapping too), and mlp.dense_4h_to_h
# follows a GELU, which a scale cannot pass through (AutoAWQ scaled the GELU's output with a
# ScaledActivation wrapper; llm-compressor has no such layer).
MAPPINGS = (
    ("re:.*input_layernorm$", ["re:.*query_key_value$"]),
    ("re:.*post_attention_layernorm$", ["re:.*dense_h_to_4h$"]),
)
# Ours, by architecture class, ahead of llm-compressor's AWQ_MAPPING_REGISTRY.
OUR_MAPPINGS = {"GPTNeoXForCausalLM": MAPPINGS}
MAPPINGS_KEY = "methods.awq.mappings"
# A config example for the message of an architecture without mappings.
MAPPINGS_EXAMPLE = (
    '[{smooth: ".*post_attention_layernorm$", balance: [".*gate_proj$", ".*up_proj$"]}]'
)


def _target(regex: str) -> str:
    """A config regex as llm-compressor's target string (`re:` + a regex `re.match`ed on the
    module's full name); a leading `re:` is accepted too."""
    return regex if regex.startswith("re:") else "re:" + regex


def resolve_mappings(model, options: dict) -> tuple[list[tuple[str, list[str]]], str]:
    """The AWQ mappings (smooth regex, balance regexes) for `model`, and where they come from:
    `methods.awq.mappings` > ours (OUR_MAPPINGS) > llm-compressor's registry, by class name.

    llm-compressor itself falls back to Llama's names for an unknown architecture, which fails
    with a mapping error on anything else; an architecture with none is refused here instead.
    """
    arch = type(model).__name__
    if (given := AWQ.option(options, "mappings")) is not None:
        return [
            (_target(m["smooth"]), [_target(b) for b in m["balance"]]) for m in given
        ], MAPPINGS_KEY
    if arch in OUR_MAPPINGS:
        return [(s, list(b)) for s, b in OUR_MAPPINGS[arch]], "qid"
    _import()
    from llmcompressor.modifiers.transform.awq.mappings import AWQ_MAPPING_REGISTRY

    if arch in AWQ_MAPPING_REGISTRY:
        registry = AWQ_MAPPING_REGISTRY[arch]
        return [(m.smooth_layer, list(m.balance_layers)) for m in registry], "llm-compressor"
    raise QidError(
        f"awq: llm-compressor has no AWQ mappings for {arch}; give them as config key "
        f"{MAPPINGS_KEY!r}, a list of a module to smooth and the linear layers it feeds, e.g. "
        f"{MAPPINGS_EXAMPLE}"
    )


def check(model, bits: int, options: dict) -> None:
    """Refuse, in one line and before any weights load, what llm-compressor's AWQ cannot do on
    this architecture (`model` is on the meta device)."""
    import re

    from compressed_tensors.utils import match_modules_set, match_name

    _import()  # with its log quieted, before any llmcompressor module
    survey = found.survey(model)
    conv1d = [layer.name for layer in survey.layers if layer.kind == "Conv1D"]
    if conv1d:
        raise QidError(
            f"awq: {type(model).__name__} stores its linear maps as Conv1D (e.g. {conv1d[0]!r}) "
            "and llm-compressor's AWQ quantizes nn.Linear only; use rtn or gptq for this model"
        )
    # compressed-tensors refuses a width the group size does not divide (llm-compressor's
    # divisibility check; bypassed, its observers fail): no shorter last group as in rtn/gptq.
    group_size = int(AWQ.option(options, "group_size"))
    found.check_group_size(survey.layers, group_size, "awq", METHODS["awq"].partial_groups)

    mappings, source = resolve_mappings(model, options)
    names = [name for name, _ in model.named_modules()]
    where = f"config key {MAPPINGS_KEY!r}" if source == MAPPINGS_KEY else f"{source}'s mappings"
    for smooth, balance in mappings:
        for target in (smooth, *balance):
            try:
                re.compile(target.removeprefix("re:"))
            except re.error as e:
                raise QidError(f"awq: {where}: {target!r} is not a regex ({e})") from None
            if not any(match_name(name, target) for name in names):
                raise QidError(
                    f"awq: {where}: {target!r} matches no module of {type(model).__name__} "
                    f"(a regex is matched from the start of a full name such as "
                    f"{survey.layers[0].name!r})"
                )
        try:  # how llm-compressor pairs each smooth module with its balance layers, per block
            for smooth_set, *balance_sets in match_modules_set(model, (smooth, *balance)):
                if len(smooth_set) > 1:
                    first = [n for n, m in model.named_modules() if m in smooth_set][:3]
                    raise ValueError(f"one set of balance layers pairs with {first}: need one")
                _check_widths(model, smooth_set[0], [m for s in balance_sets for m in s])
        except ValueError as e:
            first = str(e).splitlines()[0]
            raise QidError(f"awq: {where}: mapping {smooth!r} -> {balance}: {first}") from None


def _check_widths(model, smooth, balance: list) -> None:
    """The scales are one per input column of the balance layers; the smooth module must give
    that many outputs (a fused Linear a multiple: llm-compressor scales its last rows, the v of
    a fused qkv). What llm-compressor skips itself (v_proj -> o_proj under grouped-query
    attention) passes."""
    from llmcompressor.modifiers.transform.awq.base import _check_layers_are_compatible

    names = {m: n for n, m in model.named_modules()}
    widths = {m.in_features for m in balance if isinstance(m, nn.Linear)}
    if len(widths) > 1:
        raise ValueError(f"the balance layers read different widths {sorted(widths)}")
    weight = getattr(smooth, "weight", None)
    if not widths or weight is None:
        return
    (width,), out = widths, weight.shape[0]
    if out == width or (isinstance(smooth, nn.Linear) and out % width == 0):
        return
    balance_names = [names[m] for m in balance]
    if not _check_layers_are_compatible(smooth, names[smooth], balance, balance_names):
        return  # skipped by llm-compressor
    raise ValueError(f"{names[smooth]!r} gives {out} outputs, its balance layers read {width}")


def _import():
    """Import llmcompressor with its console log at WARNING, on stderr.

    Its import (re)configures loguru to print INFO to stdout (a line per lifecycle step), and
    stdout is for qid's own output (`qid diagnose --json`); the repeated "No accelerator
    available! Compressing model on CPU instead" warnings are kept: on a GPU node they would
    mean the GPU was not seen.
    """
    with stdout_to_stderr():  # what the import itself logs
        import llmcompressor
        from llmcompressor.logger import LoggerConfig, configure_logger
    from loguru import logger

    configure_logger(LoggerConfig(console_log_level=None))  # drops its stdout sink
    logger.add(sys.stderr, level="WARNING", format="{time} | {function} | {level} - {message}")
    return llmcompressor


@contextlib.contextmanager
def _no_pinned_memory_without_accelerator():
    """Skip llm-compressor's pinning of cached activations when there is no accelerator.

    `AWQModifier` pins the cached block inputs before its grid search so they can be copied to the
    GPU asynchronously; on a CPU-only torch, `Tensor.pin_memory()` raises "Cannot access
    accelerator device when none is available". Pinning only speeds host-to-device copies, and
    on CPU nothing is copied, so skipping it changes nothing else.
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    saved = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = saved


@contextlib.contextmanager
def _awq_error_metrics(sink: list[dict]):
    """Collect AWQ's per-mapping output errors (identity scales vs the chosen scales).

    `AWQModifier` only logs them (at DEBUG) and clears them when it finishes; we copy them as they
    are logged. If a later version drops this private hook, the record just lacks the numbers.
    """
    from llmcompressor.modifiers.transform.awq import AWQModifier

    saved = getattr(AWQModifier, "_log_error_metrics", None)
    if saved is None:  # pragma: no cover - depends on the llm-compressor version
        yield
        return

    def log_and_copy(self):
        sink.extend(dict(m) for m in self._error_metrics)
        return saved(self)

    AWQModifier._log_error_metrics = log_and_copy
    try:
        yield
    finally:
        AWQModifier._log_error_metrics = saved


class _DropProgressBars(io.TextIOBase):
    """A stderr that drops tqdm's output (redraws with carriage returns and cursor moves, and the
    bare newlines of closed bars) and passes the rest.

    llm-compressor draws a progress bar per block and per AWQ grid search; in a job's log file
    every redraw is kept, several per grid point. Warnings and log records (one write each) still
    get through.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if text.strip() and "\r" not in text and "\x1b[" not in text:
            self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _recipe(
    bits: int,
    group_size: int,
    targets: list[str],
    mappings: list[tuple[str, list[str]]],
    duo_scaling: bool,
    n_grid: int,
) -> list:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQMapping, AWQModifier

    per_channel = group_size in (-1, 0)
    weights = QuantizationArgs(
        num_bits=bits,
        type="int",
        symmetric=False,
        strategy="channel" if per_channel else "group",
        group_size=None if per_channel else group_size,
        dynamic=False,
    )
    # The surveyed layers by their exact names (not targets=["Linear"], which would also take the
    # head and any Linear outside the blocks, e.g. OPT's project_in/out).
    scheme = QuantizationScheme(targets=targets, weights=weights)
    return [
        AWQModifier(
            mappings=[AWQMapping(smooth, balance) for smooth, balance in mappings],
            duo_scaling=duo_scaling,
            n_grid=n_grid,
        ),
        QuantizationModifier(config_groups={"group_0": scheme}),
    ]


def _calibration_rows(tokenizer, texts: list[str], length: int) -> dict[str, list[list[int]]]:
    """Tokenize and truncate to `length` tokens; drop empty rows. One row per text, unpadded."""
    ids, masks = [], []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=length)
        if enc["input_ids"]:
            ids.append(enc["input_ids"])
            masks.append(enc["attention_mask"])
    return {"input_ids": ids, "attention_mask": masks}


def quantize(
    checkpoint: Path,
    out: Path,
    bits: int,
    options: dict,
    calibration: list[str] | None,
) -> dict[str, Any]:
    import compressed_tensors
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if bits not in SUPPORTED_BITS:
        supported = ", ".join(map(str, SUPPORTED_BITS))
        raise ValueError(f"awq: {bits}-bit weights are not supported (supported: {supported})")
    if not calibration:
        raise ValueError("awq needs calibration texts, none were given")
    llmcompressor = _import()

    group_size = int(AWQ.option(options, "group_size"))
    duo_scaling = bool(AWQ.option(options, "duo_scaling"))
    n_grid = int(AWQ.option(options, "n_grid"))
    length = int(options.get("calibration_length", DEFAULT_CALIBRATION_LENGTH))

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = _calibration_rows(tokenizer, calibration, length)
    if not rows["input_ids"]:
        raise ValueError(f"awq: all {len(calibration)} calibration texts are empty")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    survey = found.survey(model)
    mappings, mappings_from = resolve_mappings(model, options)
    targets = [layer.name for layer in survey.layers]
    recipe = _recipe(bits, group_size, targets, mappings, duo_scaling, n_grid)

    metrics: list[dict] = []
    with (
        # llm-compressor logs (loguru) to stdout; stdout is for qid's own output.
        stdout_to_stderr(),
        _no_pinned_memory_without_accelerator(),
        _awq_error_metrics(metrics),
        contextlib.redirect_stderr(_DropProgressBars(sys.stderr)),
    ):
        llmcompressor.oneshot(
            model=model,
            tokenizer=tokenizer,
            dataset=Dataset.from_dict(rows),
            recipe=recipe,
            num_calibration_samples=len(rows["input_ids"]),
            max_seq_length=length,
            # One unpadded text per forward pass: padding would enter AWQ's activation means.
            batch_size=1,
            shuffle_calibration_samples=False,
            # Block by block (what "independent" picks for AWQ anyway); named to be explicit.
            pipeline="sequential",
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # llm-compressor hands the model to compressed-tensors' offloading wrapper (a no-op on
        # one device); transformers then warns about offloaded modules and its 50 GB shards.
        warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded")
        model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)

    _check_saved(out, targets)

    reductions = [m["reduction"] for m in metrics]
    return {
        "backend": "llmcompressor",
        "backend_version": llmcompressor.__version__,
        "compressed_tensors_version": compressed_tensors.__version__,
        "storage": "packed",
        "format": _saved_format(out),
        "calibration_texts": len(calibration),
        "calibration_rows": len(rows["input_ids"]),
        "calibration_tokens": sum(map(len, rows["input_ids"])),
        "calibration_length": length,
        "duo_scaling": duo_scaling,
        "n_grid": n_grid,
        "mappings_from": mappings_from,
        "mappings": [{"smooth": smooth, "balance": balance} for smooth, balance in mappings],
        # Mappings smoothed (one per matching block; llm-compressor skips e.g. v_proj -> o_proj
        # under grouped-query attention, where the widths differ).
        "awq_mappings": len(metrics),
        # AWQ's output error with the chosen scales over that with identity scales, per mapping.
        "awq_error_ratio_mean": sum(reductions) / len(reductions) if reductions else None,
        "awq_error_ratio_min": min(reductions) if reductions else None,
        "weights_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
        **survey.record(),
    }


def _check_saved(out: Path, targets: list[str]) -> None:
    """The saved checkpoint holds packed weights for exactly the surveyed layers."""
    from safetensors import safe_open

    packed = set()
    for path in out.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            packed |= {k.removesuffix(".weight_packed") for k in f.keys() if k.endswith("_packed")}
    if packed != set(targets):
        missing, extra = sorted(set(targets) - packed), sorted(packed - set(targets))
        raise QidError(
            f"awq: {out} holds {len(packed)} quantized layers, {len(targets)} were surveyed "
            f"(not quantized: {missing[:3]}; not surveyed: {extra[:3]})"
        )


def _saved_format(out: Path) -> str | None:
    import json

    config = json.loads((out / "config.json").read_text())
    return config.get("quantization_config", {}).get("format")


def load(path: Path) -> PreTrainedModel:
    """Reload on CPU as an fp32 model with the dequantized weights in plain Linear layers."""
    import torch
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    with warnings.catch_warnings():
        # "You passed `quantization_config` ... but the model you're loading already has one":
        # as intended, only its loading attribute `dequantize` is taken from ours.
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=torch.float32,
            device_map="cpu",
            # Decompress while loading rather than on the first forward pass (the default): the
            # returned model is then complete, and its load time includes the unpacking.
            quantization_config=CompressedTensorsConfig(dequantize=True),
        )
    model.eval()
    return model
