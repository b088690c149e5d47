"""BitNet b1.58: ternary weights in the forward pass, gradients to the latent weights through the
straight-through estimator, and checkpoints that come back as BitNet with the same loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TEXTS
from torch import nn
from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

from qid import bitnet
from qid.bitnet import BitLinear, absmax_8bit, compare, restore, to_bitnet, to_markdown
from qid.checkpoints import model_config, read_meta, save, train
from qid.config import ConfigError, check_config
from qid.data import read_texts
from qid.evaluate import evaluate, run

ROOT = Path(__file__).resolve().parents[1]

ARCH = {"hidden_size": 64, "num_layers": 2, "num_heads": 2}


def tiny_model(vocab: int = 300, seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(model_config(ARCH, vocab, 64, 0.25))


def test_bitlinear_forward_uses_ternary_weights_times_the_absmean_scale(monkeypatch):
    torch.manual_seed(0)
    layer = BitLinear(48, 16)
    seen = {}
    linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        seen["w"], seen["x"] = w.detach().clone(), x.detach().clone()
        return linear(x, w, b)

    monkeypatch.setattr(bitnet.F, "linear", spy)
    layer(torch.randn(3, 5, 48))
    scale = layer.weight.detach().abs().mean()
    codes = seen["w"] / scale
    assert torch.equal(codes, codes.round())  # exactly integers times the scale ...
    assert set(codes.unique().tolist()) == {-1.0, 0.0, 1.0}  # ... and ternary
    # Round-to-nearest of w / mean|w|: the code is 0 exactly where |w| < scale / 2.
    small = layer.weight.detach().abs() < scale / 2
    assert torch.equal(codes == 0, small)
    assert torch.equal(codes[~small], layer.weight.detach().sign()[~small])
    # Activations: 8-bit absmax per token, at most 256 levels, the row's max kept exactly.
    x = seen["x"].reshape(-1, 48)
    for row in x:
        step = row.abs().max() / 127
        assert torch.allclose(row / step, (row / step).round(), atol=1e-4)


def test_gradients_reach_the_latent_weights_straight_through():
    torch.manual_seed(0)
    layer = BitLinear(32, 8)
    x = torch.randn(4, 32, requires_grad=True)
    upstream = torch.randn(4, 8)
    (layer(x) * upstream).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    # STE: the gradient of a Linear evaluated at the quantized input and weights.
    xq = absmax_8bit(x.detach())
    torch.testing.assert_close(layer.weight.grad, upstream.T @ xq)
    torch.testing.assert_close(layer.bias.grad, upstream.sum(0))
    torch.testing.assert_close(x.grad, upstream @ layer.quantized_weight().detach())


def test_to_bitnet_swaps_the_block_linears_only_and_keeps_the_parameters():
    model = tiny_model()
    before = {n: p for n, p in model.named_parameters()}
    to_bitnet(model)
    swapped = {n for n, m in model.named_modules() if isinstance(m, BitLinear)}
    assert len(swapped) == 4 * ARCH["num_layers"]
    assert {n.rsplit(".", 1)[1] for n in swapped} == {
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
    }
    assert type(model.get_output_embeddings()) is nn.Linear  # the head stays full precision
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] for n in before)  # same tensors: same init, same optimiser
    assert model.config.qid_bitnet is True


def test_a_bitnet_model_saves_and_reloads_with_the_same_loss(tmp_path, tokenizer):
    model = to_bitnet(tiny_model(len(tokenizer)))
    x = torch.randint(0, len(tokenizer), (4, 32))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):  # move off the initialisation
        optim.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=x, labels=x).loss.item()
    save(model, tokenizer, tmp_path / "step3", {"step": 3, "bitnet": True})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "step3").eval()
    with torch.no_grad():
        plain = loaded(input_ids=x, labels=x).loss.item()
        reloaded = restore(loaded)(input_ids=x, labels=x).loss.item()
    assert reloaded == pytest.approx(loss, abs=1e-6)
    assert abs(plain - loss) > 1e-3  # without the BitLinears it is another model


def test_train_bitnet_logs_the_loss_and_qid_evaluate_reloads_it_as_bitnet(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    ids = np.array(tokenizer(" ".join(TEXTS * 4))["input_ids"], dtype=np.uint16)
    np.save(tmp_path / "ids.npy", ids)
    training = {
        "context": 32,
        "batch_size": 4,
        "lr": 4e-3,
        "warmup_steps": 1,
        "min_lr_ratio": 0.1,
        "weight_decay": 0.1,
        "betas": [0.9, 0.95],
    }
    logs = {}
    for flag in (False, True):
        out = tmp_path / f"bitnet{flag}"
        logs[flag] = train(
            "s",
            "h64-l2",
            ARCH,
            training,
            [2, 4],
            0,
            tmp_path / "ids.npy",
            tmp_path / "tok",
            out / "ckpt",
            out / "log.parquet",
            bitnet=flag,
        )
        assert pd.read_parquet(out / "log.parquet").equals(logs[flag])
        assert read_meta(out / "ckpt" / "step4")["bitnet"] is flag
        config = json.loads((out / "ckpt" / "step4" / "config.json").read_text())
        assert config.get("qid_bitnet", False) is flag
    bitnet_log, twin = logs[True], logs[False]
    assert bitnet_log.step.tolist() == twin.step.tolist() == [1, 2, 3, 4]
    assert bitnet_log.tokens.tolist() == twin.tokens.tolist()  # the same token budget
    assert bitnet_log.bitnet.all() and not twin.bitnet.any()
    assert not np.allclose(bitnet_log.loss, twin.loss)  # the quantization changes the model
    # qid evaluate's loader rebuilds the BitLinears of a BitNet checkpoint.
    texts = tmp_path / "texts.parquet"
    pd.DataFrame({"text": TEXTS[:6]}).to_parquet(texts)
    checkpoint = tmp_path / "bitnetTrue" / "ckpt" / "step4"
    (record,) = run(checkpoint, [texts], [tmp_path / "eval.json"], context=32)
    plain = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    loss_plain = evaluate(plain, tokenizer, read_texts(texts), 32, 4096)["loss"]
    loss_bitnet = evaluate(restore(plain), tokenizer, read_texts(texts), 32, 4096)["loss"]
    assert record["loss"] == pytest.approx(loss_bitnet, rel=1e-9)
    assert abs(loss_plain - loss_bitnet) > 1e-3


def test_compare_puts_bitnet_beside_its_twin_and_2bit_ptq():
    evals = [
        {
            "suite": "s",
            "size": "a",
            "n_params": 10,
            "step": 9,
            "tokens": 90,
            "eval_set": "e",
            "loss": 5.0,
        },
    ]
    rows = []
    for method, bits, loss_q in [("rtn", 2, 6.5), ("rtn", 4, 5.3), ("gptq", 2, 6.0)]:
        for step in (3, 9):
            rows.append(
                {
                    "suite": "s",
                    "size": "a",
                    "step": step,
                    "eval_set": "e",
                    "method": method,
                    "bits": bits,
                    "loss_16": 5.2 + step,
                    "loss_q": loss_q + step,
                }
            )
    out = compare(evals, pd.DataFrame(rows))
    (row,) = out.to_dict("records")
    assert row["loss_bitnet"] == 5.0 and row["loss_16"] == 14.2
    assert row["loss_rtn_2bit"] == 15.5 and row["loss_gptq_2bit"] == 15.0
    assert "loss_rtn_4bit" not in row
    assert row["gap_16"] == pytest.approx(-9.2)
    text = to_markdown(out)
    assert "| BitNet b1.58 | 16-bit | gptq 2-bit | rtn 2-bit |" in text
    assert "| s | a | 10 | 9 | e | 5.0000 | 14.2000 | 15.0000 | 15.5000 | -9.2000 |" in text
    # Without a QiD table the BitNet losses still come out, the rest as '-'.
    alone = compare(evals, pd.DataFrame())
    assert np.isnan(alone.gap_16.iloc[0]) and "| 5.0000 | - |" in to_markdown(alone)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(suite="pythia"), r"'bitnet.suite': 'pythia' is not a suite"),
        (
            lambda b: b.update(sizes=["h64-l2", "h9-l9"]),
            r"'bitnet.sizes': 'h9-l9' is not a size of suite 'neox-sotu'",
        ),
        (  # the token budget is the twin's: no context or batch size of its own
            lambda b: b["training"].update(batch_size=8),
            r"'bitnet.training.batch_size' is not allowed",
        ),
        (lambda b: b["training"].update(lr=0), r"'bitnet.training.lr': 0 is less than or equal"),
        (lambda b: b.pop("sizes"), r"'bitnet': 'sizes' is a required property"),
    ],
)
def test_a_bad_bitnet_block_is_named(edit, message):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert config["bitnet"]["suite"] in config["suites"]
    edit(config["bitnet"])
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_qid_bitnet_names_an_evals_file_that_is_not_json(tmp_path, capsys):
    from qid.cli import main

    bad = tmp_path / "eval.json"
    bad.write_text("not json")
    with pytest.raises(SystemExit):
        main(["bitnet", str(bad), "--out-md", str(tmp_path / "b.md")])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qid bitnet: error: eval record '{bad}' is not JSON")
    assert "\n" not in err
