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
    ("method.force_mode=sometimes", "'method.force_mode'"),
    ("method.tau=0", "'method.tau': must be > 0"),
    ("method.tau=-1", "'method.tau': must be > 0"),
    ("networks.student.milestones=[150,100]", "'networks.student.milestones': must be increasing"),
    ("networks.student.lr=-0.1", "'networks.student.lr': must be >= 0"),
    ("networks.student.schedule=linear", "'networks.student.schedule'"),
    ("method.kdcl_ensemble=median", "'method.kdcl_ensemble'"),
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


def test_force_mode_is_for_switokd_only(tmp_path):
    from switokd.trainer import build_method
    assert build_method(C.load_config(None, ["method.force_mode=expert"])).force_mode == "expert"
    with pytest.raises(C.ConfigError, match="'method.force_mode' applies to switokd only, not 'dml'"):
        build_method(C.load_config(None, ["method.name=dml", "method.force_mode=expert"]))
    with pytest.raises(C.ConfigError, match="'method.name'"):
        build_method(C.load_config(None, ["method.name=dmll"]))
