"""The published recipes: every unset method.* key takes its authors' value (methods/recipes.py), a key that is
set wins, DKD's beta follows the pair, a warm-up applies to any loss, and online DIST's measured trap warns."""
import pytest
import torch

from switokd import config as C
from switokd.cli import main
from switokd.methods import create_method, method_from_config
from switokd.methods.recipes import dkd_beta

ROLES = {"teacher": "teacher", "student": "student"}


def built(*overrides):
    return method_from_config(C.load_config(None, list(overrides)))


@pytest.mark.parametrize("overrides,want", [
    (["method.name=kd"], dict(tau=4.0, ce_weight=0.1, kl_weight=0.9, tau2=True)),  # mdistiller CFG.KD
    (["method.name=kd", "method.logit_std=true"], dict(tau=2.0, ce_weight=0.1, kl_weight=9.0, tau2=True)),  # KD+LS
    (["method.name=dkd"], dict(tau=4.0, ce_weight=1.0, kl_weight=1.0)),  # mdistiller CFG.DKD
    (["method.name=kd", "method.loss=dkd", "method.logit_std=true"], dict(tau=2.0, ce_weight=1.0, kl_weight=9.0)),
    (["method.name=dist"], dict(tau=4.0, ce_weight=1.0, kl_weight=2.0)),  # DIST_KD dist_cifar.yaml
    (["method.name=dml", "method.loss=dist"], dict(tau=1.0, ce_weight=1.0, kl_weight=1.0)),  # online: switokd's
    (["method.name=dml"], dict(tau=1.0, ce_weight=1.0, kl_weight=1.0, tau2=False)),
    (["method.name=switokd"], dict(tau=1.0, ce_weight=1.0, kl_weight=1.0, tau2=False)),
])
def test_unset_keys_take_the_recipe(overrides, want):
    w = built(*overrides).weights
    assert {k: getattr(w, k) for k in want} == want


def test_dkd_beta_and_warmup_follow_the_recipe_and_the_pair():
    m = built("method.name=dkd")  # the default pair, WRN-16-2 -> WRN-16-1: mdistiller's WRN pairs use 6
    assert (m.distill.beta, m.distill.warmup, m.distill.alpha) == (6.0, 20, 1.0)
    assert "wrn40_2_wrn_16_2.yaml" in m.recipe.source
    assert dkd_beta("resnet56", "resnet20") == (2.0, dkd_beta("resnet56", "resnet20")[1])
    assert dkd_beta("resnet20", "wrn16_1")[0] == 8.0 and dkd_beta("mobilenet", "resnet20")[0] == 8.0
    m = built("method.name=dkd", "networks.teacher.model=resnet56", "networks.student.model=resnet20")
    assert m.distill.beta == 2.0
    assert create_method("dkd", ROLES).distill.beta == 8.0  # no models given: mdistiller's default


def test_a_key_that_is_set_wins_and_is_named():
    m = built("method.name=kd", "method.tau=3", "method.warmup_epochs=5")
    assert m.weights.tau == 3.0 and m.weights.ce_weight == 0.1 and m.distill.warmup == 5
    assert m.recipe_given == ["tau", "warmup_epochs"]
    assert "(set in the config: tau, warmup_epochs)" in m.describe_recipe()
    with pytest.raises(C.ConfigError, match="did you mean method.warmup_epochs"):
        built("method.name=dkd", "method.loss_options.warmup=5")


def test_a_warm_up_ramps_any_loss():
    m = built("method.name=dml", "method.warmup_epochs=4")
    g = torch.Generator().manual_seed(0)
    z = {"teacher": torch.randn(8, 5, generator=g), "student": torch.randn(8, 5, generator=g)}
    y = torch.randint(0, 5, (8,), generator=g)
    kl = []
    for epoch in (1, 2, 4, 6):
        m.set_epoch(epoch)
        kl.append(m.step(z, y).losses["student"]["kl"].item())
    assert kl[0] == pytest.approx(kl[2] / 4) and kl[1] == pytest.approx(kl[2] / 2) and kl[3] == pytest.approx(kl[2])


def test_online_dist_at_the_offline_recipe_warns_with_the_reason():
    assert built("method.name=dml", "method.loss=dist").recipe_warnings == []
    (w,) = built("method.name=dml", "method.loss=dist", "method.tau=4", "method.kl_weight=2").recipe_warnings
    assert "~200x cross-entropy's" in w and "(to chance)" in w and "26% after 30 epochs" in w
    assert built("method.name=dist").recipe_warnings == []  # offline, a trained teacher: the recipe


def test_the_recipes_are_listed(capsys):
    assert main(["list", "recipes"]) == 0
    out = capsys.readouterr().out
    assert "kd+ls     recipe kd+ls: tau 2, CE 0.1, kl 9 x tau^2" in out and "hunto/DIST_KD" in out
