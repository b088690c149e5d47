"""AWQ (llm-compressor) on the zoo's architectures: each quantizes with its mappings (ours for
GPT-NeoX, llm-compressor's for the rest, or the config's), and what cannot work is refused in
one line before any weights load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import zoo

from qid import QidError
from qid.quantize import layers, load_quantized, quantize_cell

pytest.importorskip("llmcompressor")

OPTIONS = {"group_size": 8, "calibration_length": 64}
QUANTIZED = ["llama", "qwen2", "mistral", "phi3", "gpt_neox"]
# OPT has no AWQ mappings in llm-compressor: each pre-norm LayerNorm feeds the linear layers
# after it, v_proj feeds out_proj. The decoder's own final_layer_norm is left out by the `\d+`.
OPT_MAPPINGS = [
    {"smooth": r".*layers\.\d+\.self_attn_layer_norm$", "balance": [".*q_proj$", ".*k_proj$",
                                                                    ".*v_proj$"]},
    {"smooth": r".*v_proj$", "balance": [r".*out_proj$"]},
    {"smooth": r".*layers\.\d+\.final_layer_norm$", "balance": [r".*fc1$"]},
]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(arch) -> a trained zoo model's directory, built once per module."""
    root = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = zoo.build(arch, root / arch)
        return built[arch]

    return get


def mean_nll(model, tokenizer) -> float:
    """Mean next-token NLL on held-out zoo texts (not the calibration ones)."""
    return zoo.mean_nll(model, tokenizer, zoo.make_texts(16, seed=123))


@pytest.fixture(scope="module")
def cell(checkpoint, tmp_path_factory):
    """cell(arch, bits, options) -> (record, loss of the reloaded model, 16-bit loss)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("awq")
    done: dict = {}

    def get(arch: str, bits: int, options: dict = OPTIONS):
        key = arch, bits, repr(options)
        if key not in done:
            path = checkpoint(arch)
            out = root / f"{arch}-{bits}-{len(done)}"
            calibration = zoo.make_texts(32, seed=7)
            info = quantize_cell(path, out, out.with_suffix(".json"), "awq", bits, options,
                                 calibration)  # fmt: skip
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = load_quantized("awq", out)
            # The reloaded model has scales on exactly the surveyed layers.
            scaled = {n for n, m in model.named_modules() if hasattr(m, "weight_scale")}
            assert scaled == {layer.name for layer in layers.survey(model).layers}
            assert len(scaled) == info["quantized_layers"]
            base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            done[key] = info, mean_nll(model, tokenizer), mean_nll(base, tokenizer)
            print(f"awq {arch} {bits}-bit: {info['seconds']} s, qid {done[key][1] - done[key][2]}")
        return done[key]

    return get


@pytest.mark.parametrize("arch", QUANTIZED)
def test_awq_quantizes_each_architecture(arch, cell):
    info2, loss2, loss16 = cell(arch, 2)
    info4, loss4, _ = cell(arch, 4)
    assert math.isfinite(loss2) and math.isfinite(loss4)
    assert loss2 - loss16 > 0, (loss2, loss16)  # 2-bit QiD
    assert loss2 > loss4, (loss2, loss4)
    assert info2["mappings_from"] == ("qid" if arch == "gpt_neox" else "llm-compressor")
    assert info2["awq_mappings"] > 0 and info2["layer_kinds"] == ["Linear"]
    # Every linear map of the 2 blocks (phi3 and gpt_neox fuse theirs: 4 a block), nothing else.
    assert info2["quantized_layers"] == 2 * (4 if arch in ("phi3", "gpt_neox") else 7)
    assert any("head" in why for why in info2["skipped_layers"].values())


def test_opt_quantizes_with_mappings_from_the_config(cell):
    info, loss2, loss16 = cell("opt", 2, {**OPTIONS, "mappings": OPT_MAPPINGS})
    assert info["mappings_from"] == "methods.awq.mappings"
    assert info["awq_mappings"] == 6  # 3 mappings x 2 blocks, all smoothed
    assert info["quantized_layers"] == 12
    assert loss2 - loss16 > 0


@pytest.fixture
def without_weights(tmp_path):
    """without_weights(arch) -> a zoo checkpoint (untrained) whose weights file was deleted: a
    refusal from it cannot have read weights."""

    def get(arch: str) -> Path:
        path = zoo.build(arch, tmp_path / arch, steps=0)
        (path / "model.safetensors").unlink()
        return path

    return get


WIDER = [{"smooth": ".*input_layernorm$", "balance": [".*down_proj$"]}]
NOTHING = [{"smooth": ".*input_layernorm$", "balance": [".*q_proj$", ".*qq_proj$"]}]


@pytest.mark.parametrize(
    ("arch", "options", "message"),
    [
        ("gpt2", OPTIONS, r"Conv1D .*'transformer\.h\.0\..*nn\.Linear only; use rtn or gptq"),
        ("opt", OPTIONS, r"no AWQ mappings for OPTForCausalLM; .*'methods\.awq\.mappings'.*smooth"),
        ("olmo2", OPTIONS, r"no AWQ mappings for Olmo2ForCausalLM"),
        ("llama", {**OPTIONS, "mappings": NOTHING}, r"'re:\.\*qq_proj\$' matches no module"),
        ("llama", {**OPTIONS, "mappings": WIDER}, r"layernorm' gives 72 outputs, .* 200"),
        *[
            (
                arch,
                {**OPTIONS, "group_size": 32},
                r"'methods\.awq\.group_size': group size 32 "
                r"does not divide its input width.*input width (72|200)",
            )
            for arch in QUANTIZED
        ],
    ],  # fmt: skip
)
def test_refused_in_one_line_before_weights_load(arch, options, message, without_weights, tmp_path):
    path = without_weights(arch)
    out = tmp_path / "out"
    with pytest.raises(QidError, match=message) as refused:
        quantize_cell(path, out, tmp_path / "r.json", "awq", 2, options, zoo.make_texts(4, 7))
    assert "\n" not in str(refused.value)
    assert not out.exists()


def test_mappings_resolve_config_then_ours_then_llm_compressor(checkpoint):
    from qid.quantize.awq import resolve_mappings

    def meta(arch):
        return layers.meta_model(checkpoint(arch))

    assert resolve_mappings(meta("llama"), {})[1] == "llm-compressor"
    assert resolve_mappings(meta("gpt_neox"), {})[0][0][1] == ["re:.*query_key_value$"]
    mappings, source = resolve_mappings(meta("gpt_neox"), {"mappings": OPT_MAPPINGS[1:2]})
    assert source == "methods.awq.mappings"
    assert mappings == [("re:.*v_proj$", ["re:.*out_proj$"])]


def test_the_readme_awq_example_is_valid_and_the_one_tested():
    import copy
    import re
    import textwrap

    import yaml

    from qid.config import check_config

    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text().split("- `awq` —")[1].split("\n- `bnb_nf4`")[0]
    block = yaml.safe_load(textwrap.dedent(re.search(r"```yaml\n(.*?)```", section, re.S)[1]))
    assert block["methods"]["awq"]["mappings"] == OPT_MAPPINGS
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["methods"]["awq"] = block["methods"]["awq"]
    check_config(copy.deepcopy(config))


def test_llm_compressor_writes_nothing_to_stdout(checkpoint, tmp_path, capfd):
    """Its loguru console log goes to stderr: stdout is qid's own (`qid diagnose --json`)."""
    from qid.quantize import awq

    ckpt, out = checkpoint("gpt_neox"), tmp_path / "q"
    capfd.readouterr()  # building the model (a tokenizer's progress) is not the backend
    awq.quantize(ckpt, out, 4, OPTIONS, zoo.make_texts(8, seed=7))
    awq.load(out)
    captured = capfd.readouterr()
    assert captured.out == "", captured.out[-2000:]
    assert "No accelerator available" in captured.err  # kept: on a GPU node it means trouble
