import json

import numpy as np
import pandas as pd
import pytest

from qid.cli import main, parser
from qid.laws import UnifiedLaw

STAGES = [
    "corpus",
    "evalset",
    "calibration",
    "data",
    "train",
    "quantize",
    "evaluate",
    "aggregate",
    "fit",
    "figures",
]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args([stage, "--help"])
    assert exit_.value.code == 0
    assert f"qid {stage}" in capsys.readouterr().out


def test_fit_works_on_any_table_with_the_columns(tmp_path):
    law = UnifiedLaw(k=0.03, alpha=0.25, beta=0.5, gamma=5.0)
    rng = np.random.default_rng(1)
    rows = [
        {"n_params": n, "tokens": d, "bits": b, "qid": law.qid(n, d, b) * rng.lognormal(0, 0.03)}
        for n in (1e6, 1e7, 1e8)
        for d in (1e9, 1e10, 1e11, 1e12)
        for b in (2, 3, 4)
    ]
    rows.append({"n_params": 1e6, "tokens": 1e9, "bits": 8, "qid": -0.001})
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    main(["fit", "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "f.json")])
    fits = json.loads((tmp_path / "f.json").read_text())
    assert set(fits) >= {"unified", "tokens", "size", "bits"}
    assert fits["unified"]["n_excluded"] == 1 and fits["unified"]["n_points"] == 36
    assert fits["unified"]["params"]["gamma"]["value"] == pytest.approx(5.0, abs=0.1)


def test_a_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    pd.DataFrame({"qid": [0.1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--table", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "f.json")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("qid fit: error: table lacks column(s) tokens, n_params, bits")
    assert err.count("\n") == 1
    assert not (tmp_path / "f.json").exists()


def test_quantize_names_an_unsupported_bit_width(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "quantize",
                "--checkpoint",
                str(tiny_checkpoint),
                "--method",
                "bnb_nf4",
                "--bits",
                "3",
                "--out",
                str(tmp_path / "q"),
                "--record",
                str(tmp_path / "q.json"),
            ]
        )
    assert "method 'bnb_nf4' does not support 3-bit weights" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
