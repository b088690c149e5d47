"""GPTQ through GPTQModel's own API (`GPTQModel.load` / `.quantize` / `.save`).

Any causal LM GPTQModel can walk (its model list, else its module-tree auto-detection): the
record lists the layers qid finds (`qid.quantize.layers`), checked against those GPTQModel
saved. A width the group size does not divide ends in a shorter last group (g_idx = i // group,
as RTN); GPTQModel 7.6's CPU kernel packs only group sizes -1, 16, 32, ..., 1024, so others are
refused by `check` before any weights load. Nothing is written to stdout (fd 1), which
`qid diagnose --json` owns: GPTQModel's console output goes to stderr.

Quantization and reloading both run on CPU, from and in fp32. Bit widths 2, 3, 4 and 8 are
packed into int32 in the GPTQ checkpoint format (scales and linear biases are stored as fp16, as
GPTQ checkpoints do) and reloaded with GPTQModel's plain torch kernel (TorchLinear), which
dequantizes to fp32 and runs an ordinary matmul; see `load`. lm_head and embeddings stay fp32.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from qid import QidError
from qid.quantize import METHODS
from qid.quantize import layers as found
from qid.streams import stdout_to_stderr

# Workarounds that must be in place before gptqmodel is first imported:
# - GPTQModel sizes its CPU thread pool as (cores + 1) // 2, i.e. 1 worker on a 1- or 2-core
#   machine, and then fails in GPTQModel.load with "Virtual pool 'model_loader:cpu' requests 2
#   workers but parent 'cpu' only has 1". Ask for 2 there; leave larger machines alone.
if "GPTQMODEL_CPU_WORKERS" not in os.environ and (os.cpu_count() or 1) < 3:
    os.environ["GPTQMODEL_CPU_WORKERS"] = "2"
# - The "Python GIL is enabled" warning printed at import is about multi-GPU MoE speed only.
os.environ.setdefault("GPTQMODEL_DISABLE_GIL_WARNING", "1")
# - GPTQModel packs 2/4/8-bit weights with a C++ extension it JIT-compiles (g++ and ninja) into
#   ~/.cache/gptqmodel on a machine's first quantization: 27 s of the default study's first GPTQ
#   cell, and a compiler at run time. Its Python path packs the same bytes (checked bit for bit
#   on the default's h256-l4) as fast at these widths, so it is used unless the user asks.
os.environ.setdefault("GPTQMODEL_DISABLE_PACK_EXT", "1")

# Harmless import-time warnings, silenced here in case gptqmodel is what first imports torchao
# (transformers usually imports it first, and then they still show): torchao
# cannot load its CUDA-only .so files on a CPU build, and its enum registration triggers a
# torch pytree deprecation warning. Tokenicer (GPTQModel's tokenizer wrapper) logs at INFO that
# it set pad_token = eos.
for _name in ("torchao", "torch.utils._pytree", "tokenicer.tokenicer"):
    logging.getLogger(_name).setLevel(logging.ERROR)

# The registry's entry: option defaults, and the calibration GPTQModel recommends (it warns below
# 256 rows or a mean of 256 tokens); a length given by the config (data.calibration.length) wins.
GPTQ = METHODS["gptq"]
RECOMMENDED = GPTQ.recommended
DEFAULT_CALIBRATION_LENGTH = RECOMMENDED.length
# GPTQModel's own warnings about the calibration size, replaced by ours (which names the keys).
_LIBRARY_CALIBRATION_WARNINGS = (
    "Calibration dataset size should be more than",
    "The average length of input_ids of calibration_dataset",
)


@contextlib.contextmanager
def _quiet():
    """Keep GPTQModel's console output to warnings for the duration of a call.

    GPTQModel logs through a shared LogBar logger (INFO by default: banners, per-stage timing
    tables) and draws progress bars that ignore the logger level. In a non-interactive job they
    are written out on every step (about layers x 4 x calibration rows lines per quantization).
    GPTQModel itself swaps them for silent stand-ins under pytest via
    `gptqmodel.utils.logger._suppress_live_renderables`; we flip the same switch here. If a
    later version drops that hook, only the noise comes back.
    """
    saved: list[tuple[Any, str, Any]] = []
    with contextlib.suppress(ImportError):  # logbar is a dependency of gptqmodel
        from logbar import LogBar

        logger = LogBar.shared()
        saved.append((logger, "level", logger.level))
        logger.setLevel(logging.WARNING)
        # LogBar bypasses logging filters: drop its calibration-size warnings at the source.
        process = logger._process

        def _process(level, msg, *args, **kwargs):
            if not str(msg).startswith(_LIBRARY_CALIBRATION_WARNINGS):
                process(level, msg, *args, **kwargs)

        saved.append((logger, "_process", logger.__dict__.get("_process")))  # nested calls
        logger._process = _process
    with contextlib.suppress(ImportError):
        import gptqmodel.utils.logger as glog

        if hasattr(glog, "_suppress_live_renderables"):
            saved.append((glog, "_suppress_live_renderables", glog._suppress_live_renderables))
            glog._suppress_live_renderables = lambda: True
    try:
        yield
    finally:
        for obj, attr, value in reversed(saved):
            if attr == "level":
                obj.setLevel(value)
            elif attr == "_process" and value is None:
                obj.__dict__.pop("_process", None)  # back to the class's method
            else:
                setattr(obj, attr, value)


@contextlib.contextmanager
def _no_log_files():
    """Keep GPTQModel from writing a log file per quantization into `logs/` of the working
    directory, which is the workflow's log directory: its processors' per-module stats (loss,
    samples, damping, time) go there as `gptq_log_<random>_time_<date>.log`, a path no setting
    changes (GPTQModel 7.6: `LoopProcessor._build_log_file_path`). The same stats are saved
    beside the model as quant_log.csv (the record's gptq_loss_* read it), so they are dropped.
    If a later version moves that hook, the file comes back; nothing breaks."""
    try:
        from gptqmodel.looper.loop_processor import LoopProcessor
    except ImportError:  # pragma: no cover
        yield
        return
    saved = LoopProcessor.__dict__.get("_build_log_file_path")
    LoopProcessor._build_log_file_path = staticmethod(lambda *_: Path(os.devnull))
    try:
        yield
    finally:
        if saved is not None:
            LoopProcessor._build_log_file_path = saved


def _import():
    """Import gptqmodel; always go through here (its import logs a banner at INFO)."""
    with stdout_to_stderr(), _quiet():
        import gptqmodel
    return gptqmodel


def _calibration_rows(
    tokenizer, texts: list[str], length: int, min_length: int
) -> list[dict[str, list[int]]]:
    """Tokenize and truncate to `length` tokens; drop rows of <= `min_length` tokens.

    GPTQModel would drop the short rows itself (with a warning); doing it here keeps the counts
    in the record true.
    """
    rows = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=length)
        if len(enc["input_ids"]) > min_length:
            rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return rows


USUAL_GROUP_SIZES = (-1, 32, 64, 128)  # TorchLinear packs these (checked in the tests)


def _kernel_group_sizes() -> list[int]:
    """The group sizes GPTQModel's CPU kernel (TorchLinear, used to pack and to reload) accepts."""
    _import()
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    return list(TorchLinear.SUPPORTS_GROUP_SIZE)


def check_layers(layers: list[found.Layer], bits: int, options: dict, where: str) -> None:
    """The width rules of GPTQ on `layers` (of `where`, a model or a suite's size), in one line.

    A width the group size does not divide is fine (a shorter last group); a group wider than
    a layer is not, nor 3 bits on a width that is not a multiple of 32 (GPTQ packs 3-bit weights
    32 input columns into 3 int32 words; GPTQModel 7.6 fails with an IndexError there, after
    calibrating).
    """
    method = options.get("method", "gptq")
    group_size = int(GPTQ.option(options, "group_size"))
    if bits == 3:
        for layer in layers:
            if layer.in_features % 32:
                raise QidError(
                    f"config key 'methods.{method}.bits': GPTQModel packs 3-bit weights 32 input "
                    f"columns at a time, and layer {layer.name!r} of {where} has input width "
                    f"{layer.in_features}; use 2, 4 or 8 bits on this model"
                )
    found.check_group_size(
        layers, group_size, method, METHODS["gptq"].partial_groups, where=f" of {where}"
    )
    # GPTQModel raises for a group size its CPU kernel cannot pack only after calibrating. The
    # usual sizes are known to pack; any other is looked up in the library (an import of
    # seconds, which the dry run of a usual config does not pay).
    if group_size not in USUAL_GROUP_SIZES and group_size not in (sizes := _kernel_group_sizes()):
        key = found.GROUP_KEY.format(method=method)
        raise QidError(
            f"config key {key!r}: group size {group_size} cannot be packed by GPTQModel's CPU "
            f"kernel (TorchLinear: {', '.join(map(str, sizes))})"
        )


def check(model, bits: int, options: dict) -> None:
    """Refuse, in one line, what GPTQModel cannot do on `model` (meta device)."""
    check_layers(found.survey(model).layers, bits, options, type(model).__name__)


def _warn_small_calibration(n_rows: int, mean_tokens: float) -> None:
    """One warning when the calibration is smaller than GPTQModel recommends (it still runs:
    the paper's own setups and small tests use less)."""
    if n_rows >= RECOMMENDED.n_texts and mean_tokens >= RECOMMENDED.length:
        return
    warnings.warn(
        f"gptq: calibrating on {n_rows} texts of {mean_tokens:.0f} tokens on average, less than "
        f"the {RECOMMENDED.n_texts} texts of {RECOMMENDED.length} tokens GPTQModel recommends; "
        "GPTQ may then lose to RTN. Raise data.calibration.n_samples / data.calibration.length",
        stacklevel=3,
    )


def _saved_layers(out: Path) -> dict[str, tuple[int, int]]:
    """The GPTQ layers of a saved checkpoint, as a reload finds them: name -> (in, out) widths,
    read from the safetensors headers (g_idx holds one entry per input column, scales one
    column per output)."""
    from safetensors import safe_open

    widths: dict[str, tuple[int, int]] = {}
    for path in sorted(Path(out).glob("*.safetensors")):
        with safe_open(path, "pt") as fh:
            for key in fh.keys():
                if key.endswith(".g_idx"):
                    name = key[: -len(".g_idx")]
                    n_in = fh.get_slice(key).get_shape()[0]
                    n_out = fh.get_slice(f"{name}.scales").get_shape()[1]
                    widths[name] = (n_in, n_out)
    return widths


def check_saved_layers(survey: found.Survey, saved: dict[str, tuple[int, int]], where: str) -> None:
    """Raise unless GPTQModel saved exactly the layers `survey` found.

    Compared per (parent module, input width) by output width summed, since GPTQModel splits
    some fused maps before quantizing them (Phi-3's gate_up_proj -> gate_proj + up_proj).
    """

    ours = {layer.name: (layer.in_features, layer.out_features) for layer in survey.layers}

    def totals(layers: dict[str, tuple[int, int]]) -> dict[tuple[str, int], int]:
        acc: dict[tuple[str, int], int] = defaultdict(int)
        for name, (n_in, n_out) in layers.items():
            acc[name.rpartition(".")[0], n_in] += n_out
        return dict(acc)

    a, b = totals(ours), totals(saved)
    bad = {
        parent
        for parent, n_in in a.keys() | b.keys()
        if a.get((parent, n_in)) != b.get((parent, n_in))
    }
    if bad:
        in_bad = lambda name: name.rpartition(".")[0] in bad  # noqa: E731
        missing = sorted(n for n in ours if in_bad(n) and saved.get(n) != ours[n])
        extra = sorted(n for n in saved if in_bad(n) and ours.get(n) != saved[n])
        raise QidError(
            f"gptq: GPTQModel quantized other layers of {where} than qid found: qid's "
            f"{', '.join(f'{n} {ours[n]}' for n in missing) or 'none'} vs GPTQModel's "
            f"{', '.join(f'{n} {saved[n]}' for n in extra) or 'none'} (in, out widths)"
        )


def quantize(
    checkpoint: Path,
    out: Path,
    bits: int,
    options: dict,
    calibration: list[str] | None,
) -> dict[str, Any]:
    """Quantize with GPTQModel; nothing reaches stdout (see `stdout_to_stderr`)."""
    with stdout_to_stderr():
        return _quantize(Path(checkpoint), Path(out), bits, options, calibration)


def _quantize(
    checkpoint: Path, out: Path, bits: int, options: dict, calibration: list[str] | None
) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    if bits not in (2, 3, 4, 8):
        raise ValueError(f"gptq: {bits}-bit weights are not supported (supported: 2, 3, 4, 8)")
    if not calibration:
        raise ValueError("gptq needs calibration texts, none were given")

    gptqmodel = _import()
    GPTQModel, QuantizeConfig = gptqmodel.GPTQModel, gptqmodel.QuantizeConfig

    group_size = int(GPTQ.option(options, "group_size"))
    desc_act = bool(GPTQ.option(options, "desc_act"))
    damp_percent = float(GPTQ.option(options, "damp_percent"))
    sym = bool(GPTQ.option(options, "symmetric"))
    length = int(options.get("calibration_length", DEFAULT_CALIBRATION_LENGTH))
    # GPTQModel's own default: rows of <= 10 tokens carry too little context to count.
    min_length = int(options.get("calibration_min_length", 10))

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    rows = _calibration_rows(tokenizer, calibration, length, min_length)
    if not rows:
        raise ValueError(
            f"gptq: none of the {len(calibration)} calibration texts is longer than "
            f"{min_length} tokens"
        )
    n_tokens = sum(len(r["input_ids"]) for r in rows)
    _warn_small_calibration(len(rows), n_tokens / len(rows))

    with _quiet(), _no_log_files():
        qcfg = QuantizeConfig(
            bits=bits,
            group_size=group_size,
            desc_act=desc_act,
            sym=sym,
            damp_percent=damp_percent,
            # GPTQModel turns on its act-group-aware reordering by default; quantize() then
            # raises for group_size=-1 ("requires group_size > 0"), and with desc_act=True the
            # config switches it off with a warning. Set it explicitly for both cases.
            act_group_aware=not desc_act and group_size > 0,
            # The default offloads finished modules to a temp dir; on GPT-NeoX (untied lm_head)
            # quantize() then fails with "Offloaded tensor 'lm_head.weight' not found in
            # offload directory". Small models fit in memory anyway.
            offload_to_disk=False,
        )
        # GPTQModel's CPU loader defaults to bfloat16; quantize from the fp32 weights we saved.
        model = GPTQModel.load(str(checkpoint), qcfg, device="cpu", dtype=torch.float32)
        # Rows are pre-tokenized; GPTQModel only uses its own tokenizer copy for padding.
        model.quantize(rows, batch_size=1, calibration_data_min_length=min_length)
        out.mkdir(parents=True, exist_ok=True)
        # save() print()s the directory listing and every JSON file it wrote; drop that.
        with contextlib.redirect_stdout(io.StringIO()):
            model.save(str(out))
    # Save the checkpoint's own tokenizer (GPTQModel saves its patched copy with a pad token).
    tokenizer.save_pretrained(out)

    survey = found.survey(found.meta_model(checkpoint))
    saved = _saved_layers(out)
    check_saved_layers(survey, saved, str(checkpoint))
    losses = _gptq_losses(out / "quant_log.csv")
    return {
        "backend": "gptqmodel",
        "backend_version": gptqmodel.__version__,
        **survey.record(),
        "gptq_modules": len(saved),  # more than quantized_layers where GPTQModel split a map
        "calibration_texts": len(calibration),
        "calibration_rows": len(rows),
        "calibration_tokens": n_tokens,
        "calibration_length": length,
        "act_group_aware": qcfg.act_group_aware,
        "gptq_loss_mean": sum(losses) / len(losses) if losses else None,
        "gptq_loss_max": max(losses) if losses else None,
        "weights_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
    }


def _gptq_losses(path: Path) -> list[float]:
    """Per-module GPTQ reconstruction losses from the quant_log.csv GPTQModel writes."""
    if not path.is_file():
        return []
    losses = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                losses.append(float(row["loss"]))
            except (KeyError, TypeError, ValueError):
                continue
    return losses


@contextlib.contextmanager
def _admit_fp32_torch_kernel():
    """Let GPTQModel's plain torch kernel (TorchLinear) be selected for fp32 activations.

    On CPU, GPTQModel 7.6 offers TorchLinear (2-8 bits, declared for fp16/bf16 only) and, for
    4 bits, TorchFusedLinear, which is declared fp32-capable but casts fp32 inputs to bfloat16
    internally. Either way the reloaded model would not run in fp32 like the baseline, and
    bf16 activation rounding is of the same order as the 8-bit weight error being measured.
    TorchLinear's forward is dtype-agnostic (dequantize to the scales' dtype, then matmul), so
    we admit fp32 for it while the checkpoint loads; its fp32 dequantized weights match a
    hand-unpacked reference exactly (checked at 2, 4 and 8 bits) and its logits match the
    supported fp16 path to within fp16 rounding (tests/test_backends.py checks this).
    """
    import torch
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    saved = TorchLinear.SUPPORTS_DTYPES
    if torch.float32 not in saved:
        TorchLinear.SUPPORTS_DTYPES = [*saved, torch.float32]
    try:
        yield TorchLinear
    finally:
        TorchLinear.SUPPORTS_DTYPES = saved


def load(path: Path, dtype=None):
    """Reload a GPTQ checkpoint on CPU: the transformers model with TorchLinear layers, eval mode.

    `dtype` defaults to float32 (see `_admit_fp32_torch_kernel`); float16 selects GPTQModel's
    officially supported path and is only meant for cross-checks.
    """
    import torch

    gptqmodel = _import()
    dtype = torch.float32 if dtype is None else dtype
    with (
        stdout_to_stderr(),
        _quiet(),
        _admit_fp32_torch_kernel() as kernel,
        # from_quantized print()s "adapter: None".
        contextlib.redirect_stdout(io.StringIO()),
    ):
        # The saved config records bfloat16 (GPTQModel's CPU default); override it.
        wrapped = gptqmodel.GPTQModel.load(
            str(path), device="cpu", dtype=dtype, backend=gptqmodel.BACKEND.TORCH
        )
    model = wrapped.model  # the transformers model with GPTQ linear layers swapped in
    layers = [m for m in model.modules() if isinstance(m, kernel)]
    if not layers:
        raise RuntimeError(f"{path}: no GPTQ TorchLinear layers after loading")
    for layer in layers:
        # TorchLinear.post_init replaces its dequantize_weight by a torch.compile'd (inductor)
        # version: on CPU that JIT-compiles C++ on the first forward of each input shape
        # (seconds each, recompiling as shapes vary) and logs torch.compile traces. Drop the
        # instance attribute to get the class's eager method back; logits are identical.
        layer.__dict__.pop("dequantize_weight", None)
    model.eval()
    return model


def dequantize(model):
    """Fake-quant: each GPTQ layer becomes a plain nn.Linear holding its dequantized weights, so
    the model runs on any device with ordinary (bf16, SDPA) kernels and no GPTQ kernel.
    tests/test_backends.py checks it against the packed layers to 1e-3 nats."""
    import torch
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    for parent in list(model.modules()):
        for name, layer in list(parent.named_children()):
            if not isinstance(layer, TorchLinear):
                continue
            with torch.no_grad():
                # TorchLinear multiplies x @ W with W as [in, out] (padded): transpose and trim.
                w = layer.dequantize_weight(num_itr=layer.g_idx.shape[0] // layer.in_features)
                w = w.T[: layer.out_features, : layer.in_features]
                linear = torch.nn.Linear(
                    layer.in_features, layer.out_features, bias=layer.bias is not None
                ).to(dtype=w.dtype, device=w.device)
                linear.weight.copy_(w)
                if layer.bias is not None:
                    linear.bias.copy_(layer.bias[: layer.out_features])
            setattr(parent, name, linear.eval())
    return model
