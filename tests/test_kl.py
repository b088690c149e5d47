"""Sharper measures per cell (issue 13, item 3): KL from the 16-bit model, top-1 agreement and
QiD in bits per byte (qid.divergence), through evaluate, qid cells, aggregate and qid fit."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TEXTS
from test_laws import TRUE, synthetic
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from qid import QidError, grid
from qid.aggregate import aggregate
from qid.divergence import TopK
from qid.evaluate import encode, evaluate, score, windows
from qid.laws import UnifiedLaw, fit_all
from qid.quantize.rtn import quantize_tensor

EVAL = TEXTS[:6] + ["Ünïcode — bytes ≠ characters: ½ € ✓ " * 3]


def rtn(model, bits: int):
    """A copy of `model` with every decoder linear map rounded to `bits` (RTN, group 32)."""
    q = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in q.named_modules():
            if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
                module.weight.copy_(quantize_tensor(module.weight, bits, 32))
    return q


def pair(model, other, tokenizer, k=None, context=16, batch_tokens=64):
    """(16-bit record, other's record with the divergence measures)."""
    ref = TopK() if k is None else TopK(k)
    base = evaluate(model, tokenizer, EVAL, context, batch_tokens, keep=ref)
    return base, evaluate(other, tokenizer, EVAL, context, batch_tokens, reference=ref)


@pytest.fixture(scope="module")
def neox(tiny_checkpoint):
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()


def llama(vocab: int):
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def test_a_model_against_itself_has_zero_kl_and_full_agreement(neox, tokenizer):
    base, same = pair(neox, neox, tokenizer)
    assert same["kl"] == 0.0
    assert same["top1_agreement"] == 1.0
    assert same["qid_bpb"] == 0.0
    assert same["nll_per_text"] == base["nll_per_text"]  # the tracker leaves the loss alone


@pytest.mark.parametrize("arch", ["neox", "llama"])
def test_a_2bit_model_has_positive_kl(arch, neox, tokenizer):
    model = neox if arch == "neox" else llama(len(tokenizer))
    _, q = pair(model, rtn(model, 2), tokenizer)
    assert q["kl"] > 0 and q["kl_se"] > 0
    assert 0 <= q["top1_agreement"] < 1
    # A 2-bit copy moves further than an 8-bit one.
    _, q8 = pair(model, rtn(model, 8), tokenizer)
    assert 0 < q8["kl"] < q["kl"]


def test_kl_is_never_negative_and_exact_with_the_whole_vocabulary(neox, tokenizer):
    """The top-k KL is a lower bound of the full KL (coarse-graining), never below 0."""
    other = llama(len(tokenizer))
    _, exact = pair(neox, other, tokenizer, k=len(tokenizer), context=64, batch_tokens=4096)
    total, positions = 0.0, 0
    with torch.no_grad():
        for text in EVAL:
            for w in windows(tokenizer(text)["input_ids"], tokenizer.bos_token_id, 64):
                ids = torch.tensor([w])
                lp = torch.log_softmax(neox(ids).logits[0, :-1].double(), -1)
                lq = torch.log_softmax(other(ids).logits[0, :-1].double(), -1)
                total += float((lp.exp() * (lp - lq)).sum())
                positions += ids.shape[1] - 1
    assert exact["kl"] == pytest.approx(total / positions, rel=1e-4)
    for k in (1, 2, 8, 64):
        _, q = pair(neox, other, tokenizer, k=k, context=64, batch_tokens=4096)
        assert 0 <= q["kl"] <= exact["kl"] * (1 + 1e-6)
        assert q["top1_agreement"] == exact["top1_agreement"]  # top-1 needs k >= 1 only


def test_bits_per_byte_are_nats_per_token_times_tokens_per_byte(neox, tokenizer):
    base, q = pair(neox, rtn(neox, 2), tokenizer)
    utf8 = sum(len(t.encode("utf-8")) for t in EVAL)
    assert base["bytes"] == q["bytes"] == utf8 > sum(map(len, EVAL))  # multi-byte characters
    qid_per_token = q["loss_per_model_token"] - base["loss_per_model_token"]
    expected = qid_per_token * q["model_tokens"] / math.log(2) / utf8
    assert q["qid_bpb"] == pytest.approx(expected, rel=1e-9)
    assert np.sign(q["qid_bpb"]) == np.sign(q["loss"] - base["loss"])


def test_windows_batched_differently_give_the_same_kl(neox, tokenizer):
    """The reference is keyed by (text, window), not by batch: the cell may batch otherwise."""
    ref = TopK()
    encoded = encode(tokenizer, EVAL)
    score(neox, encoded, 16, 16, keep=ref)
    q = rtn(neox, 3)
    one = score(q, encoded, 16, 16, reference=ref)
    many = score(q, encoded, 16, 4096, reference=ref)
    assert one["kl"] == pytest.approx(many["kl"], rel=1e-5)
    assert one["top1_agreement"] == many["top1_agreement"]


@pytest.fixture
def texts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "heldout.parquet"
    pd.DataFrame({"text": EVAL}).to_parquet(path)
    return path


def test_a_checkpoint_job_writes_the_measures_and_aggregate_tables_them(tiny_checkpoint, texts):
    from test_keep import CKPT, make_job

    from qid.cells import run_cells

    job = make_job(tiny_checkpoint, texts, cells=[("rtn", 2), ("rtn", 8)])
    assert run_cells(job) == []
    paths = [CKPT.eval_path(v, "heldout") for v in (grid.BASE, "rtn-2bit", "rtn-8bit")]
    base, q2, q8 = (json.loads(open(p).read()) for p in paths)
    assert "kl" not in base and base["bytes"] > 0
    assert q2["kl"] > q8["kl"] > 0 and q2["kl_topk"] == TopK().k
    table = aggregate(paths)
    assert {"kl", "kl_se", "top1_agreement", "qid_bpb"} <= set(table.columns)
    row = table.set_index("bits").loc[2]
    assert row.kl == q2["kl"] and row.top1_agreement == q2["top1_agreement"]
    assert row.qid_bpb == pytest.approx(q2["qid_bpb"], rel=1e-12)
    # A cell added later has its 16-bit model evaluated again (its top-k is not on disk), its
    # record left as it is; the new cell's QiD in bits per byte is the same with or without it.
    base_text = open(paths[0]).read()
    run_cells(make_job(tiny_checkpoint, texts, cells=[("rtn", 2), ("rtn", 8), ("rtn", 4)]))
    assert open(paths[0]).read() == base_text
    q4 = json.loads(open(CKPT.eval_path("rtn-4bit", "heldout")).read())
    assert q4["kl"] > 0
    assert q4["qid_bpb"] == pytest.approx(
        (q4["nll_sum"] - base["nll_sum"]) / math.log(2) / base["bytes"], rel=1e-12
    )


def test_records_without_the_measures_aggregate_to_nan(tiny_checkpoint, texts):
    from test_keep import CKPT, make_job

    from qid.cells import run_cells

    run_cells(make_job(tiny_checkpoint, texts, cells=[("rtn", 2)]))
    paths = [CKPT.eval_path(v, "heldout") for v in (grid.BASE, "rtn-2bit")]
    for p in paths:  # as written before qid.divergence
        record = json.loads(open(p).read())
        for key in ("kl", "kl_se", "top1_agreement", "qid_bpb", "kl_topk", "bytes"):
            record.pop(key, None)
        open(p, "w").write(json.dumps(record))
    row = aggregate(paths).iloc[0]
    assert np.isnan([row.kl, row.kl_se, row.top1_agreement, row.qid_bpb]).all()
    assert np.isfinite(row.qid)  # QiD is still there (a random model may lose nothing)


def test_fit_metric_kl_fits_the_kl_column():
    table = synthetic(TRUE, noise=0.02)
    kl_law = UnifiedLaw(k=0.2, alpha=0.1, beta=0.3, gamma=2.0)
    table["kl"] = kl_law.qid(table.n_params, table.tokens, table.bits)
    table["kl_se"] = np.nan
    by_kl = fit_all(table, metric="kl")
    by_qid = fit_all(table)
    assert by_kl["meta"]["metric"] == "kl" and by_qid["meta"]["metric"] == "qid"
    for name in ("alpha", "beta", "gamma"):
        assert by_kl["unified"]["params"][name]["value"] == pytest.approx(
            getattr(kl_law, name), abs=1e-3
        )
        assert by_qid["unified"]["params"][name]["value"] == pytest.approx(
            getattr(TRUE, name), abs=0.05
        )
    table.loc[3, "kl"] = np.nan  # a cell evaluated before KL was measured: not a KL of 0
    with pytest.raises(QidError, match=r"1 cell\(s\) have no kl.*rerun"):
        fit_all(table, metric="kl")


@pytest.mark.parametrize("no_kl", [False, True])
def test_a_cell_job_of_its_own_measures_against_its_16bit_model(tiny_checkpoint, texts, no_kl):
    """`qid quantize --eval-out` evaluates the 16-bit model in the same process for the KL; the
    cell's loss is the same as without it, and its bits per byte need no 16-bit record."""
    from qid.cli import main

    records = {}
    for name in ("a", "b"):
        main(
            [
                *("quantize", "--checkpoint", str(tiny_checkpoint), "--method", "rtn"),
                *("--bits", "2", "--out", f"q{name}", "--record", f"q{name}.json"),
                *("--options", '{"group_size": 32}', "--texts", str(texts)),
                *("--eval-out", f"{name}.json", "--context", "32"),
                *(["--no-kl"] if no_kl and name == "b" else []),
            ]
        )
        records[name] = json.loads(open(f"{name}.json").read())
    a, b = records["a"], records["b"]
    assert a["kl"] > 0 and 0 <= a["top1_agreement"] <= 1 and a["kl_topk"] == TopK().k
    assert a["nll_per_text"] == b["nll_per_text"]
    if no_kl:
        assert not {"kl", "kl_se", "top1_agreement", "qid_bpb"} & set(b)
    else:
        assert b["kl"] == a["kl"] and b["qid_bpb"] == a["qid_bpb"]


def test_diagnose_reports_the_measures(tiny_checkpoint, texts, capsys):
    from qid.cli import main

    args = ["diagnose", "--checkpoint", str(tiny_checkpoint), "--bits", "2", "--texts", str(texts)]
    args += ["--method", "rtn", "--options", '{"group_size": 32}', "--context", "32"]
    main([*args, "--json"])
    (cell,) = json.loads(capsys.readouterr().out)["cells"]
    m = cell["measurement"]
    assert m["kl"] > 0 and m["kl_se"] > 0 and 0 <= m["top1_agreement"] <= 1
    assert np.isfinite(m["qid_bpb"]) and np.sign(m["qid_bpb"]) == np.sign(m["qid"])
    main(args)
    out = capsys.readouterr().out
    assert f"KL {m['kl']:.4g} (se {m['kl_se']:.2g}) nats, top-1 agreement" in out
