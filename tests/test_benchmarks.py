"""The benchmark scripts run and are correct on tiny inputs (no timings are asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import dryrun_scaling  # noqa: E402
import end_to_end  # noqa: E402
import eval_throughput  # noqa: E402
import gpu_check  # noqa: E402
import gpu_throughput  # noqa: E402
import quantize_overhead  # noqa: E402
import train_throughput  # noqa: E402


def test_naive_loop_and_evaluator_agree_on_multi_window_texts():
    import common

    model = common.random_model(32, 1, 1, 300, 16)
    ids = eval_throughput.generated_ids(6, 300, seed=1)  # 40+ tokens: several windows of 16
    naive = eval_throughput.naive_nll(model, ids, 0, 16)
    ours = eval_throughput.qid_nll(model, ids, 0, 16, batch_tokens=64)
    n_tokens = sum(len(t) for t in ids)
    assert abs(naive - ours) / n_tokens < eval_throughput.MAX_LOSS_DIFF


def test_eval_throughput_runs(capsys):
    argv = ["--random", "--hidden", "32", "--layers", "1", "--heads", "1", "--vocab", "300"]
    assert eval_throughput.main([*argv, "--n-texts", "6", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "eval throughput ratio" in lines[-2]
    assert lines[-1].startswith("evaluator FLOP/s / matmul chain FLOP/s: ")
    assert float(lines[-1].split(": ")[1].split()[0]) > 0


def test_matmul_chain_has_the_models_linear_maps():
    import common

    model = common.random_model(32, 2, 2, 300, 16)  # intermediate 4 x 32
    _, n_weights = common.matmul_chain(model, 8)
    per_layer = 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32  # QKV, attention out, MLP up, down
    assert n_weights == 2 * per_layer + 32 * 300  # plus the head
    assert eval_throughput.fed_tokens([[1] * 30], 0, 16) == 16 + 16  # 31 tokens: 2 windows


def test_fused_loss_is_transformers_loss_and_each_training_variant_is_timed():
    import common
    import torch

    model = common.random_model(32, 1, 1, 300, 16).train()
    x = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    fused = train_throughput.fused_loss(model, x)
    assert fused.item() == pytest.approx(model(input_ids=x, labels=x).loss.item(), abs=1e-6)
    arch = {"hidden_size": 32, "num_layers": 1, "num_heads": 1}
    training = {
        "batch_size": 2,
        "context": 16,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "betas": [0.9, 0.9],
    }
    seconds, weights, diff = train_throughput.measure(arch, training, 300, repeats=1)
    assert set(seconds) == {"landed", "fused", "bf16", "floor"}
    assert all(s > 0 for s in seconds.values())
    assert weights == 32 * 96 + 32 * 32 + 32 * 128 + 128 * 32 + 32 * 300
    assert diff < train_throughput.MAX_LOSS_DIFF


def test_train_throughput_refuses_a_size_the_suite_lacks(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_throughput.main(["--sizes", "h64-l2,h32-l9"])
    assert exit_.value.code == 2
    assert "--sizes: h32-l9 not in the default suite" in capsys.readouterr().err


def test_train_throughput_reads_the_default_suite():
    sizes, training, vocab = train_throughput.default_suite()
    assert sizes and vocab > 0 and training["batch_size"] * training["context"] > 0


def test_eval_throughput_on_a_checkpoint(tiny_checkpoint, capsys):
    argv = ["--checkpoint", str(tiny_checkpoint), "--context", "64", "--n-texts", "4"]
    assert eval_throughput.main([*argv, "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tiny_checkpoint}" in out


def test_quantize_overhead_runs_rtn(tiny_checkpoint, capsys):
    argv = ["--checkpoint", str(tiny_checkpoint), "--methods", "rtn", "--repeats", "1"]
    assert quantize_overhead.main(argv) == 0
    assert "rtn" in capsys.readouterr().out.splitlines()[-1]


def test_dryrun_grids_are_valid_configs_of_the_right_size():
    from qid import grid
    from qid.config import check_config

    paper = check_config(dryrun_scaling.paper_config())
    assert len(list(grid.checkpoints(paper))) == 6 * 20
    assert len(list(grid.cells(paper))) == 6 * 20 * 4
    for how in ("suites", "steps"):
        big = check_config(dryrun_scaling.scaled(paper, 10, how))
        assert len(list(grid.cells(big))) == 10 * 6 * 20 * 4


def test_time_v_parsing():
    text = (
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.5\n"
        "\tMaximum resident set size (kbytes): 123456\n"
    )
    assert end_to_end.parse_time_v(text) == {"max_rss_kib": 123456.0, "wall_s": 3723.5}


SNAKEMAKE_LOG = """\
[Sat Nov 28 10:20:41 2026]
localrule corpus:
    output: results/data/tokenizer
    jobid: 4
[Sat Nov 28 10:20:41 2026]
rule train:
    wildcards: suite=s, size=a
    jobid: 7
[Sat Nov 28 10:20:48 2026]
Finished jobid: 4 (Rule: corpus)
1 of 3 steps (33%) done
[Sat Nov 28 10:20:48 2026]
rule train:
    jobid: 8
[Sat Nov 28 10:22:09 2026]
Finished jobid: 7 (Rule: train)
[Sat Nov 28 10:23:27 2026]
Finished jobid: 8 (Rule: train)
3 of 3 steps (100%) done
"""


def test_job_seconds_run_from_each_jobs_start_to_its_finish():
    assert end_to_end.job_seconds(SNAKEMAKE_LOG) == {"corpus": (1, 7.0), "train": (2, 88.0 + 159.0)}
    assert end_to_end.job_count(SNAKEMAKE_LOG) == "3"


def test_the_readme_command_is_the_first_line_of_the_first_code_block():
    command = end_to_end.readme_command()
    assert command.startswith("bash workflow/scripts/install.sh && .venv/bin/snakemake")


def test_gpu_benchmark_without_gpu_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark measures instead")
    assert gpu_throughput.main([]) == 0
    assert "no GPU available: not measured" in capsys.readouterr().out


def test_gpu_benchmark_code_path_on_cpu(capsys):
    argv = ["--device", "cpu", "--sizes", "tiny", "--context", "32", "--seconds", "0"]
    assert gpu_throughput.main([*argv, "--batches", "1", "--dtype", "float32"]) == 0
    assert "tiny" in capsys.readouterr().out.splitlines()[-1]


def test_batch_tokens_from_memory():
    # 80 GB free, half of it, Pythia's vocabulary: whole windows of 2048, ~39k tokens.
    tokens = gpu_throughput.batch_tokens_for(80 * 10**9, 50304, 768, 2048, 0.5)
    assert tokens % 2048 == 0 and 30_000 < tokens < 80_000
    assert gpu_throughput.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0


def test_peak_table_names_the_lent_gpus():
    assert gpu_throughput.peak_tflops("NVIDIA H200") == 989.0
    assert gpu_throughput.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_throughput.peak_tflops("NVIDIA H100 NVL") == 835.0
    assert gpu_throughput.peak_tflops("NVIDIA GeForce RTX 4090") is None


def test_gpu_check_report_names_failed_steps(tmp_path, monkeypatch, capsys):
    (tmp_path / "steps.tsv").write_text("throughput\t0\t41.2\ncell\t124\t240.0\n")
    size = {"size": "1b", "tokens_per_s": 1e5, "flops_with_head": 494.5e12, "flops": 4e14}
    throughput = {"device": "NVIDIA H200", "peak_tflops": 989.0, "context": 2048, "sizes": [size]}
    (tmp_path / "throughput.json").write_text(json.dumps(throughput))
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.report(tmp_path) == 1  # the cell timed out
    out = capsys.readouterr().out
    assert "step cell: TIMEOUT, 240.0 s" in out and "50.0% of peak" in out
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["throughput"]["fraction_of_peak"] == pytest.approx(0.5)
    assert saved["cell"]["quantize_s"] is None


@pytest.mark.slow
def test_gpu_check_script_runs_every_step_on_tiny_shapes(tmp_path):
    # The whole device script on CPU (~40-60 s): throughput, prepare, 16-bit eval, GPTQ cell.
    import os
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--tiny"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(saved["steps"]) == {"throughput", "prepare", "base", "cell"}
    assert saved["cell"]["quantize_s"] > 0 and saved["cell"]["evaluate_s"] > 0
    assert saved["cell"]["qid"] is not None


def test_the_zoo_table_measures_or_names_the_refusal():
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py"
    argv = ["--archs", "gpt2,opt", "--methods", "rtn,awq", "--steps", "20"]
    run = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith(("| gpt2", "| opt"))]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines}
    assert rows[("gpt2", "rtn")].split("|")[3].strip() == "8"  # GPT-2's Conv1D layers
    assert float(rows[("gpt2", "rtn")].split("|")[4]) > 0  # QiD at 2 bits
    assert "refused: awq: GPT2LMHeadModel stores its linear maps as Conv1D" in rows[("gpt2", "awq")]
    assert "no AWQ mappings for OPTForCausalLM" in rows[("opt", "awq")]
