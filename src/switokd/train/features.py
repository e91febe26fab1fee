"""A method's features and modules in a run: the taps that record what the method reads from each network (by
module path), and the modules it owns, sized by a dry forward and put in the optimizers of the networks they
serve."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch

from ..errors import ConfigError
from ..methods.base import MethodOptionError
from ..models.features import FeatureTap
from .engine import add_modules


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """A method's or a feature tap's refusal of the config (ValueError) as a ConfigError: one line, exit 2."""
    try:
        yield
    except MethodOptionError as e:
        raise ConfigError(f"config key '{e.key}': {e}") from None
    except ValueError as e:  # its message names the key or path at fault
        raise ConfigError(str(e)) from None


def setup_features(method: Any, networks: Mapping[str, Any], data: Any, device: torch.device,
                   precision: Any) -> dict[str, FeatureTap]:
    """Hook the features ``method.feature_requests()`` names, size the method's modules by one dry forward of two
    blank images (every network in eval mode, without gradients, so no BatchNorm statistic moves), place them on
    ``device`` and add them to the optimizer of the network each serves. Returns the taps ({} for a method that
    reads logits only)."""
    models = {n: net.model for n, net in networks.items()}
    with _config_errors():  # a branch method without branch networks, and the like
        method.bind(models)
    requests = method.feature_requests()
    if not requests:
        return {}
    for n in requests:
        if networks[n].cfg.cache:
            raise ConfigError(f"config key 'networks.{n}.cache': the cache holds {n}'s logits only, and method "
                              f"{method.name!r} also reads its features ({', '.join(requests[n])}); drop the cache")
    taps = {n: FeatureTap(networks[n].model, paths, n) for n, paths in requests.items()}
    x = torch.zeros(2, data.in_chans, data.image_size, data.image_size, device=device)
    modes = {n: networks[n].model.training for n in requests}
    try:
        with torch.no_grad(), precision.autocast():
            for n in requests:
                networks[n].model.eval()
                networks[n].model(x)
    finally:
        for n, mode in modes.items():
            networks[n].model.train(mode)
    with _config_errors():  # a path whose output an in-place module changes; a loss refusing the data or shapes
        shapes = {n: {p: t.shape for p, t in taps[n].pop().items()} for n in requests}
        method.setup(shapes, labels=data.train_y, models=models)
    method.feature_modules.to(device)
    for n, module in method.modules.items():  # the trainable ones: in the optimizer of the network they serve
        net = networks[n]
        if net.optimizer is None:
            raise ConfigError(f"method {method.name!r} owns modules that serve {n}, which does not learn")
        add_modules(net.optimizer, module, net.cfg)
    return taps


__all__ = ["setup_features"]
