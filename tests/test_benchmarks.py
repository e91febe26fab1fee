"""The benchmark scripts run end to end on tiny settings (a smoke test, not a timing)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_ratio_is_the_median_of_per_step_ratios():
    tp = load("throughput")
    r, lo, hi = tp.paired_ratio([2.0, 4.0, 3.0, 10.0], [1.0, 2.0, 3.0, 1.0])
    assert r == pytest.approx(2.0)  # per-step ratios 2, 2, 1, 10: torch's median is the lower middle value
    assert lo <= r <= hi


def test_throughput_script_writes_every_variant(tmp_path):
    tp = load("throughput")
    out = tmp_path / "t.md"
    assert tp.main(["--device", "cpu", "--precision", "fp32", "--pairs", "resnet20:wrn16_1", "--shapes", "1x16",
                    "--batch-size", "8", "--steps", "2", "--warmup", "1", "--repeats", "1",
                    "--loader-images", "64", "--out", str(out)]) == 0
    text = out.read_text()
    for variant in ("vanilla", "dml", "kdcl", "switokd-learning", "switokd-expert", "bare", "bare-expert",
                    "bare-expert-nograd", "loader"):
        assert f"| {variant} |" in text
    assert "python " in text and "machine:" in text


def test_loader_throughput_script(tmp_path):
    lt = load("loader_throughput")
    out = tmp_path / "l.md"
    assert lt.main(["--images", "16", "--batch", "4", "--workers", "1", "--train-steps", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "ImageNet-like" in text and "img/s" in text and "python benchmarks/loader_throughput.py" in text


@pytest.mark.slow
def test_ddp_throughput_script(tmp_path):
    dt = load("ddp_throughput")
    out = tmp_path / "d.md"
    assert dt.main(["--steps", "1", "--warmup", "1", "--images", "600", "--batch", "8", "--out", str(out)]) == 0
    text = out.read_text()
    for variant in ("1 process, 1 thread, switokd", "2 processes x 1 thread, switokd",
                    "2 processes x 1 thread, vanilla in torch DDP"):
        assert f"| {variant} |" in text
