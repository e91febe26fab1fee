"""The lines a run prints (through the ``switokd`` logger): one after each epoch."""
from __future__ import annotations

from typing import Any


def epoch_line(s: dict[str, Any], epochs: int) -> str:
    """The line (two with switches) printed after each epoch. Images/s are every process's images over the
    epoch's training time; the times are the epoch's training and its evaluation and diagnostics."""
    accs = " ".join(f"{n} {r['acc']:.2f}%" for n, r in s.get("test", {}).items())
    if "val" in s:  # validation first: it is what selects; test is reported (not read with train.eval_test=last)
        accs = ("val " + " ".join(f"{n} {r['acc']:.2f}%" for n, r in s["val"].items())
                + (f"  test {accs}" if "test" in s else ""))
    expert = " ".join(f"expert[{p}] {v:.1%}" for p, v in s["switch"].get("expert_share", {}).items())
    pairs = " ".join(f"[{p}] G {v['gap']:.3f} delta {v['threshold']:.3f} rho {v['shared_ratio']:.2f} "
                     f"eps {v['epsilon']:.2f}" for p, v in s["train"].get("pair", {}).items())
    other = max(s["epoch_time_s"] - s["train_time_s"], 0.0)
    return (f"epoch {s['epoch']:>3}/{epochs}  {accs}  {expert}  {s['images_per_s']:.0f} img/s  "
            f"{s['train_time_s']:.0f}s training + {other:.0f}s eval"
            + (f"\n           {pairs}" if pairs else ""))
