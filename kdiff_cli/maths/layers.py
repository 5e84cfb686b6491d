"""Small network building blocks shared by the learned solver plugins (``dwdn``, ``unrolled``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` at a fixed width."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def res_blocks(width: int, count: int) -> nn.Sequential:
    """``count`` :class:`ResBlock` in a row (an empty Sequential, the identity, for 0)."""
    return nn.Sequential(*[ResBlock(width) for _ in range(count)])


def zero_conv(cin: int, cout: int) -> nn.Conv2d:
    """A 3x3 output convolution initialised to zero (the network starts as the identity)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
