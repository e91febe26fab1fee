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
