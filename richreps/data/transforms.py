"""Per-dataset transforms, following the authors' probing protocol and AlgoPerf's pretraining.

`size` is 224 at paper scale; smaller runs pass a smaller size and the eval resize keeps the
paper's 256/224 ratio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `import torchvision` costs 2 s per process (its ops import
    from torchvision import transforms as T  # torch._dynamo), which the cue runs never need

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
STATS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inat18": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "cifar100": (CIFAR_MEAN, CIFAR_STD),
}


def resize_for(size: int) -> int:
    return int(round(size * 256 / 224))


def probe_transform(dataset: str, train: bool, size: int = 224) -> T.Compose:
    """The authors' linear-probe transforms (richreps-timecat)."""
    from torchvision import transforms as T

    mean, std = STATS[dataset]
    bicubic = T.InterpolationMode.BICUBIC
    if dataset.startswith("cifar"):
        ops = (
            [T.RandomResizedCrop(size, scale=(0.8, 1.0), interpolation=bicubic), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(resize_for(size), interpolation=bicubic), T.CenterCrop(size)]
        )
    else:
        ops = (
            [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
            if train
            else [T.Resize(resize_for(size)), T.CenterCrop(size)]
        )
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


def pretrain_transform(train: bool, size: int = 224) -> T.Compose:
    """AlgoPerf's ImageNet ResNet-50 transforms."""
    from torchvision import transforms as T

    ops = (
        [T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)), T.RandomHorizontalFlip()]
        if train
        else [T.Resize(resize_for(size)), T.CenterCrop(size)]
    )
    return T.Compose([*ops, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
