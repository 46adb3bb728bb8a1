"""benchmarks/gpu_check.py runs on the CPU with --smoke and reports what it promises."""

from __future__ import annotations

import json

import pytest
from conftest import script_module


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow  # 17-45 s: the benchmark's CPU smoke run (slow suite, with the benchmarks)
def test_smoke_run_writes_every_figure(tmp_path, capsys):
    with script_module("benchmarks", "gpu_check") as gpu_check:
        _smoke_run(gpu_check, tmp_path, capsys)


def _smoke_run(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    # one search mode keeps the test short; the other modes differ only in the dtype policy
    # and jit_compile passed to the same code
    code = gpu_check.main(["--smoke", "--modes", "float32", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "command:" in printed and "machine:" in printed and "ms/step (median)" in printed
    report = json.loads(out.read_text())
    for key in ("command", "machine", "versions", "settings", "results", "ratios",
                "projection", "peak_memory_mib", "darts_steps_per_epoch", "total_s"):
        assert key in report, key
    assert report["smoke"] is True
    assert report["darts_steps_per_epoch"] == 391
    assert report["versions"]["tensorflow"] and report["versions"]["keras"]

    search = report["results"]["search"]["float32"]
    assert "error" not in search, search
    for key in ("ms_per_step", "images_per_s", "build_s", "first_step_s"):
        assert _positive(search[key]), (key, search[key])
    assert len(search["times_ms"]) == report["steps"]
    assert search["images_per_s"] == pytest.approx(
        2 * report["settings"]["search"]["batch"] / (search["ms_per_step"] / 1000), rel=1e-2)

    projection = report["projection"]["float32"]
    assert projection["epoch_s"] == pytest.approx(391 * search["ms_per_step"] / 1000, rel=1e-2)
    assert projection["search_50_epochs_h"] == pytest.approx(
        50 * projection["epoch_s"] / 3600, rel=1e-2)

    derived = report["results"]["derived"]["float32"]
    assert "error" not in derived, derived
    assert _positive(derived["images_per_s"]) and _positive(derived["ms_per_step"])

    reference = report["results"]["torch_reference"]
    if "skipped" not in reference:  # torch installed and the reference beside the repo
        assert "error" not in reference, reference
        assert _positive(reference["ms_per_step"])
        assert report["ratios"]["float32"] == pytest.approx(
            search["ms_per_step"] / reference["ms_per_step"], rel=1e-2)

    epoch = report["results"]["epoch"]
    if "skipped" not in epoch:  # ../shared/data/cifar10-jpeg/train.npz present
        assert epoch["steps_run"] == 2 and epoch["capped"] is True
        assert _positive(epoch["measured_s"]) and _positive(epoch["epoch_s"])
        assert epoch["steps_per_epoch"] == epoch["images"] // 2 // 4
