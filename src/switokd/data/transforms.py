"""Batched tensor-side augmentation and normalisation (no per-image Python work)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_at(x: Tensor, padding: int, offsets: Tensor) -> Tensor:
    """Zero-pad by ``padding`` and crop each image at its (row, col) offset in ``offsets`` (n x 2)."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    xp = F.pad(x, (padding,) * 4)
    rows = (offsets[:, 0, None] + torch.arange(h, device=x.device))[:, :, None]  # n x h x 1
    cols = (offsets[:, 1, None] + torch.arange(w, device=x.device))[:, None, :]  # n x 1 x w
    idx = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing on (n, h, w) picks each image's own window; channels ride along.
    return xp.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)


def flip_where(x: Tensor, flip: Tensor) -> Tensor:
    """Flip left-right the images whose entry in the bool vector ``flip`` is true."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` and take a random crop of the original size, per image."""
    off = torch.randint(0, 2 * max(padding, 0) + 1, (x.shape[0], 2), generator=generator).to(x.device)
    return crop_at(x, padding, off)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image left-right with probability 1/2."""
    return flip_where(x, (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device))


class Normalize:
    """uint8 images -> float (x/255 - mean) / std, fused into one multiply-add."""

    def __init__(self, mean, std, device: torch.device | str = "cpu") -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device)[None, :, None, None]
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device)[None, :, None, None]
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)
