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


def test_compare_methods_tabulates_every_network(tmp_path):
    cm = load("compare_methods")
    out = tmp_path / "c.md"
    assert cm.main(["--config", str(ROOT / "configs" / "fashion_mnist.yaml"), "--methods", "vanilla", "switokd",
                    "--out-dir", str(tmp_path / "runs"), "--out", str(out), "train.epochs=1", "data.limit_train=256",
                    "data.limit_test=128", "train.progress=false", "train.precision=fp32", "train.channels_last=false",
                    "networks.teacher.model=resnet20", "networks.student.model=wrn16_1"]) == 0
    text = out.read_text()
    for method, net in (("vanilla", "teacher"), ("vanilla", "student"), ("switokd", "teacher"), ("switokd", "student")):
        assert f"| {method} | {net} |" in text
    assert "teacher->student" in text
    assert len(list((tmp_path / "runs").glob("*/report.json"))) == 2
