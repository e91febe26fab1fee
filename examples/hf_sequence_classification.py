"""A Hugging Face teacher and student trained with SwitOKD through switokd's Python API.

    python examples/hf_sequence_classification.py    # tiny BERTs from a config (no download), a few steps

switokd's methods take logits: a sequence classifier's ``[batch, classes]`` as they are, and a token
classifier's ``[batch, tokens, classes]`` with Hugging Face's ``-100`` labels on padding and special
tokens, which count in no statistic and no loss. For a pretrained teacher, load it with
``AutoModelForSequenceClassification.from_pretrained(...)`` from a local folder or the hub cache.
"""
from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from switokd import create_method


def tiny_bert(cls, layers: int, hidden: int, labels: int, seed: int):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=labels)
    return cls(cfg)


def train(cls, steps: int = 5, tokens: bool = False, seed: int = 0) -> list[dict]:
    """``steps`` SwitOKD steps on random token batches; returns each step's modes and losses."""
    nets = {"teacher": tiny_bert(cls, 2, 32, 3, seed), "student": tiny_bert(cls, 1, 16, 3, seed + 1)}
    method = create_method("switokd", {"teacher": "teacher", "student": "student"})
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-3) for n, m in nets.items()}
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        ids = torch.randint(1, 64, (8, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[:, 9:] = 0  # padding
        if tokens:
            y = torch.randint(0, 3, (8, 12), generator=g)
            y[mask == 0] = -100  # as Hugging Face labels padding: ignored
        else:
            y = torch.randint(0, 3, (8,), generator=g)
        logits = {n: m(input_ids=ids, attention_mask=mask).logits for n, m in nets.items()}
        out = method.step(logits, y)
        for n in out.stepping:
            opts[n].zero_grad()
        sum(out.losses[n]["loss"] for n in out.stepping).backward()
        for n in out.stepping:
            opts[n].step()
        history.append({"expert": out.expert["teacher->student"], "stepping": out.stepping,
                        "loss": {n: float(v["loss"].detach()) for n, v in out.losses.items()}})
    return history


if __name__ == "__main__":
    for cls, tokens in ((BertForSequenceClassification, False), (BertForTokenClassification, True)):
        for i, h in enumerate(train(cls, tokens=tokens)):
            print(cls.__name__, i, "expert" if h["expert"] else "learning", h["stepping"],
                  {n: round(v, 3) for n, v in h["loss"].items()})
