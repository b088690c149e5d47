"""GPTQ (GPTQModel) on every zoo architecture, 2 and 4 bits, widths the group size does not divide.

Each cell is quantized through `qid.quantize.quantize_cell`, then every cell is reloaded and
evaluated in ONE fresh process (what the workflow does: quantize in one job, evaluate in
another). Also: what GPTQ cannot serve is refused before weights load, the record agrees with
the saved layers, the calibration warning, a clean stdout, and GPTQ beating RTN on a model
calibrated in domain.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import zoo

from qid import QidError
from qid.quantize import layers as found
from qid.quantize import load_quantized, preflight, quantize_cell

pytest.importorskip("gptqmodel")

from qid.quantize import gptq  # noqa: E402  (after the skip: it configures gptqmodel's import)

GROUP = 32  # divides neither 72 nor 200: every layer ends in a shorter last group
BITS = (2, 4)
CALIBRATION = zoo.make_texts(64, seed=7)
EVAL_TEXTS = zoo.make_texts(24, seed=123)
# Linear maps per block: q/k/v/o + gate/up/down; fused qkv (+ fused gate_up on Phi-3); OPT's fc1/2.
LAYERS = {"llama": 7, "qwen2": 7, "mistral": 7, "olmo2": 7, "phi3": 4, "gpt_neox": 4, "gpt2": 4,
          "opt": 6}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    return {arch: zoo.build(arch, root / arch) for arch in zoo.ARCHS}


@pytest.fixture(scope="module")
def cells(checkpoints, tmp_path_factory) -> dict[tuple[str, int], tuple[Path, dict]]:
    """(arch, bits) -> (quantized dir, record), every arch at 2 and 4 bits, group 32."""
    root = tmp_path_factory.mktemp("gptq")
    done = {}
    for arch, checkpoint in checkpoints.items():
        for bits in BITS:
            out = root / f"{arch}-{bits}"
            with warnings.catch_warnings():  # 64 short texts: the small-calibration warning
                warnings.simplefilter("ignore")
                info = quantize_cell(
                    checkpoint, out, out.with_suffix(".json"), "gptq", bits,
                    {"group_size": GROUP, "calibration_length": 64}, CALIBRATION,
                )  # fmt: skip
            done[arch, bits] = out, info
    return done


# Loads 16-bit and quantized models of every cell, and the GPTQ layers it finds in each.
FRESH = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from transformers import AutoModelForCausalLM, AutoTokenizer
from qid.quantize import gptq, load_quantized
gptq._import()  # first, as qid does: the import prints a banner that must not reach stdout
from gptqmodel.nn_modules.qlinear.torch import TorchLinear
from zoo import mean_nll
cells, texts = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
result = {}
for key, (checkpoint, out) in cells.items():
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    model = load_quantized("gptq", out)
    result[key] = {
        "base": mean_nll(base, tokenizer, texts),
        "loss": mean_nll(model, tokenizer, texts),
        "layers": {n: [m.in_features, m.out_features] for n, m in model.named_modules()
                   if isinstance(m, TorchLinear)},
    }
json.dump(result, open(sys.argv[4], "w"))
"""


@pytest.fixture(scope="module")
def fresh(cells, checkpoints, tmp_path_factory) -> dict[str, dict]:
    """Every cell reloaded and evaluated in one fresh process; its stdout must stay empty."""
    root = tmp_path_factory.mktemp("fresh")
    spec = {f"{a}-{b}": [str(checkpoints[a]), str(out)] for (a, b), (out, _) in cells.items()}
    (root / "cells.json").write_text(json.dumps(spec))
    (root / "texts.json").write_text(json.dumps(EVAL_TEXTS))
    workflow_dir = str(Path(__file__).resolve().parents[1] / "workflow")
    pythonpath = [workflow_dir, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    args = [str(Path(__file__).parent), *(str(root / n) for n in ("cells.json", "texts.json"))]
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, *args, str(root / "out.json")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "", proc.stdout[-2000:]  # loading GPTQ printed to stdout
    return json.loads((root / "out.json").read_text())


def test_every_architecture_quantizes_and_reloads(cells, fresh, checkpoints):
    rows = []
    for arch in zoo.ARCHS:
        survey = found.survey(found.meta_model(checkpoints[arch]))
        qid = {}
        for bits in BITS:
            out, info = cells[arch, bits]
            got = fresh[f"{arch}-{bits}"]
            assert math.isfinite(got["loss"]) and math.isfinite(got["base"]), (arch, bits, got)
            qid[bits] = got["loss"] - got["base"]
            # The record lists the layers qid finds; the reload finds what was saved.
            assert info["quantized_layers"] == len(survey.layers) == LAYERS[arch] * zoo.LAYERS
            assert info["quantized_params"] == survey.params
            assert {n: tuple(w) for n, w in got["layers"].items()} == gptq._saved_layers(out)
            assert info["gptq_modules"] == len(got["layers"])
        assert qid[2] > 0.01, (arch, qid)
        assert qid[2] > qid[4] - 0.01, (arch, qid)
        rows.append(
            f"{arch:9s} {len(survey.layers):3d} layers {'/'.join(cells[arch, 2][1]['layer_kinds'])}"
            f" QiD 2-bit {qid[2]:.4f} 4-bit {qid[4]:.4f}"
            f" ({cells[arch, 2][1]['seconds']:.1f} s, {cells[arch, 4][1]['seconds']:.1f} s)"
        )
    print("\n" + "\n".join(rows))


def test_conv1d_and_tied_and_split_layers_are_recorded(cells):
    assert cells["gpt2", 2][1]["layer_kinds"] == ["Conv1D"]
    for arch in ("llama", "gpt2", "opt"):  # tied heads stay out, named as such
        assert "tied" in cells[arch, 2][1]["skipped_layers"]["lm_head"]
    # GPTQModel splits Phi-3's fused gate_up_proj: two GPTQ modules for one linear map.
    phi3 = cells["phi3", 2][1]
    assert phi3["gptq_modules"] == phi3["quantized_layers"] + zoo.LAYERS


@pytest.mark.parametrize("arch", list(zoo.ARCHS))
def test_group_sizes_gptq_cannot_serve_are_refused_before_weights_load(arch, tmp_path):
    config = zoo.config(arch, 512, 0)
    config.save_pretrained(tmp_path)  # a config and no weights: preflight must not need any
    for group, says in [(8, "cannot be packed by GPTQModel"), (128, "wider than the layer")]:
        with pytest.raises(QidError, match="methods.gptq.group_size") as err:
            preflight("gptq", 2, {"group_size": group}, tmp_path)
        message = str(err.value)
        assert "\n" not in message and says in message and str(group) in message, message
    with pytest.raises(QidError, match="'methods.gptq.bits'.*input width (72|200);") as err:
        preflight("gptq", 3, {"group_size": GROUP}, tmp_path)  # GPTQ packs 3 bits 32 at a time
    assert "\n" not in str(err.value)
    preflight("gptq", 2, {"group_size": GROUP}, tmp_path)  # a shorter last group is fine
    preflight("gptq", 2, {"group_size": -1}, tmp_path)


def test_a_saved_layer_set_that_disagrees_is_an_error(checkpoints):
    survey = found.survey(found.meta_model(checkpoints["llama"]))
    saved = {layer.name: (layer.in_features, layer.out_features) for layer in survey.layers}
    gptq.check_saved_layers(survey, saved, "llama")
    missing = dict(list(saved.items())[1:])
    with pytest.raises(QidError, match=r"qid's model.layers.0.self_attn.q_proj \(72, 72\) vs "
                       r"GPTQModel's none \(in, out widths\)$"):  # fmt: skip
        gptq.check_saved_layers(survey, missing, "llama")
    narrower = {**saved, "model.layers.1.mlp.up_proj": (72, 8)}
    with pytest.raises(QidError, match=r"up_proj \(72, 200\) vs GPTQModel's \S+up_proj \(72, 8\)"):
        gptq.check_saved_layers(survey, narrower, "llama")
    extra = {**saved, "model.layers.1.mlp.extra": (200, 8)}
    with pytest.raises(QidError, match=r"qid's none vs GPTQModel's model.layers.1.mlp.extra"):
        gptq.check_saved_layers(survey, extra, "llama")


def test_small_calibration_warns_once_and_stdout_stays_clean(checkpoints, tmp_path, capfd):
    out = tmp_path / "q"
    with pytest.warns(UserWarning) as caught:
        gptq.quantize(
            checkpoints["gpt2"], out, 4, {"group_size": GROUP, "calibration_length": 64},
            CALIBRATION,
        )  # fmt: skip
    ours = [w for w in caught if "data.calibration" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert "64 texts" in message and "data.calibration.n_samples" in message
    assert "data.calibration.length" in message and "256 texts of 256 tokens" in message
    gptq.load(out)
    captured = capfd.readouterr()
    assert captured.out == "", captured.out[-2000:]
    # GPTQModel's own two lines about the calibration size are replaced by ours.
    assert "Calibration dataset size" not in captured.err


def test_defaults_come_from_the_registry():
    from qid.quantize import METHODS

    assert gptq.DEFAULT_CALIBRATION_LENGTH == METHODS["gptq"].recommended.length
    assert gptq.RECOMMENDED is METHODS["gptq"].recommended


def build_wide_llama(path: Path, steps: int, seed: int = 0) -> Path:
    """zoo's llama with widths 96 and 256: GPTQModel packs 3 bits only on multiples of 32."""
    from transformers import AutoModelForCausalLM

    texts = zoo.make_texts(300, seed=0)
    tokenizer = zoo.build_tokenizer(texts)
    config = zoo.config("llama", len(tokenizer), tokenizer.eos_token_id)
    config.hidden_size, config.intermediate_size, config.head_dim = 96, 256, 24
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    zoo.train(model, tokenizer, texts, steps)
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_gptq_beats_rtn_when_calibrated_in_domain(tmp_path):
    """A model trained longer, calibrated on enough in-domain text, evaluated on held-out text:
    GPTQ's error-compensating updates must beat round-to-nearest on the same grid (3 and 2
    bits, groups of 16, asymmetric like RTN). Margins over model seeds 0/1/2: README.md."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = build_wide_llama(tmp_path / "llama", steps=150)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    held_out = zoo.make_texts(64, seed=500)
    base = zoo.mean_nll(AutoModelForCausalLM.from_pretrained(checkpoint), tokenizer, held_out)
    options = {
        "rtn": ({"group_size": 16}, None),
        "gptq": (
            {"group_size": 16, "symmetric": False, "calibration_length": 64},
            zoo.make_texts(256, seed=100),  # in domain, disjoint from the held-out texts
        ),
    }
    for bits in (3, 2):
        qid = {}
        for method, (opts, calibration) in options.items():
            out = tmp_path / f"{method}-{bits}"
            start = time.perf_counter()
            with warnings.catch_warnings():  # 64-token texts: below GPTQModel's 256
                warnings.simplefilter("ignore")
                quantize_cell(
                    checkpoint, out, out.with_suffix(".json"), method, bits, opts, calibration
                )
            qid[method] = zoo.mean_nll(load_quantized(method, out), tokenizer, held_out) - base
            print(
                f"{bits}-bit {method}: QiD {qid[method]:.4f} ({time.perf_counter() - start:.1f} s)"
            )
        assert qid["rtn"] > 0.01, (bits, qid)  # it must hurt, or the comparison says nothing
        assert qid["gptq"] < 0.8 * qid["rtn"], (bits, qid)


def test_the_usual_group_sizes_are_ones_the_kernel_packs():
    """The dry run trusts these without importing GPTQModel."""
    from qid.quantize.gptq import USUAL_GROUP_SIZES, _kernel_group_sizes

    assert set(USUAL_GROUP_SIZES) <= set(_kernel_group_sizes())
