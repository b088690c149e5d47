"""GPTQ (GPTQModel), AWQ (llm-compressor) and bitsandbytes backends on a tiny GPT-NeoX checkpoint,
end to end on CPU.

The checkpoint is a 2-layer GPT-NeoX with a byte-level BPE tokenizer, both trained (a few
seconds) on generated text, so that its loss is well below uniform: on a purely random model
every weight perturbation leaves the loss near log(vocab), and the loss checks below could not
tell a working quantizer from a broken one.

qid packs GPTQ weights with GPTQModel's Python packer; its C++ packing extension (compiled with
g++ on first use, ~30 s) is built only by the test that checks the two give the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zoo import build_tokenizer, make_texts, pad_batch, train

from qid import QidError
from qid.quantize import METHODS, load_quantized, quantize_cell

GPTQ_OPTIONS = {"group_size": 32, "desc_act": False, "damp_percent": 0.01}
AWQ_OPTIONS = {"group_size": 32}
OPTIONS = {"gptq": GPTQ_OPTIONS, "awq": AWQ_OPTIONS}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    path = tmp_path_factory.mktemp("tiny-neox")
    texts = make_texts(300, seed=0)
    tokenizer = build_tokenizer(texts)
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPTNeoXForCausalLM(config)
    train(model, tokenizer, texts)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return model, tokenizer


@pytest.fixture(scope="module")
def eval_batch(reference):
    _, tokenizer = reference
    seqs = [tokenizer(t)["input_ids"][:96] for t in make_texts(16, seed=123)]
    return pad_batch(seqs, tokenizer.eos_token_id)


def mean_nll(model, batch) -> float:
    input_ids, mask = batch
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logp.gather(-1, input_ids[:, 1:, None])[..., 0]
    weight = mask[:, 1:].float()
    return float((nll * weight).sum() / weight.sum())


def logits_of(model, batch) -> torch.Tensor:
    input_ids, mask = batch
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=mask).logits.float()


@pytest.fixture(scope="module")
def quantized(checkpoint, tmp_path_factory):
    """quantized(method, bits) -> (out dir, record); each cell is quantized once per module."""
    root = tmp_path_factory.mktemp("quantized")
    done: dict[tuple[str, int], tuple[Path, dict]] = {}

    def get(method: str, bits: int):
        if (method, bits) not in done:
            out = root / f"{method}-{bits}"
            record = root / f"{method}-{bits}.json"
            calibration = make_texts(64, seed=7) if METHODS[method].calibration else None
            options = dict(OPTIONS.get(method, {}))
            info = quantize_cell(checkpoint, out, record, method, bits, options, calibration)
            assert json.loads(record.read_text()) == info
            done[method, bits] = out, info
        return done[method, bits]

    return get


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def test_reference_model_learned_something(reference, eval_batch):
    model, tokenizer = reference
    # The quantization checks below are only meaningful if the model is far from uniform.
    assert mean_nll(model, eval_batch) < math.log(len(tokenizer)) - 2.0


def check_cell(method, bits, out, info, checkpoint, reference, eval_batch, max_increase):
    model_fp, tokenizer = reference
    assert info["method"] == method and info["bits"] == bits
    assert info["output"] == str(out) and info["seconds"] > 0
    assert info["size_bytes"] > 0
    # Quantized linear layers: the safetensors must be smaller than the fp32 ones.
    assert 0 < info["weights_bytes"] < _dir_bytes(checkpoint)

    # The tokenizer travels with the checkpoint and is unchanged.
    from transformers import AutoTokenizer

    text = make_texts(1, seed=99)[0]
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == tokenizer(text)["input_ids"]

    model = load_quantized(method, out)
    assert not model.training
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    logits = logits_of(model, eval_batch)
    ref = logits_of(model_fp, eval_batch)
    assert logits.shape == ref.shape
    assert torch.isfinite(logits).all()
    assert (logits - ref).abs().max() > 1e-3, "quantized logits identical to fp32"
    loss, loss_fp = mean_nll(model, eval_batch), mean_nll(model_fp, eval_batch)
    assert -0.05 < loss - loss_fp < max_increase, (loss, loss_fp)
    return model, loss - loss_fp


@pytest.mark.parametrize(("bits", "max_increase"), [(4, 0.5), (2, 1.0)])
def test_gptq(bits, max_increase, quantized, checkpoint, reference, eval_batch):
    pytest.importorskip("gptqmodel")
    out, info = quantized("gptq", bits)
    assert info["backend"] == "gptqmodel" and info["backend_version"]
    assert info["calibration_rows"] > 0 and info["calibration_tokens"] > 0
    assert info["gptq_loss_mean"] is not None and info["gptq_loss_mean"] >= 0
    saved = json.loads((out / "quantize_config.json").read_text())
    assert saved["bits"] == bits and saved["group_size"] == GPTQ_OPTIONS["group_size"]
    model, _ = check_cell("gptq", bits, out, info, checkpoint, reference, eval_batch, max_increase)
    # Every quantized layer must compute in fp32 (see gptq._admit_fp32_torch_kernel).
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear

    qlayers = [m for m in model.modules() if isinstance(m, TorchLinear)]
    assert len(qlayers) == 8  # 2 layers x (qkv, dense, mlp up, mlp down)
    assert all(m.scales.dtype == torch.float32 for m in qlayers)


def test_gptq_fewer_bits_hurt_more(quantized, reference, eval_batch):
    pytest.importorskip("gptqmodel")
    losses = {
        b: mean_nll(load_quantized("gptq", quantized("gptq", b)[0]), eval_batch) for b in (2, 4)
    }
    assert losses[2] > losses[4] + 0.005, losses


def test_gptq_fp32_path_matches_supported_fp16_kernel(quantized, eval_batch):
    """Our fp32 TorchLinear path vs GPTQModel's officially supported fp16 one."""
    pytest.importorskip("gptqmodel")
    from qid.quantize import gptq

    out, _ = quantized("gptq", 2)
    fp32 = logits_of(gptq.load(out), eval_batch)
    fp16 = logits_of(gptq.load(out, dtype=torch.float16), eval_batch)
    scale = fp32.abs().max()
    assert (fp32 - fp16).abs().max() < 1e-2 * scale


def test_gptq_rejects_unsupported_bits(checkpoint, tmp_path):
    pytest.importorskip("gptqmodel")
    from qid.quantize import gptq

    with pytest.raises(ValueError, match="5-bit"):
        gptq.quantize(checkpoint, tmp_path / "q", 5, dict(GPTQ_OPTIONS), ["some text"])


@pytest.mark.parametrize("method", ["bnb_nf4", "bnb_fp4"])
def test_bnb(method, quantized, checkpoint, reference, eval_batch):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    out, info = quantized(method, 4)
    quant_type = method.removeprefix("bnb_")
    assert info["backend"] == "bitsandbytes" and info["quant_type"] == quant_type
    assert info["quantized_layers"] == 8
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["bnb_4bit_quant_type"] == quant_type and config["load_in_4bit"]
    model, _ = check_cell(method, 4, out, info, checkpoint, reference, eval_batch, 0.5)

    # The reloaded model must compute exactly like an fp32 model with the dequantized weights
    # (bitsandbytes' bf16 CPU fast path is switched off in bnb.load).
    dense = load_quantized(method, out)
    for name, module in list(dense.named_modules()):
        if isinstance(module, bnb.nn.Linear4bit):
            weight = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
            linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data, linear.bias.data = weight, module.bias.data.float()
            parent, _, child = name.rpartition(".")
            setattr(dense.get_submodule(parent), child, linear)
    torch.testing.assert_close(
        logits_of(model, eval_batch), logits_of(dense, eval_batch), rtol=1e-5, atol=1e-5
    )


def test_bnb_nf4_and_fp4_differ(quantized, eval_batch):
    pytest.importorskip("bitsandbytes")
    nf4 = logits_of(load_quantized("bnb_nf4", quantized("bnb_nf4", 4)[0]), eval_batch)
    fp4 = logits_of(load_quantized("bnb_fp4", quantized("bnb_fp4", 4)[0]), eval_batch)
    assert (nf4 - fp4).abs().max() > 1e-3


def test_bnb_rejects_other_bit_widths(checkpoint, tmp_path):
    pytest.importorskip("bitsandbytes")
    from qid.quantize import bnb

    with pytest.raises(ValueError, match="8-bit"):
        bnb.quantize(checkpoint, tmp_path / "q", 8, {"method": "bnb_nf4"}, None)
    with pytest.raises(ValueError, match="bnb_int8"):
        bnb.quantize(checkpoint, tmp_path / "q", 4, {"method": "bnb_int8"}, None)


def _block_linears(model) -> dict[str, torch.nn.Linear]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layers." in name
    }


@pytest.mark.parametrize(("bits", "max_increase"), [(4, 0.5), (2, 1.0)])
def test_awq(bits, max_increase, quantized, checkpoint, reference, eval_batch):
    pytest.importorskip("llmcompressor")
    out, info = quantized("awq", bits)
    assert info["backend"] == "llmcompressor" and info["backend_version"]
    assert info["storage"] == "packed" and info["format"] == "pack-quantized"
    assert info["calibration_rows"] == 64 and info["calibration_tokens"] > 64
    # Both mappings in both layers were smoothed; the chosen scales never do worse than none
    # (identity scales are a grid point), and somewhere they do better.
    assert info["awq_mappings"] == 4
    assert info["awq_error_ratio_min"] < 1.0 and info["awq_error_ratio_mean"] <= 1.0
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = saved["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == bits and weights["group_size"] == AWQ_OPTIONS["group_size"]
    assert weights["strategy"] == "group" and weights["symmetric"] is False
    model, _ = check_cell("awq", bits, out, info, checkpoint, reference, eval_batch, max_increase)
    assert len(_block_linears(model)) == 8  # 2 layers x (qkv, dense, mlp up, mlp down)


@pytest.mark.parametrize("bits", [4, 2])
def test_awq_weights_lie_on_each_groups_grid(bits, quantized, reference):
    """The reloaded (dequantized) weights are (q - zero) * scale with integer q of `bits` bits."""
    pytest.importorskip("llmcompressor")
    model = load_quantized("awq", quantized("awq", bits)[0])
    group = AWQ_OPTIONS["group_size"]
    for name, linear in _block_linears(model).items():
        out_features, in_features = linear.weight.shape
        w = linear.weight.detach().reshape(out_features, in_features // group, group)
        assert max(len(torch.unique(g)) for g in w.reshape(-1, group)) <= 2**bits, name
        # Scales and zero points stay on the module after decompression (compressed-tensors).
        scale = linear.weight_scale.detach()[..., None]
        zero = linear.weight_zero_point.detach().float()[..., None]
        q = w / scale + zero
        assert (q - q.round()).abs().max() < 1e-3, name
        assert q.round().min() >= -(2 ** (bits - 1)) and q.round().max() <= 2 ** (bits - 1) - 1
    # Embeddings, the output head and the final LayerNorm are not touched.
    ref_model, _ = reference
    for get in (
        lambda m: m.get_input_embeddings().weight,
        lambda m: m.get_output_embeddings().weight,
        lambda m: m.gpt_neox.final_layer_norm.weight,
    ):
        torch.testing.assert_close(get(model), get(ref_model), rtol=0, atol=0)
    assert not hasattr(model.get_output_embeddings(), "weight_scale")


def test_awq_fewer_bits_hurt_more(quantized, eval_batch):
    pytest.importorskip("llmcompressor")
    losses = {
        b: mean_nll(load_quantized("awq", quantized("awq", b)[0]), eval_batch) for b in (2, 4)
    }
    assert losses[2] > losses[4] + 0.005, losses


def _with_activation_outliers(src: Path, dst: Path, factor: float = 30.0, channels=(3, 17)):
    """The same function with a few large activation channels, as real LLMs have.

    Each LayerNorm's weight and bias are multiplied by `factor` on `channels` and the input
    columns of the Linear layer it feeds are divided by it: the logits do not change, but those
    columns become small next to the rest of their quantization group.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    idx = torch.tensor(channels)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            for norm, linear in (
                (layer.input_layernorm, layer.attention.query_key_value),
                (layer.post_attention_layernorm, layer.mlp.dense_h_to_4h),
            ):
                norm.weight[idx] *= factor
                norm.bias[idx] *= factor
                linear.weight[:, idx] /= factor
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return model.eval()


def test_awq_protects_activation_outlier_channels(checkpoint, reference, eval_batch, tmp_path):
    """AWQ's point: salient (large-activation) channels keep their precision, unlike with RTN.

    On the plain tiny model AWQ and RTN lose about the same at 4 bits (its activations have no
    outliers; which one is ahead is noise), so the comparison is made where AWQ's scaling has
    something to do. The reparametrization is exact, so any difference is the quantizers'.
    """
    pytest.importorskip("llmcompressor")
    ref_model, _ = reference
    outliers = _with_activation_outliers(checkpoint, tmp_path / "outliers")
    loss_fp = mean_nll(outliers, eval_batch)
    assert abs(loss_fp - mean_nll(ref_model, eval_batch)) < 1e-4

    dq = {}
    for method in ("rtn", "awq"):
        out = tmp_path / method
        calibration = make_texts(64, seed=7) if method == "awq" else None
        record = tmp_path / f"{method}.json"
        options = dict(AWQ_OPTIONS)
        quantize_cell(tmp_path / "outliers", out, record, method, 4, options, calibration)
        dq[method] = mean_nll(load_quantized(method, out), eval_batch) - loss_fp
    assert dq["rtn"] > 0.005, dq  # the outlier channels do hurt round-to-nearest ...
    assert dq["awq"] < dq["rtn"] / 3, dq  # ... and AWQ's scales take most of that back


def test_awq_rejects_unsupported_bits_and_missing_calibration(checkpoint, tmp_path):
    pytest.importorskip("llmcompressor")
    from qid.quantize import awq

    with pytest.raises(ValueError, match="1-bit"):
        awq.quantize(checkpoint, tmp_path / "q", 1, dict(AWQ_OPTIONS), ["some text"])
    with pytest.raises(ValueError, match="calibration"):
        awq.quantize(checkpoint, tmp_path / "q", 4, dict(AWQ_OPTIONS), None)
    assert METHODS["awq"].bits == awq.SUPPORTED_BITS


def test_reload_in_fresh_process(quantized, eval_batch, tmp_path):
    """What the workflow does: quantize in one job, evaluate in another."""
    pytest.importorskip("gptqmodel")
    pytest.importorskip("bitsandbytes")
    cells = [("gptq", quantized("gptq", 4)[0]), ("bnb_nf4", quantized("bnb_nf4", 4)[0])]
    if importlib.util.find_spec("llmcompressor"):  # the awq extra
        cells.append(("awq", quantized("awq", 4)[0]))
    torch.save(eval_batch, tmp_path / "batch.pt")
    script = (
        "import sys, torch\n"
        "from qid.quantize import load_quantized\n"
        "ids, mask = torch.load(sys.argv[1])\n"
        "for i in range(2, len(sys.argv), 3):\n"
        "    model = load_quantized(sys.argv[i], sys.argv[i + 1])\n"
        "    with torch.no_grad():\n"
        "        logits = model(input_ids=ids, attention_mask=mask).logits\n"
        "    torch.save(logits, sys.argv[i + 2])\n"
    )
    args = [str(tmp_path / "batch.pt")]
    for method, out in cells:
        args += [method, str(out), str(tmp_path / f"{method}.pt")]
    workflow_dir = str(Path(__file__).resolve().parents[1] / "workflow")
    pythonpath = [workflow_dir, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method, out in cells:
        fresh = torch.load(tmp_path / f"{method}.pt")
        here = logits_of(load_quantized(method, out), eval_batch)
        torch.testing.assert_close(fresh, here, rtol=0, atol=0)


def test_gptq_packs_without_compiling_the_same_bytes_as_the_extension(checkpoint, tmp_path):
    """qid keeps GPTQModel's JIT-compiled packing extension off (a g++ build on a machine's first
    quantization); its Python packer must write the bytes the extension writes, and a user's
    GPTQMODEL_DISABLE_PACK_EXT=0 must still get the extension."""
    pytest.importorskip("gptqmodel")
    from safetensors.torch import load_file

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from zoo import make_texts\n"
        "from qid.quantize import quantize_cell\n"
        "out, bits = Path(sys.argv[2]), int(sys.argv[3])\n"
        "quantize_cell(Path(sys.argv[1]), out, out.with_suffix('.json'), 'gptq', bits,\n"
        f"              {GPTQ_OPTIONS!r}, make_texts(64, seed=7))\n"
    )
    root = Path(__file__).resolve().parents[1]
    path = [str(root / "workflow"), str(root / "tests"), os.environ.get("PYTHONPATH", "")]
    builds = {}
    for ext in (None, "0"):
        build = tmp_path / f"extensions-{ext}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        env["GPTQMODEL_TORCH_EXTENSIONS_DIR"] = str(build)
        env.pop("GPTQMODEL_DISABLE_PACK_EXT", None)
        if ext is not None:
            env["GPTQMODEL_DISABLE_PACK_EXT"] = ext
        for bits in (2, 4):
            out = tmp_path / f"ext-{ext}-{bits}"
            proc = subprocess.run(
                [sys.executable, "-c", script, str(checkpoint), str(out), str(bits)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
        builds[ext] = sorted(p.name for p in build.rglob("*.so"))
    assert builds[None] == [], f"qid's default compiled GPTQModel's extension: {builds[None]}"
    assert builds["0"], "GPTQMODEL_DISABLE_PACK_EXT=0 did not build the extension"
    for bits in (2, 4):
        ours = load_file(tmp_path / f"ext-None-{bits}" / "model.safetensors")
        theirs = load_file(tmp_path / f"ext-0-{bits}" / "model.safetensors")
        packed = [k for k in ours if k.endswith((".qweight", ".qzeros"))]
        assert packed and ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{bits}-bit {key} differs"


@pytest.mark.parametrize(("method", "bits"), [("gptq", 2), ("gptq", 4), ("bnb_nf4", 4)])
def test_fake_quant_matches_the_packed_kernels(method, bits, quantized, eval_batch):
    """Evaluating by the dequantized weights in plain nn.Linear layers (`evaluate.fake_quant`)
    gives the packed kernels' loss to 1e-3 nats, with no packed layer left."""
    pytest.importorskip("gptqmodel" if method == "gptq" else "bitsandbytes")
    out, _ = quantized(method, bits)
    packed = load_quantized(method, out)
    fake = load_quantized(method, out, fake_quant=True)
    linears = [m for m in fake.modules() if isinstance(m, torch.nn.Linear)]
    assert all(type(m) is torch.nn.Linear for m in linears) and len(linears) >= 8
    assert abs(mean_nll(fake, eval_batch) - mean_nll(packed, eval_batch)) < 1e-3


def test_released_checkpoints_are_fetched_as_their_own_method(
    quantized, checkpoint, eval_batch, tmp_path, monkeypatch
):
    """The authors' GPTQ checkpoints: a hub repo per (size, step, bits), here an offline cache
    holding one of our GPTQ checkpoints under the authors' naming."""
    pytest.importorskip("gptqmodel")
    import shutil

    from conftest import put_in_hub_cache

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    ours, _ = quantized("gptq", 2)
    cache = tmp_path / "hub"
    repo = "Xu-Ouyang/pythia-tiny-int2-step10-GPTQ-wikitext2"
    commit = put_in_hub_cache(cache, repo, "main", ours)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint, ckpt)
    (ckpt / "qid_checkpoint.json").write_text(json.dumps({"size": "tiny", "step": 10}))
    out = tmp_path / "released-2bit"
    options = {"cache_dir": str(cache)}
    info = quantize_cell(ckpt, out, tmp_path / "r.json", "released", 2, options, None)
    assert info["repo"] == repo and info["commit"] == commit
    theirs = mean_nll(load_quantized("released", out), eval_batch)
    assert theirs == mean_nll(load_quantized("gptq", ours), eval_batch)
    with pytest.raises(QidError, match="int3-step10-GPTQ-wikitext2' at revision 'main' is not in"):
        quantize_cell(ckpt, tmp_path / "r3", tmp_path / "r3.json", "released", 3, options, None)
