"""examples/hf_sequence_classification.py, run for real with transformers: two tiny BERTs (built from a
config: nothing is downloaded) trained with SwitOKD on sequence logits [B, C] and on token logits [B, T, C]
whose -100 labels count in no loss."""
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import hf_sequence_classification as hf  # noqa: E402

from switokd import create_method  # noqa: E402


def test_sequence_classification_trains():
    history = hf.train(transformers.BertForSequenceClassification, steps=3)
    assert len(history) == 3 and all(set(h["loss"]) >= {"student"} for h in history)
    assert all(h["stepping"][-1] == "student" for h in history)


def test_token_classification_ignores_padding():
    history = hf.train(transformers.BertForTokenClassification, steps=2, tokens=True)
    assert len(history) == 2
    # The ignored positions change nothing: the loss is the one of the kept tokens alone.
    nets = {"teacher": hf.tiny_bert(transformers.BertForTokenClassification, 2, 32, 3, 0),
            "student": hf.tiny_bert(transformers.BertForTokenClassification, 1, 16, 3, 1)}
    ids = torch.randint(1, 64, (4, 10))
    y = torch.randint(0, 3, (4, 10))
    y[:, 7:] = -100
    with torch.no_grad():
        logits = {n: m(input_ids=ids).logits for n, m in nets.items()}
    m = create_method("switokd", {"teacher": "teacher", "student": "student"})
    out = m.step(logits, y)
    keep = y != -100
    kept = m.step({n: z[keep] for n, z in logits.items()}, y[keep])
    assert out.losses["student"]["loss"].item() == pytest.approx(kept.losses["student"]["loss"].item(), rel=1e-6)
    assert out.expert == kept.expert
