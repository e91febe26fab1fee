"""Epoch-end hooks: a user's metric lands in epochs.jsonl and the history without an edit to the loop;
the evaluation it gets is the one the epoch made."""
import json

from switokd.train.trainer import Trainer

from conftest import tiny_config


class TeacherMinusStudent:
    def __init__(self):
        self.calls = []

    def on_epoch_end(self, trainer, summary, evaluation):
        self.calls.append(trainer.epoch)
        if evaluation is None:
            return {}
        r = evaluation.results
        per_class = {n: (h / evaluation.class_counts.clamp_min(1)).tolist() for n, h in evaluation.class_hits.items()}
        return {"gap_points": r["teacher"]["acc"] - r["student"]["acc"], "per_class_acc": per_class}


def test_a_hook_adds_its_metric(tmp_path, splits):
    hook = TeacherMinusStudent()
    tr = Trainer(tiny_config(tmp_path, overrides=["train.epochs=3", "train.eval_every=2"]), data=splits, hooks=[hook])
    tr.fit()
    assert hook.calls == [1, 2, 3]  # every epoch, with or without an evaluation
    rows = [json.loads(line) for line in (tr.run_dir / "epochs.jsonl").read_text().splitlines()]
    assert "gap_points" not in rows[0] and "gap_points" in rows[1] and "gap_points" in rows[2]
    assert rows[1]["gap_points"] == rows[1]["test"]["teacher"]["acc"] - rows[1]["test"]["student"]["acc"]
    assert len(rows[2]["per_class_acc"]["student"]) == splits.num_classes
    assert tr.history[-1]["gap_points"] == rows[2]["gap_points"]
