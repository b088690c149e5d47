"""AWQ (activation-aware weight quantization) through llm-compressor's own API.

`llmcompressor.oneshot` runs two modifiers on the fp32 checkpoint, on CPU: `AWQModifier` searches
per-channel scales from the calibration activations and folds them into the weights (and their
inverse into the preceding LayerNorm), then `QuantizationModifier` quantizes every Linear layer of
the blocks with per-group asymmetric integer weights (min-max scales and zero points). The
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

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_GROUP_SIZE = 128
DEFAULT_CALIBRATION_LENGTH = 128
# Bit widths run end to end here (quantize, save packed, reload, loss): compressed-tensors packs
# 1 to 8 bits into int32 and AWQ's grid search is bit-agnostic (1 bit also runs, but two levels
# per group is not a setting AWQ is meant for). The fast packed AWQ GPU kernels (AutoAWQ's GEMM,
# vLLM's Marlin) are 4-bit only; this storage does not depend on them.
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)

# GPT-NeoX layer mappings (llm-compressor infers mappings for Llama-style names only): each
# LayerNorm's output feeds exactly one Linear layer, so AWQ can divide the LayerNorm's weight and
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


def _import():
    """Import llmcompressor with its console log at WARNING.

    Its import (re)configures loguru to print INFO to stdout (a line per lifecycle step); the
    repeated "No accelerator available! Compressing model on CPU instead" warnings are kept: on a
    GPU node they would mean the GPU was not seen.
    """
    import llmcompressor
    from llmcompressor.logger import LoggerConfig, configure_logger

    configure_logger(LoggerConfig(console_log_level="WARNING"))
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


def _recipe(bits: int, group_size: int, head: str, duo_scaling: bool, n_grid: int) -> list:
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
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    mappings = [AWQMapping(smooth, balance) for smooth, balance in MAPPINGS]
    return [
        AWQModifier(mappings=mappings, duo_scaling=duo_scaling, n_grid=n_grid),
        # The output head is a Linear too (named lm_head in transformers 5, embed_out on disk).
        QuantizationModifier(config_groups={"group_0": scheme}, ignore=[head]),
    ]


def _head_name(model) -> str:
    head = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is head)


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

    group_size = int(options.get("group_size", DEFAULT_GROUP_SIZE))
    duo_scaling = bool(options.get("duo_scaling", True))
    n_grid = int(options.get("n_grid", 20))
    length = int(options.get("calibration_length", DEFAULT_CALIBRATION_LENGTH))

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = _calibration_rows(tokenizer, calibration, length)
    if not rows["input_ids"]:
        raise ValueError(f"awq: all {len(calibration)} calibration texts are empty")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    recipe = _recipe(bits, group_size, _head_name(model), duo_scaling, n_grid)

    metrics: list[dict] = []
    with (
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
        "awq_mappings": len(metrics),
        # AWQ's output error with the chosen scales over that with identity scales, per mapping.
        "awq_error_ratio_mean": sum(reductions) / len(reductions) if reductions else None,
        "awq_error_ratio_min": min(reductions) if reductions else None,
        "weights_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
    }


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
