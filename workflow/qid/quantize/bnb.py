"""bitsandbytes 4-bit NormalFloat / float quantization through transformers.

No calibration: the weights are quantized block-wise (absmax scaling, block size 64) as
transformers loads the checkpoint with a `BitsAndBytesConfig`; the result is saved with
`save_pretrained` and reloaded with `from_pretrained`. bitsandbytes >= 0.46 runs on CPU.
Embeddings and the output head (lm_head / embed_out) stay in fp32, as transformers skips them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qid.quantize import layers

QUANT_TYPES = {"bnb_nf4": "nf4", "bnb_fp4": "fp4"}

# On CPUs with AVX512-BF16, importing bitsandbytes warns that the optional `kernels` package
# (a faster bf16 CPU gemm) is missing. We do not use that bf16 path (see `load`), so the
# warning is irrelevant; this only takes effect if bitsandbytes has not been imported yet.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _quant_type(options: dict) -> str:
    method = options.get("method")
    try:
        return QUANT_TYPES[method]
    except KeyError:
        known = ", ".join(sorted(QUANT_TYPES))
        raise ValueError(f"bnb: unknown method {method!r} (known: {known})") from None


def _use_fp32_compute(model) -> int:
    """Route every bnb 4-bit layer through dequantize + fp32 matmul; return how many there are.

    On a CPU with AVX512-BF16, bitsandbytes' `Linear4bit.forward` in eval mode repacks the
    weight on first call and runs a fused kernel that casts activations and absmax scales to
    bfloat16, ignoring `bnb_4bit_compute_dtype=float32`. The result then depends on the machine
    (other CPUs take the dequantize + matmul path), and the bf16 rounding is of the order of
    the quantization error being measured. `support_avx512bf16_for_cpu` is the per-layer flag
    that gates the fused path; clearing it gives logits identical to an fp32 model built from
    `dequantize_4bit` weights.
    """
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def quantize(
    checkpoint: Path,
    out: Path,
    bits: int,
    options: dict,
    calibration: list[str] | None,
) -> dict[str, Any]:
    import bitsandbytes
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if bits != 4:
        raise ValueError(
            f"bnb: {bits}-bit weights are not supported (bitsandbytes NF4/FP4 is 4-bit)"
        )
    quant_type = _quant_type(options)
    double_quant = bool(options.get("double_quant", False))

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_compute_dtype=torch.float32,
        bnb_4bit_use_double_quant=double_quant,
    )
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint, quantization_config=config, device_map="cpu", dtype=torch.float32
    )
    n_layers = _use_fp32_compute(model)
    if n_layers == 0:
        raise RuntimeError(f"bnb: no layer of {checkpoint} was quantized")
    # transformers replaces the linear maps (GPT-2's Conv1D too) by Linear4bit, a subclass of
    # nn.Linear; every map of the decoder blocks must have been replaced.
    survey = layers.survey(model)
    by_name = dict(model.named_modules())
    left = [
        x.name for x in survey.layers if not isinstance(by_name[x.name], bitsandbytes.nn.Linear4bit)
    ]
    if left:
        raise RuntimeError(f"bnb: {len(left)} linear maps were not quantized, e.g. {left[0]!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)

    blocksize = None
    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            blocksize = module.weight.quant_state.blocksize
            break
    return {
        "backend": "bitsandbytes",
        "backend_version": bitsandbytes.__version__,
        "quant_type": quant_type,
        "blocksize": blocksize,
        "double_quant": double_quant,
        **survey.record(),
        "weights_bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
    }


def load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, device_map="cpu", dtype=torch.float32)
    if _use_fp32_compute(model) == 0:
        raise RuntimeError(f"{path}: no bitsandbytes 4-bit layers after loading")
    model.eval()
    return model


def dequantize(model):
    """Fake-quant: transformers' own dequantize() turns the 4-bit layers back into nn.Linear."""
    return model.dequantize()
