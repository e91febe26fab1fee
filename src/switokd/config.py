"""Layered, strict configuration: dataclass defaults, then YAML, then ``key=value`` overrides.

An unknown key or a value of the wrong type raises ``ConfigError`` naming it.
Networks are a list; an override addresses one by name or index:
``networks.student.lr=0.01`` or ``networks.1.lr=0.01``.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml


from .errors import ConfigError  # noqa: E402  (re-exported: switokd.config.ConfigError)


@dataclass
class DataConfig:
    name: str = "fashion_mnist"  # a registered data set (switokd list datasets)
    dir: str | None = None  # None: the data set's default location (if it has one)
    augment: bool = True  # random crops (and flips) while training
    crop_padding: int | None = None  # None: the data set's usual padding
    hflip: bool = True  # random horizontal flips, with augment
    augment_seed: int | None = None  # None: crops and flips follow train.seed; N: each image's from N (a teacher cache)
    image_size: int = 0  # image_folder only: resize every image to this size (0 keeps it)
    channels: int = 0  # 1 (gray) or 3 (color) forces it; 0: the data set's own (image_folder: color if any file is)
    in_memory: bool = True  # false: image_folder is decoded from disk while training (imagenet always is)
    workers: int = 4  # streamed data sets: DataLoader worker processes that decode images
    limit_train: int = 0  # keep the first N training examples (0 keeps all)
    limit_test: int = 0  # keep the first N test examples (0 keeps all)
    # Held out of training, class-balanced, from split_seed: best.pt and the best epoch are chosen on it.
    val_split: float = 0.0  # a fraction of the training images (0 < v < 1), or a count (>= 1); 0: none
    # Run conditions (training split only; README "Noisy labels, scarce labels and drift"), all drawn from
    # split_seed, independent of train.seed: every method, seed and rank sees the same labels and stream.
    split_seed: int = 0  # the seed of every run condition (noise, few labels, drift)
    label_noise: float = 0.0  # share of training labels changed, in [0, 1)
    label_noise_kind: str = "symmetric"  # symmetric | pairflip
    labels_per_class: int = 0  # keep exactly N training images per class (0: all)
    drift_phases: int = 0  # K >= 2 phases, each with its own group of classes making up drift_share of the stream
    drift_share: float = 0.8  # in (0, 1]


# The learning rate a network's family trains at in the references, where a config leaves it unset: MobileNets
# at 0.01 (hfutqian/SwitOKD WRN16-2_0.5mobilenetv2/main.py, mdistiller's and RepDistiller's MobileNetV2
# students); every other family at 0.1. A MobileNet at 0.1 can sit at chance for a whole run.
REFERENCE_LR = {"mobilenet": 0.01}


def reference_lr(model: str) -> float:
    """The reference learning rate of ``model``'s family (its name's prefix in ``REFERENCE_LR``), else 0.1."""
    return next((lr for prefix, lr in REFERENCE_LR.items() if model.startswith(prefix)), 0.1)


@dataclass
class NetworkConfig:
    name: str = "net"  # the network's name (logs, checkpoints, overrides)
    model: str = "resnet20"  # a registered model (switokd list models) or package.module:factory
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments for the model's factory
    role: str = "student"  # teacher | student
    optimizer: str = "sgd"  # sgd | adamw
    lr: float | None = None  # the learning rate (None: the family's reference, REFERENCE_LR: 0.01 for MobileNets, else 0.1)
    momentum: float = 0.9  # SGD momentum, in [0, 1)
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 5e-4  # weight decay (L2 for sgd, decoupled for adamw)
    decay_norm_bias: bool = True  # false: no weight decay on normalisation weights and biases (any 1-D parameter)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw's betas
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [100, 150, 200])  # multistep: epochs of each lr drop
    gamma: float = 0.1  # multistep: the factor at each milestone
    checkpoint: str | None = None  # initial weights: a switokd checkpoint or a state_dict file
    checkpoint_network: str | None = None  # which network of that checkpoint (default: this name)
    checkpoint_strict: bool = True  # false: load what fits (new head left at init, stem conv adapted), say what
    sync_bn: bool = False  # several CUDA processes: SyncBatchNorm (batch statistics over the global batch)
    cache: str | None = None  # a frozen teacher: a directory caching its logits for every training view (docs/performance.md)
    cache_dtype: str = "fp32"  # fp32 (exact for fp32 and bf16 runs) | fp16 (half the bytes; lossy for fp32 runs, exact for bf16 logits in fp16's range)
    cache_topk: int = 0  # keep each view's k largest logits only (0: all; FKD's compression for many classes)
    branches: int = 0  # split the model into a shared trunk and this many branches (online branch methods; 0: off)
    split: str = ""  # where the branches begin: a stage name (stage3) or a module path (layer4); "" is stage3
    deployed_branch: int = 0  # the branch that gives the network's logits and ships

    @property
    def base_lr(self) -> float:
        """``lr``, or where it is unset its family's reference (``reference_lr``)."""
        return self.lr if self.lr is not None else reference_lr(self.model)


@dataclass
class MethodConfig:
    name: str = "switokd"  # vanilla | kd | dml | kdcl | switokd | uniokd | dkd | dist, or package.module:factory
    # Unset (None) values are the published recipe's (docs/method.md, "The recipes"): kd tau 4, CE 0.1, KL 0.9;
    # kd+ls tau 2, CE 0.1, KL 9; dkd tau 4, beta per pair, warm-up 20; dist tau 4, weight 2; online KL tau 1.
    tau: float | None = None  # the temperature (None: the recipe's)
    ce_weight: float | None = None  # the weight of cross-entropy on the labels (None: the recipe's)
    kl_weight: float | None = None  # the weight of the distillation term, whatever the loss (None: the recipe's)
    tau2: bool | None = None  # scale KL by tau^2 (None: the recipe's; kd, kdcl on)
    warmup_epochs: int | None = None  # the distillation term x min(epoch / N, 1) (None: the recipe's, dkd 20; 0: off)
    loss: str | None = None  # the distillation loss: kl | dkd | dist (None: the method's own, kl but for dkd, dist)
    loss_options: dict[str, Any] = field(default_factory=dict)  # the loss's options, e.g. {beta: 6} (unset: recipe's)
    logit_std: bool = False  # z-score both sides' logits over the classes before the temperature
    feature_loss: str | None = None  # a feature-distillation loss added to every student's: at | fitnet | nst | pkt | rkd | sp | vid
    feature_options: dict[str, Any] = field(default_factory=dict)  # its options, e.g. {student_paths: [layer3]}
    feature_weight: float | None = None  # its weight (None: the authors' recipe, e.g. at 1000)
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options, checked by the method
    label: str = ""  # the method's name in reports and tables ("": name, then +loss and +ls, e.g. dml+dkd)


@dataclass
class TrainConfig:
    epochs: int = 300  # epochs to train (>= 1)
    batch_size: int = 128  # per process: the global batch is batch_size x processes (docs/distributed.md)
    eval_batch_size: int = 1000  # the test split's batch size
    drop_last: bool = False  # drop a last incomplete training batch
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 where the device runs it natively)
    channels_last: bool = False  # channels-last memory format (faster on some GPUs)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default)
    seed: int = 0  # weights, order and augmentation (the run conditions use data.split_seed)
    log_interval: int = 50  # steps between rows of steps.jsonl
    out_dir: str = "runs"  # runs are written to out_dir/run_name
    run_name: str = ""  # default: <method>-<dataset>-<time>
    progress: bool = True  # the run header, progress lines (a bar on a terminal) and epoch lines
    progress_interval_s: float = 30.0  # without a terminal: seconds between progress lines
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    eval_epochs: list[int] = field(default_factory=list)  # also evaluate after these epochs (the race's rungs)
    bn_refresh_epochs: list[int] = field(default_factory=list)  # at these epochs' evaluations, score each learning network with BatchNorm statistics re-estimated on the training split, set aside afterwards (training is unchanged; those scores choose no best.pt); the race sets its rungs here
    eval_test: str = "every"  # every: read the test split at every evaluation; last: at the last epoch only (needs data.val_split)
    checkpoint_every_s: float = 300.0  # also write last.pt inside an epoch this often (0: at epoch ends only)
    checkpoint_every: int = 0  # also write last.pt every N steps (0: off)
    sync_bn: bool = False  # every network's BatchNorm as SyncBatchNorm under several CUDA processes
    scale_lr: bool = False  # several processes: lr x number of processes (the linear scaling rule)
    ddp: bool = False  # several processes: each learning network in torch's DDP (false: bucketed all-reduce)
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])  # sinks: jsonl (always), tensorboard, mlflow, yours


def default_networks() -> list[NetworkConfig]:
    return copy.deepcopy(PRESETS["1T1S"])


def _net(name: str, model: str, role: str) -> NetworkConfig:
    return NetworkConfig(name=name, model=model, role=role)


# The paper's basis topologies (Table 7, CIFAR-100 models). A preset fills ``networks``
# unless the YAML file lists them; overrides such as networks.teacher1.model=... still apply.
PRESETS: dict[str, list[NetworkConfig]] = {
    "1T1S": [_net("teacher", "wrn16_2", "teacher"), _net("student", "wrn16_1", "student")],
    "2T1S": [_net("teacher1", "wrn16_10", "teacher"), _net("teacher2", "wrn16_2", "teacher"),
             _net("student", "mobilenet", "student")],
    "1T2S": [_net("teacher", "wrn16_10", "teacher"), _net("student1", "wrn16_2", "student"),
             _net("student2", "mobilenet", "student")],
}


@dataclass
class Config:
    preset: str = ""  # "", 1T1S, 2T1S or 1T2S: a ready list of networks (see PRESETS)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    networks: list[NetworkConfig] = field(default_factory=default_networks)

    def network(self, name: str) -> NetworkConfig:
        for n in self.networks:
            if n.name == name:
                return n
        raise ConfigError(f"no network named {name!r}; networks are {[n.name for n in self.networks]}")


ROLES = ("teacher", "student")
NOISE_KINDS = ("symmetric", "pairflip")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EVAL_TEST = ("every", "last")  # train.eval_test: the race reads test at the last epoch only (its rungs read validation)
SCHEDULES = ("multistep", "cosine", "constant")

# ----------------------------------------------------------------------------- type checking

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])  # every non-None member of the union refused the value
    if origin is dict or tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key {key!r}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r} ({type(value).__name__})")
        (item,) = typing.get_args(tp)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key {key!r}: expected {tp.__name__}, got {value!r} (bool)")
    if not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """A dataclass instance from a dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or '<top>'!r}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (valid keys here: {', '.join(sorted(names))})")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, key)
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            if not isinstance(v, list):
                raise ConfigError(f"config key {key!r}: expected a list of mappings")
            kwargs[k] = [_build(typing.get_args(tp)[0], item, f"{key}.{i}") for i, item in enumerate(v)]
        else:
            kwargs[k] = _check_type(v, tp, key)
    return cls(**kwargs)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def upgrade_saved_config(data: dict) -> dict:
    """A config saved in a checkpoint by an earlier version, with the keys that moved put where they are now:
    ``method.kdcl_ensemble``, ``method.force_mode`` and ``method.freeze_teacher_bn`` into ``method.options``
    (``ensemble``, ``force_mode``, ``freeze_teacher_bn``), ``train.tensorboard`` into ``train.loggers``. Only
    checkpoints are read this way: in a YAML file or an override those keys are unknown keys."""
    import copy
    data = copy.deepcopy(data)
    method, train = data.get("method"), data.get("train")
    if isinstance(method, dict):
        options = dict(method.get("options") or {})
        for old, new, default in (("kdcl_ensemble", "ensemble", "minlogit"), ("force_mode", "force_mode", None),
                                  ("freeze_teacher_bn", "freeze_teacher_bn", False)):
            if old in method:
                value = method.pop(old)
                if value != default:
                    options.setdefault(new, value)
        method["options"] = options
    if isinstance(train, dict) and "tensorboard" in train:
        if train.pop("tensorboard"):
            train["loggers"] = list(dict.fromkeys([*train.get("loggers", ["jsonl"]), "tensorboard"]))
    return data


def resolve_lrs(cfg: "Config") -> "Config":
    """Set every network's unset ``lr`` to its family's reference (``reference_lr``); returns ``cfg``."""
    for n in cfg.networks:
        if n.lr is None:
            n.lr = reference_lr(n.model)
    return cfg


def from_dict(data: dict) -> Config:
    cfg = resolve_lrs(_build(Config, data, ""))
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- layering


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` to a plain dict tree (values parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    node: Any = tree
    path = []
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        path.append(p)
        if isinstance(node, list):
            # Networks by name first, then by index.
            match = [j for j, item in enumerate(node) if isinstance(item, dict) and item.get("name") == p]
            if match:
                idx = match[0]
            elif p.isdigit() and int(p) < len(node):
                idx = int(p)
            else:
                names = [item.get("name") for item in node if isinstance(item, dict)]
                raise ConfigError(f"override {key!r}: no entry {p!r} in {'.'.join(path[:-1])} (names: {names})")
            if last:
                node[idx] = _parse_value(text)
            else:
                node = node[idx]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {'.'.join(path[:-1])} is not a section")
            if last:
                node[p] = _parse_value(text)
            else:
                if p not in node:
                    node[p] = {}
                node = node[p]


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file, then each override in order; validated.

    Args:
        path: a YAML file (None: the defaults alone).
        overrides: ``key=value`` strings, values parsed as YAML; networks by name or index
            (``networks.student.lr=0.01``).

    Returns:
        The ``Config``. An unknown key, a wrong type or a value out of range is a ``ConfigError`` naming it.

    Example:
        >>> from switokd import load_config
        >>> cfg = load_config(None, ["method.name=dml", "train.epochs=2"])
        >>> cfg.method.name, cfg.train.epochs, [n.name for n in cfg.networks]
        ('dml', 2, ['teacher', 'student'])
    """
    tree = to_dict(Config())
    user_networks = False
    if path is not None:
        user = load_yaml(path)
        user_networks = "networks" in user
        # A YAML networks list replaces the default one; each entry starts from NetworkConfig defaults.
        if "networks" in user:
            nets = user["networks"]
            if not isinstance(nets, list) or not nets:
                raise ConfigError(f"{path}: 'networks' must be a non-empty list of mappings")
            tree["networks"] = []
            for i, n in enumerate(nets):
                if not isinstance(n, dict):
                    raise ConfigError(f"{path}: networks[{i}] must be a mapping")
                tree["networks"].append(dict(n))
            user = {k: v for k, v in user.items() if k != "networks"}
        tree = _merge(tree, user)
    # A preset given on the command line is applied before the other overrides,
    # so that they can address the preset's networks by name.
    rest = []
    for o in overrides:
        if o.split("=", 1)[0].strip() == "preset":
            apply_override(tree, o)
        else:
            rest.append(o)
    preset = tree.get("preset") or ""
    if preset:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(f"config key 'preset': {preset!r} is not one of {', '.join(PRESETS)}")
        if not user_networks:
            tree["networks"] = [dataclasses.asdict(n) for n in PRESETS[preset]]
    # Every entry is a mapping here (the defaults, a preset, or the YAML list checked above).
    tree["networks"] = [_merge(dataclasses.asdict(NetworkConfig()), n) for n in tree["networks"]]
    for o in rest:
        apply_override(tree, o)
    return from_dict(tree)


def validate(cfg: Config) -> None:
    """Cross-field checks that a type check cannot make."""
    def one_of(key: str, value: str, allowed) -> None:
        if value not in allowed:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(str, allowed))}")

    one_of("train.precision", cfg.train.precision, PRECISIONS)
    if cfg.preset:
        one_of("preset", cfg.preset, tuple(PRESETS))
    positive = {"train.epochs": cfg.train.epochs, "train.batch_size": cfg.train.batch_size,
                "train.eval_batch_size": cfg.train.eval_batch_size, "train.log_interval": cfg.train.log_interval,
                "train.eval_every": cfg.train.eval_every}
    for k, v in positive.items():
        if v < 1:
            raise ConfigError(f"config key {k!r}: must be >= 1, got {v}")
    one_of("train.eval_test", cfg.train.eval_test, EVAL_TEST)
    if cfg.train.eval_test == "last" and not cfg.data.val_split:
        raise ConfigError("config key 'train.eval_test': 'last' evaluates the epochs before the last on the validation "
                          "split only, and this run has none: set data.val_split, or train.eval_test=every")
    for k in ("eval_epochs", "bn_refresh_epochs"):
        if any(e < 1 for e in getattr(cfg.train, k)):
            raise ConfigError(f"config key 'train.{k}': epochs are counted from 1, got {getattr(cfg.train, k)}")
    for k in ("checkpoint_every_s", "checkpoint_every", "progress_interval_s", "threads"):
        if getattr(cfg.train, k) < 0:
            raise ConfigError(f"config key 'train.{k}': must be >= 0, got {getattr(cfg.train, k)}")
    for k in ("limit_train", "limit_test", "workers", "image_size"):
        if getattr(cfg.data, k) < 0:
            raise ConfigError(f"config key 'data.{k}': must be >= 0, got {getattr(cfg.data, k)}")
    if cfg.data.crop_padding is not None and cfg.data.crop_padding < 0:
        raise ConfigError(f"config key 'data.crop_padding': must be >= 0, got {cfg.data.crop_padding}")
    one_of("data.channels", cfg.data.channels, (0, 1, 3))
    for k in ("ce_weight", "kl_weight", "warmup_epochs"):
        if getattr(cfg.method, k) is not None and getattr(cfg.method, k) < 0:
            raise ConfigError(f"config key 'method.{k}': must be >= 0, got {getattr(cfg.method, k)}")
    _validate_conditions(cfg.data)
    if cfg.method.tau is not None and cfg.method.tau <= 0:
        raise ConfigError(f"config key 'method.tau': must be > 0, got {cfg.method.tau}")
    if not cfg.networks:
        raise ConfigError("config key 'networks': at least one network is needed")
    seen = set()
    for i, n in enumerate(cfg.networks):
        key = f"networks.{n.name}"
        if n.name in seen:
            raise ConfigError(f"config key 'networks': duplicate network name {n.name!r}")
        if not n.name or not n.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"config key 'networks.{i}.name': {n.name!r} must be letters, digits, '_' or '-'")
        seen.add(n.name)
        one_of(f"{key}.role", n.role, ROLES)
        one_of(f"{key}.schedule", n.schedule, SCHEDULES)
        if n.base_lr < 0:
            raise ConfigError(f"config key '{key}.lr': must be >= 0, got {n.lr}")
        if not 0.0 <= n.momentum < 1.0:
            raise ConfigError(f"config key '{key}.momentum': must be in [0, 1), got {n.momentum}")
        if n.weight_decay < 0 or n.gamma <= 0:
            bad = ("weight_decay", n.weight_decay, ">= 0") if n.weight_decay < 0 else ("gamma", n.gamma, "> 0")
            raise ConfigError(f"config key '{key}.{bad[0]}': must be {bad[2]}, got {bad[1]}")
        if any(m < 0 for m in n.milestones):
            raise ConfigError(f"config key '{key}.milestones': epochs must be >= 0, got {n.milestones}")
        if sorted(n.milestones) != n.milestones:
            raise ConfigError(f"config key '{key}.milestones': must be increasing, got {n.milestones}")


def _validate_conditions(d: DataConfig) -> None:
    if d.val_split < 0 or (d.val_split >= 1 and not float(d.val_split).is_integer()):
        raise ConfigError(f"config key 'data.val_split': must be a fraction in (0, 1), a whole count of images, "
                          f"or 0 (none), got {d.val_split}")
    if not 0.0 <= d.label_noise < 1.0:
        raise ConfigError(f"config key 'data.label_noise': must be in [0, 1), got {d.label_noise}")
    if d.label_noise_kind not in NOISE_KINDS:
        raise ConfigError(f"config key 'data.label_noise_kind': {d.label_noise_kind!r} is not one of "
                          f"{', '.join(NOISE_KINDS)}")
    if d.label_noise_kind == "pairflip" and d.label_noise >= 0.5:
        raise ConfigError(f"config key 'data.label_noise': pairflip noise must be below 0.5, got {d.label_noise} "
                          "(class k's wrong label k+1 would be its majority label)")
    for key in ("labels_per_class", "split_seed", "drift_phases"):
        if getattr(d, key) < 0:
            raise ConfigError(f"config key 'data.{key}': must be >= 0, got {getattr(d, key)}")
    if d.drift_phases == 1:
        raise ConfigError("config key 'data.drift_phases': drift needs at least 2 phases (0 turns it off), got 1")
    if not 0.0 < d.drift_share <= 1.0:
        raise ConfigError(f"config key 'data.drift_share': must be in (0, 1], got {d.drift_share}")


def describe_conditions(d: DataConfig) -> str:
    """The run conditions of a config in a few words ("" for clean, stationary data)."""
    parts = []
    if d.labels_per_class:
        parts.append(f"{d.labels_per_class} labels per class")
    if d.label_noise:
        parts.append(f"{d.label_noise:.0%} {d.label_noise_kind} label noise")
    if d.drift_phases:
        parts.append(f"drift in {d.drift_phases} phases (share {d.drift_share:g})")
    return ", ".join(parts) + (f" (split seed {d.split_seed})" if parts else "")


def yaml_text(cfg: Config) -> str:
    """The resolved config as YAML (what ``config.yaml`` holds), its run conditions in a first comment line."""
    conditions = describe_conditions(cfg.data)
    head = f"# run conditions: {conditions}\n" if conditions else ""
    return head + yaml.safe_dump(to_dict(cfg), sort_keys=False)


def dump_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml_text(cfg))
