"""`spritediff bench` on a tiny random model: NFE per sampler, the speed-up's baseline row, the CLI.

No timing is asserted: only counts, which row is the baseline, and the arithmetic of the columns.
"""
import json

import pytest
import torch

from spritediff.bench import BenchRow, baseline_index, bench, set_speedups
from spritediff.checkpoint import SpriteModel, load_model, save_model
from spritediff.cli import main
from spritediff.models import ContextUnet
from spritediff.schedule import Schedule
from spritediff.specs import parse_sampler_specs
from spritediff.sprites import COURSE_CLASSES


@pytest.fixture(scope="module")
def bench_model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "tiny.safetensors"
    save_model(SpriteModel(ContextUnet(n_feat=8), Schedule.course(), COURSE_CLASSES), path)
    return str(path)


def test_cli_json_has_nfe_and_speedups_against_ddpm_500(bench_model_path, capsys):
    code = main(["bench", "--model", bench_model_path, "--samplers", "ddim:20,ddpm:500",
                 "--n", "2", "--repeat", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ["ddim-20", "ddpm-500"]
    assert rows["ddim-20"]["nfe"] == 20 and rows["ddpm-500"]["nfe"] == 500
    assert report["baseline"] == "ddpm-500"
    assert rows["ddpm-500"]["speedup"] == 1.0
    assert rows["ddim-20"]["speedup"] == pytest.approx(rows["ddpm-500"]["seconds"] / rows["ddim-20"]["seconds"])
    for row in rows.values():
        assert len(row["times"]) == len(row["bare_times"]) == 1
        assert row["seconds_per_call"] == pytest.approx(row["seconds"] / row["nfe"])
        assert row["images_per_second"] == pytest.approx(2 / row["seconds"])
    for key in ("machine", "torch", "device", "threads", "date"):
        assert report[key] not in (None, "")
    assert report["device"] == "cpu" and report["n"] == 2 and report["repeat"] == 1


def test_without_ddpm_T_the_first_row_is_the_baseline(bench_model_path):
    model = load_model(bench_model_path)
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    report = bench(model, "ddim:4,ddim:2:eta=1", n=2, repeat=2)
    assert [row.nfe for row in report.rows] == [4, 2]
    assert report.baseline == 0 and report.rows[0].speedup == 1.0
    assert report.rows[1].speedup == pytest.approx(report.rows[0].seconds / report.rows[1].seconds)
    assert "speed-up vs ddim-4" in report.table() and "ddim-2-eta=1" in report.table()
    # no global state: the global RNG, thread count and grad mode are as they were
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads and torch.is_grad_enabled()


def test_baseline_is_the_first_plain_ddpm_T():
    assert baseline_index(parse_sampler_specs("ddim:20,ddpm:500:variance=posterior,ddpm:500"), 500) == 2
    assert baseline_index(parse_sampler_specs("ddpm:100,ddim:20"), 500) == 0
    assert baseline_index(parse_sampler_specs("ddim:20,ddpm:300"), 300) == 1


def test_speedups_are_baseline_seconds_over_row_seconds():
    slow, fast = parse_sampler_specs("ddim:8,ddpm:500")
    rows = [BenchRow(slow, 4, 8, [1.0, 3.0, 2.0], [1.0]), BenchRow(fast, 4, 500, [8.0, 9.0, 7.0], [1.0])]
    set_speedups(rows, baseline=1)
    assert [row.seconds for row in rows] == [2.0, 8.0]
    assert [row.speedup for row in rows] == [4.0, 1.0]
    assert rows[1].images_per_second == 0.5 and rows[1].seconds_per_call == 8.0 / 500


@pytest.mark.parametrize("spec", ["ddim:abc", "dim:20", "ddim:20:zeta=1", "ddpm:501"])
def test_bad_spec_exits_2_with_one_line(bench_model_path, capsys, spec):
    code = main(["bench", "--model", bench_model_path, "--samplers", spec, "--n", "2", "--repeat", "1"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spritediff: error: ")


def test_table_is_printed_without_json(bench_model_path, capsys):
    assert main(["bench", "--model", bench_model_path, "--samplers", "ddim:3", "--n", "2", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "ddim-3" in out and "speed-up vs ddim-3" in out and "bare s" in out


def test_precision_rows_and_the_diffusers_reference_row(bench_model_path):
    model = load_model(bench_model_path)
    report = bench(model, "ddim:5,dpmpp-2m:3", n=3, repeat=1, precisions=("fp32", "bf16"), reference="diffusers")
    assert [(row.label, row.precision) for row in report.rows] == [
        ("ddim-5", "fp32"), ("ddim-5", "bf16"), ("diffusers ddim-5", "fp32"),
        ("dpmpp-2m-3", "fp32"), ("dpmpp-2m-3", "bf16")]
    reference = report.rows[2]
    assert reference.nfe == 5 and set(reference.max_diff) == {"fp32", "bf16"}
    assert reference.max_diff["fp32"] <= 1  # the same DDIM on the same timesteps and noise
    assert report.baseline == 0 and "diffusers ddim-5" in report.table()
    same = bench(model, "ddim:2", n=2, repeat=1, precisions=("fp32", "fp32"))
    assert len(same.rows) == 1  # precisions that resolve alike are timed once


def test_bench_cli_precision_list_and_bad_values(bench_model_path, capsys):
    assert main(["bench", "--model", bench_model_path, "--samplers", "ddim:2", "--n", "2", "--repeat", "1",
                 "--precision", "fp32,bf16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["precision"] for row in report["rows"]] == ["fp32", "bf16"]
    assert main(["bench", "--model", bench_model_path, "--precision", "fp16"]) == 2
    assert "unknown precision 'fp16'" in capsys.readouterr().err
