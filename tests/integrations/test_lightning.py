"""examples/lightning_module.py, run for real with Lightning: a paused teacher takes no step, the schedule
follows batches (not global_step) without a warning, and on the same batches it takes the same decisions and
ends with the same weights as switokd's own step (the method API and one backward, as the Trainer does)."""
import copy
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from lightning_module import DistillModule, tiny_cnn  # noqa: E402

from switokd import create_method  # noqa: E402


def stripes(n, seed=0):
    """Learnable data: class c is a bright row at 2c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for i in range(n):
        x[i, 0, 2 * int(y[i])] += 3.0
    return x, y


def fitted(x, y, width, seed, steps=60):
    """A network fitted to (x, y)."""
    torch.manual_seed(seed)
    t = tiny_cnn(width)
    opt = torch.optim.SGD(t.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(t(x), y).backward()
        opt.step()
    return t


def reference_run(teacher, student, loader, total):
    """switokd's own step on the same batches: the method decides, one backward, only the stepping networks step."""
    nets = {"teacher": teacher, "student": student}
    method = create_method("switokd", {"teacher": "teacher", "student": "student"})
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) for n, m in nets.items()}
    decisions = []
    for b, (x, y) in enumerate(loader):
        for opt in opts.values():
            for g in opt.param_groups:
                g["lr"] = 0.05 * (1 + math.cos(math.pi * min(b / total, 1.0)))
        out = method.step({n: m(x) for n, m in nets.items()}, y)
        decisions.append(dict(out.expert))
        for n in out.stepping:
            opts[n].zero_grad()
        sum(out.losses[n]["loss"] for n in out.stepping).backward()
        for n in out.stepping:
            opts[n].step()
    return decisions


def test_lightning_takes_switokds_decisions(tmp_path):
    x, y = stripes(192)
    # A teacher that fits the labels, and a student confidently wrong in another place (it learned the next
    # class): the switch pauses the teacher until the student has moved (docs/method.md, the identity).
    teacher = fitted(x, y, 32, seed=1)
    student = fitted(x, (y + 1) % 4, 4, seed=2, steps=15)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    ref_t, ref_s = copy.deepcopy(teacher), copy.deepcopy(student)
    ref = reference_run(ref_t, ref_s, loader, 12)

    module = DistillModule({"teacher": teacher, "student": student}, {"teacher": "teacher", "student": "student"},
                           total_batches=12)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, loader)
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # no scheduler-before-optimizer warning
    experts = sum(d["teacher->student"] for d in module.decisions)
    assert 0 < experts < 12, module.decisions  # the switch acted, and not on every batch
    assert module.decisions == ref
    assert module.batches == 12 and trainer.global_step == 2 * 12 - experts  # optimizer steps, not batches
    for a, b in ((module.nets["teacher"], ref_t), (module.nets["student"], ref_s)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k


def test_the_example_runs():
    from lightning_module import main
    module = main(batches=4)
    assert module.batches == 4 and len(module.decisions) == 4
