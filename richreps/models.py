"""Members: torchvision ResNet-50 with AlgoPerf's initialisation, and smaller ones for CPU runs.

Every model exposes `features(x)`, the pooled penultimate activations that CATn concatenates,
and `fc`, the classifier on top of them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.optim.swa_utils import update_bn

if TYPE_CHECKING:  # torchvision is imported where a ResNet is built: `import torchvision` costs 2 s
    from torchvision.models.resnet import ResNet  # per process, which small_cnn runs never need

ARCHS = ("resnet50", "resnet18_cifar", "small_cnn")


LECUN_TRUNC = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def lecun_trunc_normal_(weight: torch.Tensor) -> torch.Tensor:
    """AlgoPerf's `pytorch_default_init`: LeCun-normal truncated at two standard deviations, rescaled
    so that the truncated draw keeps variance 1/fan_in (JAX's `lecun_normal`)."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(1.0 / fan_in) / LECUN_TRUNC
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def algoperf_init(model: ResNet) -> ResNet:
    """AlgoPerf's ImageNet ResNet-50 initialisation (`imagenet_pytorch/models.py`): every convolution
    truncated LeCun-normal, BN weight 1 and bias 0, the last BN of every residual block zero (each
    block starts as the identity), fc weights N(0, 0.01) and bias 0."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            lecun_trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    nn.init.normal_(model.fc.weight, std=0.01)
    nn.init.zeros_(model.fc.bias)
    return model


def _resnet_features(model: ResNet, x: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


class Member(nn.Module):
    """A backbone whose `features` give the representation and whose `fc` classifies it."""

    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNetMember(Member):
    def __init__(self, net: ResNet):
        super().__init__()
        self.net = net
        self.feature_dim = net.fc.in_features

    @property
    def fc(self) -> nn.Linear:
        return self.net.fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return _resnet_features(self.net, x)


class SmallCNN(Member):
    """Four conv-BN-ReLU stages and global pooling: a ResNet-shaped member that trains on 2 CPU cores.

    `last_mult` widens the last stage only, so that one network has the feature dimension of a CATn
    (`last_mult = n`: 8 x width x n features). That is WIDE1, the single-model control at matched
    dimension, the laptop analogue of the paper's Table 2 "baseline" (ResNet50W2 beside CAT4).
    """

    def __init__(self, num_classes: int, width: int = 32, last_mult: int = 1):
        super().__init__()
        if last_mult < 1:
            raise ValueError(f"last_mult must be at least 1, got {last_mult}")
        chans = [3, width, 2 * width, 4 * width, 8 * width * last_mult]
        layers = []
        for i in range(4):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.feature_dim = chans[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1)


class Joint(Member):
    """JOINTn: n towers side by side, their features concatenated, one classifier over the concatenation,
    trained as one network. CATmax's architecture exactly (n members' features side by side) without its
    independence: one loss, one optimizer, one run. Tower i starts as the network a run of seed
    `tower_seeds[i]` starts as (`build_joint`), so untrained JOINTn is untrained CATmax, bitwise. The
    towers' own classifiers are dropped: only the joint one trains."""

    def __init__(self, towers: list[Member], num_classes: int):
        super().__init__()
        for t in towers:
            del t.fc
        self.towers = nn.ModuleList(towers)
        self.feature_dim = sum(t.feature_dim for t in towers)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.features(x) for t in self.towers], 1)


def build_joint(arch: str, num_classes: int, width: int, tower_seeds: list[int]) -> Joint:
    """JOINTn whose tower i is initialised exactly as `build_model` is after `torch.manual_seed(tower_seeds[i])`."""
    towers = []
    for s in tower_seeds:
        torch.manual_seed(s)
        towers.append(build_model(arch, num_classes, width))
    return Joint(towers, num_classes)


def build_model(arch: str, num_classes: int, width: int = 32, last_mult: int = 1) -> Member:
    """A fresh member; the global RNG (seed it first) decides the initialisation.

    `last_mult` > 1 (small_cnn only) widens the last stage: WIDE1, see `SmallCNN`.
    """
    if last_mult != 1 and arch != "small_cnn":
        raise ValueError(f"last_mult (a wider last stage) is defined for small_cnn only, not {arch!r}")
    from torchvision.models import resnet18, resnet50

    if arch == "resnet50":
        return ResNetMember(algoperf_init(resnet50(num_classes=num_classes)))
    if arch == "resnet18_cifar":  # 3x3 stem without max-pool, for 32 px inputs
        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        return ResNetMember(algoperf_init(net))
    if arch == "small_cnn":
        return SmallCNN(num_classes, width, last_mult)
    raise ValueError(f"unknown arch {arch!r}; known: {ARCHS}")


def train_flops_per_image(model: nn.Module, image_size: int) -> float:
    """Forward + backward FLOPs of one training image, counted by torch's FlopCounterMode.

    Reported beside WIDE1, whose compute differs from CAT1's at the same step count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    x = torch.zeros(2, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / 2


def recalibrate_bn(model: nn.Module, batches, device: torch.device | str | None = None) -> int:
    """Recompute BatchNorm running statistics from `batches` as an exact average; returns their number.

    Schedule-free evaluates at a different point (x) from where it trains (y), so the running
    statistics gathered during training belong to the wrong weights; AlgoPerf's schedule-free
    entry missed its target for lack of this. The computation is torch's `update_bn` (reset,
    cumulative average, mode and momentum restored); this wrapper counts the batches and refuses
    zero, which would leave the statistics reset.
    """
    seen = 0

    def counted():
        nonlocal seen
        for x in batches:
            seen += 1
            yield x

    with torch.no_grad():
        update_bn(counted(), model, device)
    if seen == 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise RuntimeError("recalibrate_bn: no calibration batches; BatchNorm statistics would stay reset")
    return seen
