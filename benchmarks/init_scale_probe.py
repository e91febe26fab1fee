"""Does KD+LS (or DIST) survive a small classifier init? A 4-epoch offline run in a loop of its own, twice.

    python benchmarks/init_scale_probe.py runs/methods/clean/vanilla-seed0/last.pt [--loss kd+ls|dist|kd]

The teacher is the checkpoint's ``teacher`` (WRN-16-2, trained); the student a fresh WRN-16-1, trained on the
first 1,000 Fashion-MNIST images with SGD (lr 0.1, momentum 0.9, Nesterov, wd 5e-4, batch 128), first with
switokd's former classifier init (normal, std 0.01: MobileNetV2's scheme, which every family used before the
reference inits), then with the WRN reference's (PyTorch's default ``nn.Linear`` weight, zero bias: what
``create_model`` gives now). It prints the
student's training accuracy after each epoch. Why: logit standardization and DIST are invariant to the
logits' scale, so their gradient grows as 1 / that scale (docs/method.md, "dist"); small initial logits make
the first steps huge (benchmarks/results/methods/README.md).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from switokd import create_model
from switokd.core.losses import dist_loss, kl_div, standardize
from switokd.data.datasets import fashion_mnist


def distill(loss: str, z, zt, y):
    if loss == "kd+ls":  # the KD+LS recipe: CE weight 0.1, KD weight 9, tau 2, tau^2-scaled
        return 0.1 * F.cross_entropy(z, y) + 9 * kl_div(standardize(zt), standardize(z), 2.0, True)
    if loss == "dist":
        return F.cross_entropy(z, y) + dist_loss(zt, z)
    return F.cross_entropy(z, y) + kl_div(zt, z, 4.0, True)


def logits_of(model: nn.Module, x) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 200]) for i in range(0, len(x), 200)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--loss", default="kd+ls", choices=["kd+ls", "dist", "kd"])
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = fashion_mnist()  # a clear error naming where to put the files if they are missing
    x = (data.train_x[:1000].float() / 255 - data.mean[0]) / data.std[0]
    y = data.train_y[:1000]
    ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    teacher = create_model("wrn16_2", num_classes=10, in_chans=1, image_size=28)
    teacher.load_state_dict(ck["networks"]["teacher"]["model"])
    teacher.eval()
    zt = logits_of(teacher, x)
    print(f"teacher training accuracy {(zt.argmax(1) == y).float().mean().item():.3f}")
    for default_init in (False, True):
        torch.manual_seed(0)
        student = create_model("wrn16_1", num_classes=10, in_chans=1, image_size=28)  # the reference init
        if not default_init:  # the former init
            for m in student.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)
        opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
        accs = []
        for _ in range(args.epochs):
            student.train()
            perm = torch.randperm(1000)
            for i in range(0, 1000, 128):
                idx = perm[i:i + 128]
                loss = distill(args.loss, student(x[idx]), zt[idx], y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            student.eval()
            pred = logits_of(student, x).argmax(1)
            accs.append(f"{(pred == y).float().mean().item():.3f}")
        init = "the reference init (PyTorch's default nn.Linear)" if default_init else "the former init (normal, std 0.01)"
        print(f"{args.loss}, {init}: training accuracy by epoch {', '.join(accs)}")


if __name__ == "__main__":
    main()
