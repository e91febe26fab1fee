"""SwitOKD inside your own training loop: the method decides, you run backward and the optimizers.

Runs on random data in a few seconds: python examples/custom_loop.py
"""
import torch

from switokd.methods import create_method
from switokd.models import create_model

torch.manual_seed(0)
nets = {"teacher": create_model("wrn16_2", num_classes=10, in_chans=1, image_size=28),
        "student": create_model("resnet20", num_classes=10, in_chans=1, image_size=28)}
opts = {n: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for n, m in nets.items()}
method = create_method("switokd", {"teacher": "teacher", "student": "student"})  # tau=1, like the paper's scripts

for step in range(5):
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    logits = {n: m(x) for n, m in nets.items()}
    out = method.step(logits, y)  # named losses + the networks that step this batch
    loss = sum(out.losses[n]["loss"] for n in out.stepping)
    loss.backward()  # soft targets are detached: each loss reaches only its own network
    for n in out.stepping:  # a paused teacher gets no backward pass and no step
        opts[n].step()
        opts[n].zero_grad(set_to_none=True)
    s = out.switches["teacher->student"]
    print(f"step {step}: mode={'expert' if out.expert['teacher->student'] else 'learning'} "
          f"G={s.gap:.3f} delta={s.threshold:.3f} eps={s.epsilon:.3f} stepping={out.stepping}")
