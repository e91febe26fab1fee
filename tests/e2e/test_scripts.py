"""The scripts a user runs, run for real."""
import pytest
import torch


def test_gpu_check_script_refuses_without_cuda():
    """scripts/gpu_check.sh runs on a CUDA machine; here it says so and exits 2, changing nothing."""
    import subprocess
    import sys
    from pathlib import Path
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: run the script itself")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": "/tmp/switokd-gpu-check-test"})
    assert r.returncode == 2 and "no CUDA device" in r.stdout + r.stderr


@pytest.mark.slow
def test_demo_script_ends_with_its_run_the_switch_and_the_next_commands(tmp_path):
    """scripts/demo.sh (shortened by overrides, in a copy of the tree sharing .venv): runs/demo points at the
    run it wrote, and it prints what the switch did and next commands that name runs/demo."""
    import os
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    if not (root / ".venv" / "bin" / "switokd").exists() or not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("needs scripts/setup.sh's .venv and Debian's dataset-fashion-mnist")
    for d in ("scripts", "configs"):
        shutil.copytree(root / d, tmp_path / d)
    (tmp_path / ".venv").symlink_to(root / ".venv")
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "demo.sh"), "train.epochs=1", "data.limit_train=256",
                        "data.val_split=64", "data.limit_test=200", "train.threads=1", "train.progress=false"],
                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    link = tmp_path / "runs" / "demo"
    assert link.is_symlink() and os.readlink(link).startswith("demo-") and (link / "report.json").is_file()
    out = r.stdout
    assert "What the switch did in this run:" in out and "The teacher" in out.split("What the switch did")[1]
    assert f"runs/demo is this run: runs/{os.readlink(link)}" in out
    for cmd in ("switokd report runs/demo", "switokd export --checkpoint runs/demo/best.pt", "switokd predict --onnx"):
        assert cmd in out
