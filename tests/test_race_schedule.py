"""The race's decisions as pure functions: rung epochs, the top 1/eta by pooled seeds, what each trial does next."""
import pytest

from switokd.race.schedule import (TrialView, keep_count, promote, rung_epochs, rungs_before_decay,
                                   rungs_before_memorising, schedule)


def test_rung_epochs():
    assert rung_epochs(30) == [3, 10, 30] and rung_epochs(20) == [2, 7, 20] and rung_epochs(40) == [4, 13, 40]
    assert rung_epochs(15) == [2, 5, 15] and rung_epochs(30, eta=1) == [30] and rung_epochs(1) == [1]
    assert rung_epochs(30, rungs=[20, 5]) == [5, 20, 30]
    with pytest.raises(ValueError, match="rungs must be epochs in 1..30"):
        rung_epochs(30, rungs=[0, 40])


def test_a_rung_before_the_first_lr_step_is_named():
    """pairs100 at twice the epochs: rungs 4 and 13 came before the step at 18 (the last rung decides nothing)."""
    msg = rungs_before_decay([4, 13, 40], {"teacher": [18, 26, 34], "student": [20, 30]})
    assert msg is not None and "epoch 4, 13 fall before the first learning-rate step (epoch 18, teacher)" in msg
    assert rungs_before_decay([20, 30, 40], {"student": [18, 26, 34]}) is None
    # Noisy labels: a rung before half the run ranks learning speed, not resistance to memorising (sym40-noaug).
    msg = rungs_before_memorising([4, 13, 40], 0.4)
    assert msg is not None and "40% of the training labels" in msg and "epoch 4, 13" in msg and "--rungs from epoch 20" in msg
    assert rungs_before_memorising([20, 30, 40], 0.4) is None and rungs_before_memorising([4, 13, 40], 0.0) is None
    assert rungs_before_decay([3, 10, 30], {"student": [100, 150, 200]}) is None  # steps past the run: none
    assert rungs_before_decay([3, 10, 30], {}) is None and rungs_before_decay([30], {"student": [18]}) is None


def test_keep_the_top_third_pooled_ties_to_the_earlier_arm():
    assert [keep_count(n, 3) for n in (1, 2, 3, 4, 7, 11)] == [1, 1, 1, 2, 3, 4]
    assert promote({"a": 50.0, "b": 70.0, "c": 70.0, "d": 10.0}, 3, ["a", "b", "c", "d"]) == ["b", "c"]
    assert promote({"a": 50.0, "b": 70.0, "c": 70.0, "d": 10.0}, 3, ["c", "b", "a", "d"]) == ["c", "b"]


def views(reports, stops=(2, 4, 8), **kw):
    """A TrialView per (arm, seed) with ``reports[arm][seed] = {epoch: val}``."""
    out, n = [], 0
    for arm, seeds in reports.items():
        for seed, rep in seeds.items():
            out.append(TrialView(n, arm, seed, stops=list(kw.get("stops_of", {}).get(arm, stops)), reported=dict(rep),
                                 finished=kw.get("finished", {}).get((arm, seed), False)))
            n += 1
    return out


def test_a_rung_is_decided_only_when_every_racing_trial_reported_and_seeds_are_pooled():
    # b's seed 1 is lucky (90) but its mean (55) is below a's (60): pooling keeps a.
    v = views({"a": {0: {2: 60.0}, 1: {2: 60.0}}, "b": {0: {2: 20.0}, 1: {2: 90.0}}, "c": {0: {2: 10.0}, 1: {}}})
    s = schedule(v, [2, 4, 8], 3)
    assert s.decisions == [] and s.pruned == {} and s.next_stop == {5: 2}  # c's seed 1 has not reported
    assert sorted(s.waiting) == [0, 1, 2, 3, 4]
    v[5].reported = {2: 12.0}
    s = schedule(v, [2, 4, 8], 3)
    assert s.decisions[0].kept == ["a"] and s.decisions[0].stopped == ["b", "c"]
    assert s.decisions[0].scores == {"a": 60.0, "b": 55.0, "c": 11.0}
    assert s.pruned == {2: 2, 3: 2, 4: 2, 5: 2} and s.next_stop == {0: 4, 1: 4} and not s.done


def test_the_last_rung_stops_nobody_and_protected_arms_run_through():
    v = views({"vanilla": {0: {2: 1.0, 4: 1.0}}, "kd": {0: {2: 50.0}}, "dml": {0: {2: 40.0}}},
              stops_of={"vanilla": [8]})
    s = schedule(v, [2, 4, 8], 3, protected=["vanilla"])
    assert s.decisions[0].kept == ["vanilla", "kd"] and s.pruned == {2: 2}
    assert s.next_stop == {0: 8, 1: 4}  # vanilla straight to the end, kd to the next rung
    done = views({"kd": {0: {2: 50.0, 4: 55.0, 8: 60.0}}, "dml": {0: {2: 40.0}}}, finished={("kd", 0): True, ("dml", 0): True})
    assert schedule(done, [2, 4, 8], 3).done


def test_an_offline_arm_waits_for_its_teacher():
    teacher = TrialView(0, "teacher-alone", 0, kind="teacher", stops=[8])
    kd = TrialView(1, "kd", 0, stops=[2, 4, 8], needs=0)
    s = schedule([teacher, kd], [2, 4, 8], 3)
    assert s.next_stop == {0: 8} and s.waiting == [1]
    teacher.finished = True
    assert schedule([teacher, kd], [2, 4, 8], 3).next_stop == {1: 2}
