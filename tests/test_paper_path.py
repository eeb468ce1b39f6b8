"""The paper's path on the CPU: ImageNet-format pretraining of a ResNet-50 through torchrun, members
exported with BatchNorm recalibrated at the evaluation point, probes on ImageNet and CIFAR folders,
and notebooks 03 and 04 on a params file that points at the generated folder."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import ROOT, sh  # noqa: E402
from test_data import write_cifar, write_imagenet  # noqa: E402

from richreps import members  # noqa: E402
from richreps.config import Recipe  # noqa: E402
from richreps.data.streams import make_data  # noqa: E402
from richreps.models import recalibrate_bn  # noqa: E402

RECIPE = "--data imagenet --arch resnet50 --image-size 64 --global-batch 8 --bn-batches 2 --val-fraction 0.1"


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """`--decode gpu` here (the batched decode, on the CPU); the notebooks below take the default, PIL."""
    work = tmp_path_factory.mktemp("paper")
    root = write_imagenet(work / "imagenet")
    out = sh(
        f"torchrun --standalone --nproc_per_node 2 -m richreps.pretrain --out {work / 'run'} --seed 0 "
        f"--steps 4 --export-at 2 4 --data-root {root} {RECIPE} --workers 0 --eval-every 2 --decode gpu",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return work, root


def bn_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_every_export_carries_bn_statistics_recomputed_at_its_own_weights(paper_run):
    work, root = paper_run
    recipe = Recipe(data="imagenet", data_root=str(root), arch="resnet50", image_size=64, global_batch=8,
                    bn_batches=2, val_fraction=0.1)  # fmt: skip
    _, calib, _, _ = make_data(recipe, seed=0, rank=0, world=2, device=torch.device("cpu"), micro=4)
    labels = [calib.subset.dataset.base.samples[i][1] for i in calib.subset.indices]
    assert len(set(labels)) >= 3, "the calibration sample must not be the first classes of a sorted folder"
    for step in (2, 4):
        member = members.load(members.member_path(work / "run", 0, step))
        exported = bn_buffers(member)
        assert float(exported["net.bn1.running_mean"].abs().sum()) > 0  # not left reset
        recalibrate_bn(member, calib)
        for key, value in bn_buffers(member).items():
            assert torch.allclose(exported[key], value, rtol=1e-3, atol=1e-5), (step, key)


def test_probe_command_on_the_imagenet_and_cifar_folders(paper_run):
    work, root = paper_run
    files = " ".join(str(members.member_path(work / "run", 0, s)) for s in (2, 4))
    out = sh(
        f"python -m richreps.probe --members {files} --dataset imagenet --root {root} --image-size 64 "
        f"--cache {work / 'cache'} --workers 0"
    )
    assert out.returncode == 0 and "CAT2 imagenet [fast]: test accuracy" in out.stdout, out.stderr[-2000:]
    write_cifar(work / "cifar", "cifar10", n_train=100, n_test=20)
    out = sh(
        f"python -m richreps.probe --members {files} --dataset cifar10 --root {work / 'cifar'} "
        f"--image-size 32 --cache {work / 'cache'} --workers 0"
    )
    assert out.returncode == 0 and "CAT2 cifar10 [fast]: test accuracy" in out.stdout, out.stderr[-2000:]


def test_notebooks_03_and_04_run_the_imagenet_path(paper_run, tmp_path):
    work, root = paper_run
    write_cifar(work / "cifar-nb", "cifar10", n_train=100, n_test=20)
    params = yaml.safe_load((ROOT / "params" / "paper.yaml").read_text())
    params.update(
        data_root=str(root), imagenet_root=str(root), cifar10_root=str(work / "cifar-nb"), cifar100_root="",
        inat18_root="", image_size=64, probe_image_size=64, baseline_steps=4, total_steps=4, cat_sizes=[2],
        seeds=[0, 1], global_batch=8, warmup_steps=1, bn_batches=2, eval_every=2, ckpt_every=100,
        launch="local", nproc=2, compile=False, images_per_s_per_device=0.0, device="auto",
    )  # fmt: skip
    path = tmp_path / "paper_cpu.yaml"
    path.write_text(yaml.safe_dump(params))
    out = sh(f"python -m richreps.run {path} --only 03 04 --outputs {tmp_path / 'out'}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    tables = tmp_path / "out" / "paper_cpu" / "tables"
    long = (tables / "04_probes_long.csv").read_text()
    assert "imagenet" in long and "cifar10" in long
    assert (tables / "03_members.csv").read_text().count("True") == 3  # CAT1's member and CAT2's two
