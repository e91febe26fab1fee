from pathlib import Path

import pytest

from switokd import config as C
from switokd.models import MODELS
from switokd.methods import METHODS
from switokd.data import DATASETS

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_layering(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {epochs: 7, precision: bf16}\nnetworks:\n  - {name: t, model: wrn16_4, role: teacher}\n"
                 "  - {name: s, model: resnet20, lr: 0.01}\n")
    cfg = C.load_config(p, ["train.epochs=9", "networks.s.lr=0.05", "networks.0.gamma=0.2"])
    assert cfg.train.epochs == 9 and cfg.train.precision == "bf16" and cfg.train.batch_size == 128
    assert cfg.network("s").lr == 0.05 and cfg.network("s").role == "student"
    assert cfg.network("t").gamma == 0.2 and cfg.network("t").milestones == [100, 150, 200]


@pytest.mark.parametrize("override,match", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.epochs=three", "'train.epochs': expected int"),
    ("train.epochs=0", "'train.epochs': must be >= 1"),
    ("train.progress=maybe", "'train.progress': expected bool"),
    ("networks.student.lr=fast", "'networks.1.lr': expected float"),
    ("networks.ghost.lr=1", "no entry 'ghost'"),
    ("networks.student.role=mentor", "'networks.student.role': 'mentor' is not one of"),
    ("train.precision=fp8", "'train.precision'"),
    ("method.force_mode=expert", "unknown config key 'method.force_mode'"),
    ("method.tau=0", "'method.tau': must be > 0"),
    ("method.tau=-1", "'method.tau': must be > 0"),
    ("networks.student.milestones=[150,100]", "'networks.student.milestones': must be increasing"),
    ("networks.student.lr=-0.1", "'networks.student.lr': must be >= 0"),
    ("networks.student.schedule=linear", "'networks.student.schedule'"),
    ("train.tensorboard=true", "unknown config key 'train.tensorboard'"),
    ("train.batch_size=0", "'train.batch_size': must be >= 1"),
    ("train.checkpoint_every_s=-1", "'train.checkpoint_every_s': must be >= 0"),
    ("preset=3T3S", "'preset'"),
    ("networks.1.name=bad name", "must be letters"),
    ("epochs", "not of the form key=value"),
])
def test_override_errors(override, match):
    with pytest.raises(C.ConfigError, match=match):
        C.load_config(None, [override])


def test_file_errors(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load_config(bad)
    bad.write_text("train:\n  lr: 0.1\n")
    with pytest.raises(C.ConfigError, match="unknown config key 'train.lr'"):
        C.load_config(bad)
    bad.write_text("networks:\n  - {name: a, model: resnet20, depth: 3}\n")
    with pytest.raises(C.ConfigError, match="'networks.0.depth'"):
        C.load_config(bad)
    bad.write_text("networks:\n  - {name: a}\n  - {name: a}\n")
    with pytest.raises(C.ConfigError, match="duplicate network name 'a'"):
        C.load_config(bad)


def test_exponent_floats(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string; a float key takes it as the number it is."""
    cfg = C.load_config(None, ["networks.student.lr=1e-3", "networks.teacher.weight_decay=5E-4"])
    assert cfg.network("student").lr == 0.001 and cfg.network("teacher").weight_decay == 0.0005
    p = tmp_path / "c.yaml"
    p.write_text("networks:\n  - {name: s, lr: 2e-2}\n")
    assert C.load_config(p).network("s").lr == 0.02
    with pytest.raises(C.ConfigError, match="expected float, got '1e'"):
        C.load_config(None, ["networks.student.lr=1e"])


def test_roundtrip(tmp_path):
    cfg = C.load_config(None, ["train.epochs=5", "method.tau=2"])
    C.dump_yaml(cfg, tmp_path / "c.yaml")
    assert C.load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = C.load_config(path)
    assert cfg.method.name in METHODS and cfg.data.name in DATASETS
    for n in cfg.networks:
        assert n.model in MODELS, n.model


def test_a_methods_own_options_are_checked_by_the_method(tmp_path):
    from switokd.methods import method_from_config
    assert method_from_config(C.load_config(None, ["method.options.force_mode=expert"])).force_mode == "expert"
    with pytest.raises(C.ConfigError, match="'method.options': method 'dml' has no option 'force_mode'"):
        method_from_config(C.load_config(None, ["method.name=dml", "method.options.force_mode=expert"]))
    with pytest.raises(C.ConfigError, match="kdcl option ensemble must be one of 'minlogit', 'mean', got 'median'"):
        method_from_config(C.load_config(None, ["method.name=kdcl", "method.options.ensemble=median"]))
    with pytest.raises(C.ConfigError, match="switokd option force_mode must be one of 'learning', 'expert' or unset, "
                                            "got 'paused'"):
        method_from_config(C.load_config(None, ["method.options.force_mode=paused"]))
    with pytest.raises(C.ConfigError, match="'method.name'"):
        method_from_config(C.load_config(None, ["method.name=dmll"]))


# Each bad input and the exact one-line error it gets: the key at fault and what was expected.
BAD_OVERRIDES = [
    ("train.epochs=abc", "config key 'train.epochs': expected int, got 'abc' (str)"),
    ("train.epochs=true", "config key 'train.epochs': expected int, got True (bool)"),
    ("method.tau=abc", "config key 'method.tau': expected float, got 'abc' (str)"),
    ("train.epochs=null", "config key 'train.epochs': expected int, got None (NoneType)"),
    ("networks.0.milestones=[1, x]", "config key 'networks.0.milestones[1]': expected int, got 'x' (str)"),
    ("networks.0.milestones=5", "config key 'networks.0.milestones': expected a list, got 5 (int)"),
    ("train=5", "config section 'train': expected a mapping, got int"),
    ("data=[1]", "config section 'data': expected a mapping, got list"),
    ("networks.2.lr=0.1", "override 'networks.2.lr': no entry '2' in networks (names: ['teacher', 'student'])"),
    ("networks.nosuch.lr=0.1", "override 'networks.nosuch.lr': no entry 'nosuch' in networks (names: ['teacher', 'student'])"),
    ("train.epochs.x=1", "override 'train.epochs.x': train.epochs is not a section"),
    ("networks.0.milestones.7=1", "override 'networks.0.milestones.7': no entry '7' in networks.0.milestones (names: [])"),
    ("train.nosuch=1", "unknown config key 'train.nosuch' (valid keys here: batch_size, bn_refresh_epochs, channels_last, checkpoint_every, "
     "checkpoint_every_s, ddp, device, drop_last, epochs, eval_batch_size, eval_epochs, eval_every, eval_test, log_interval, loggers, out_dir, precision, "
     "progress, progress_interval_s, run_name, scale_lr, seed, sync_bn, threads)"),
    ("preset=3T3S", "config key 'preset': '3T3S' is not one of 1T1S, 2T1S, 1T2S"),
    ("train.eval_batch_size=0", "config key 'train.eval_batch_size': must be >= 1, got 0"),
    ("train.log_interval=0", "config key 'train.log_interval': must be >= 1, got 0"),
    ("train.eval_every=0", "config key 'train.eval_every': must be >= 1, got 0"),
    ("networks=[]", "config key 'networks': at least one network is needed"),
    ("networks={}", "config key 'networks': expected a list of mappings"),
    ("networks=[5]", "config section 'networks.0': expected a mapping, got int"),
    ("method.tau=0", "config key 'method.tau': must be > 0, got 0.0"),
    ("networks.0.lr=-1", "config key 'networks.teacher.lr': must be >= 0, got -1.0"),
    ("networks.0.name=a b", "config key 'networks.0.name': 'a b' must be letters, digits, '_' or '-'"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_gets_its_exact_message(override, message):
    with pytest.raises(C.ConfigError) as e:
        C.load_config(None, [override])
    assert str(e.value) == message


@pytest.mark.parametrize("text,message", [
    ("- 1\n- 2\n", "config file {path}: expected a mapping at the top level"),
    ("networks: {}\n", "{path}: 'networks' must be a non-empty list of mappings"),
    ("networks: []\n", "{path}: 'networks' must be a non-empty list of mappings"),
    ("networks: [5]\n", "{path}: networks[0] must be a mapping"),
    ("train: 5\n", "config section 'train': expected a mapping, got int"),
])
def test_bad_file_gets_its_exact_message(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(C.ConfigError) as e:
        C.load_config(path)
    assert str(e.value) == message.format(path=path)


def test_other_config_errors_exact():
    with pytest.raises(C.ConfigError) as e:
        C.validate(C.Config(preset="3T3S"))
    assert str(e.value) == "config key 'preset': '3T3S' is not one of 1T1S, 2T1S, 1T2S"
    with pytest.raises(C.ConfigError) as e:
        C.load_config(None).network("zz")
    assert str(e.value) == "no network named 'zz'; networks are ['teacher', 'student']"
    with pytest.raises(C.ConfigError) as e:
        C.from_dict([1])
    assert str(e.value) == "config section '<top>': expected a mapping, got list"


def test_edge_values_that_are_valid():
    assert C.load_config(None, ["method.tau=0.5"]).method.tau == 0.5
    cfg = C.load_config(None, ["train.epochs=3.0", "networks.0.lr=0", "networks.0.name=my_net-1",
                               "method.options.ensemble=mean", "method.options.force_mode=learning", "method.tau=null",
                               "train.run_name=a=b", "networks.1={name: s2, model: wrn16_1, role: student}"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert (cfg.method.tau, cfg.networks[0].lr, cfg.networks[0].name) == (None, 0.0, "my_net-1")
    assert (cfg.method.options, cfg.train.run_name) == ({"ensemble": "mean", "force_mode": "learning"}, "a=b")
    assert (cfg.networks[1].name, cfg.networks[1].model, cfg.networks[1].lr) == ("s2", "wrn16_1", 0.1)  # defaults filled


@pytest.mark.parametrize("preset,nets", [
    ("1T1S", [("teacher", "wrn16_2", "teacher"), ("student", "wrn16_1", "student")]),
    ("2T1S", [("teacher1", "wrn16_10", "teacher"), ("teacher2", "wrn16_2", "teacher"), ("student", "mobilenet", "student")]),
    ("1T2S", [("teacher", "wrn16_10", "teacher"), ("student1", "wrn16_2", "student"), ("student2", "mobilenet", "student")]),
])
def test_presets_fill_the_networks_unless_the_file_has_its_own(tmp_path, preset, nets):
    for cfg in (C.load_config(None, [f"preset={preset}"]), C.load_config(None, [f" preset = {preset}"])):
        assert [(n.name, n.model, n.role) for n in cfg.networks] == nets
    path = tmp_path / "c.yaml"
    path.write_text(f"preset: {preset}\n")
    assert [(n.name, n.model, n.role) for n in C.load_config(path).networks] == nets
    own = "networks:\n  - {name: a, model: resnet20, role: teacher}\n  - {name: b, model: wrn16_1, role: student}\n"
    path.write_text(f"preset: {preset}\n" + own)
    assert [n.name for n in C.load_config(path).networks] == ["a", "b"]
    path.write_text(own)
    assert [n.name for n in C.load_config(path, ["train.epochs=2"]).networks] == ["a", "b"]


def test_loading_never_shares_state_between_configs(tmp_path):
    """Configs are independent: changing one changes neither the presets nor a later load."""
    a = C.load_config(None)
    a.networks[0].lr, a.networks[0].milestones[0] = 99.0, 7
    b = C.load_config(None, ["preset=1T1S"])
    assert b.networks[0].lr == 0.1 and b.networks[0].milestones[0] == 100
    path = tmp_path / "c.yaml"
    path.write_text("networks:\n  - {name: a, model: resnet20, role: teacher, milestones: [1, 2]}\n"
                    "  - {name: b, model: wrn16_1, role: student}\n")
    c = C.load_config(path)
    c.networks[0].milestones.append(3)
    assert C.load_config(path).networks[0].milestones == [1, 2]


def test_defaults_and_merges_are_copies():
    a = C.Config()
    a.networks[0].lr = 99.0
    assert C.Config().networks[0].lr is None and C.PRESETS["1T1S"][0].lr is None  # unset: resolved when loaded
    base, top = {"a": {"b": [1]}, "k": 1}, {"c": {"d": [2]}, "k": 2}
    out = C._merge(base, top)
    assert out == {"a": {"b": [1]}, "k": 2, "c": {"d": [2]}}
    out["a"]["b"].append(9), out["c"]["d"].append(9)
    assert base == {"a": {"b": [1]}, "k": 1} and top == {"c": {"d": [2]}, "k": 2}


def test_saved_config_keeps_the_dataclass_order(tmp_path):
    C.dump_yaml(C.load_config(None), tmp_path / "c.yaml")
    top = [ln.split(":")[0] for ln in (tmp_path / "c.yaml").read_text().splitlines() if ln[:1].isalpha()]
    assert top == ["preset", "data", "method", "train", "networks"]


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "config key 'train.epochs': must be >= 1, got 0"),
    ("data.limit_train=-5", "config key 'data.limit_train': must be >= 0, got -5"),
    ("train.threads=-3", "config key 'train.threads': must be >= 0, got -3"),
    ("data.workers=-1", "config key 'data.workers': must be >= 0, got -1"),
    ("data.channels=2", "config key 'data.channels': 2 is not one of 0, 1, 3"),
    ("networks.student.momentum=1.5", "config key 'networks.student.momentum': must be in [0, 1), got 1.5"),
    ("networks.student.weight_decay=-1", "config key 'networks.student.weight_decay': must be >= 0, got -1.0"),
    ("method.kl_weight=-1", "config key 'method.kl_weight': must be >= 0, got -1.0"),
])
def test_numeric_keys_have_their_range_checked(override, message):
    with pytest.raises(C.ConfigError) as e:
        C.load_config(None, [override])
    assert str(e.value) == message


def test_an_unknown_key_gets_a_did_you_mean():
    with pytest.raises(C.ConfigError, match=r"unknown config key 'train.epoch'; did you mean 'epochs'\?"):
        C.load_config(None, ["train.epoch=3"])
