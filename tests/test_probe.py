"""Members from both checkpoint formats, the feature cache, and both probes on problems with known answers."""

import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet50

from richreps import experiment, features, members, probe
from richreps.config import Recipe
from richreps.models import Member


@pytest.fixture(scope="module")
def algoperf_ckpt(tmp_path_factory):
    """A torchvision ResNet-50 saved the way AlgoPerf / richreps-timecat save theirs."""
    torch.manual_seed(0)
    net = resnet50().eval()
    renamed = {}
    for k, v in net.state_dict().items():
        k = k.replace(".downsample.0.", ".downsample.conv.").replace(".downsample.1.", ".downsample.bn.")
        renamed[f"_orig_mod.module.{k}"] = v
    path = tmp_path_factory.mktemp("ckpt") / "algoperf.pt"
    torch.save({"model_params": renamed, "optimizer_state": {}, "global_step": 80000}, path)
    return path, net


def test_algoperf_checkpoint_loads_exactly(algoperf_ckpt):
    path, net = algoperf_ckpt
    member = members.load(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = torch.flatten(
            net.avgpool(
                net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
            ),
            1,
        )
        assert torch.equal(member.features(x), ref)
    assert member.feature_dim == 2048 and not member.training


def test_algoperf_key_mapping():
    assert (
        members.algoperf_key("_orig_mod.module.layer1.0.downsample.conv.weight")
        == "layer1.0.downsample.0.weight"
    )
    assert (
        members.algoperf_key("module.layer2.0.downsample.bn.running_mean")
        == "layer2.0.downsample.1.running_mean"
    )
    assert members.algoperf_key("_orig_mod.module.fc.weight") is None


def test_mismatched_checkpoints_name_file_and_key(tmp_path, algoperf_ckpt):
    path, _ = algoperf_ckpt
    state = torch.load(path, weights_only=False)["model_params"]
    broken = dict(state)
    broken.pop("_orig_mod.module.layer1.0.conv1.weight")
    torch.save({"model_params": broken}, tmp_path / "missing.pt")
    with pytest.raises(
        members.CheckpointError, match=r"missing.pt: missing backbone key 'layer1.0.conv1.weight'"
    ):
        members.load(tmp_path / "missing.pt")
    torch.save(
        {"model_params": {**state, "_orig_mod.module.layer5.weight": torch.zeros(1)}}, tmp_path / "extra.pt"
    )
    with pytest.raises(members.CheckpointError, match=r"extra.pt: unexpected key 'layer5.weight'"):
        members.load(tmp_path / "extra.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(members.CheckpointError, match="other.pt: neither"):
        members.load(tmp_path / "other.pt")


def members_files(tmp_path, widths=(8, 8)):
    return [
        experiment.save_untrained(tmp_path / f"m{i}_w{w}.pt", Recipe(width=w), i)
        for i, w in enumerate(widths)
    ]


def test_own_members_and_cat_width_mismatch(tmp_path):
    a, b = members_files(tmp_path, (8, 8))
    (tmp_path / "c").mkdir()
    c = members_files(tmp_path / "c", (16,))[0]
    ms = [members.load(p) for p in (a, b)]
    members.check_cat(ms)
    with pytest.raises(
        members.CheckpointError, match=r"m0_w16.pt: SmallCNN with 128 features differs from .*m0_w8.pt"
    ):
        members.check_cat([*ms, members.load(c)])


class Counting(Member):
    """Identity features that count how many images it has seen."""

    def __init__(self, dim):
        super().__init__()
        self.feature_dim, self.seen = dim, 0
        self.fc = nn.Linear(dim, 2)

    def features(self, x):
        self.seen += len(x)
        return x.flatten(1)


def test_feature_cache_hit_miss_and_resume(tmp_path):
    data = torch.randn(100, 4)
    labels = torch.arange(100) % 3

    def batches():
        return ((data[i : i + 10], labels[i : i + 10]) for i in range(0, 100, 10))

    ref = features.extract({"a": Counting(4)}, batches, "toy/train", tmp_path / "ref", chunk_batches=2)["a"]

    def dies_after_5():
        for i, b in enumerate(batches()):
            if i == 5:
                raise KeyboardInterrupt
            yield b

    m = Counting(4)
    with pytest.raises(KeyboardInterrupt):
        features.extract({"a": m}, dies_after_5, "toy/train", tmp_path / "c", chunk_batches=2)
    m2 = Counting(4)
    resumed = features.extract({"a": m2}, batches, "toy/train", tmp_path / "c", chunk_batches=2)["a"]
    assert m2.seen == 60  # two chunks (40 images) were on disk
    assert torch.equal(resumed.features, ref.features) and torch.equal(resumed.labels, labels)
    assert resumed.features.dtype == torch.float16
    m3 = Counting(4)
    hit = features.extract({"a": m3, "b": Counting(4)}, batches, "toy/train", tmp_path / "c")
    assert m3.seen == 0 and torch.equal(hit["a"].features, ref.features)  # hit: no network run for "a"
    assert torch.equal(features.concat([hit["a"], hit["b"]]).features, torch.cat([ref.features] * 2, 1))


def blobs(n, seed, noise_rate=0.0, d=20, k=4):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    centers = torch.eye(k, d) * 10
    x = centers[y] + torch.randn(n, d, generator=g)
    if noise_rate:
        flip = torch.arange(n) < int(noise_rate * n)
        y = torch.where(flip, (y + 1) % k, y)
    return features.FeatureSet(x.half(), y)


def test_fast_probe_known_accuracy():
    r = probe.fast_probe(blobs(400, 0), blobs(200, 1), blobs(400, 2))
    assert r.test_acc == 1.0 and r.solver.startswith("L-BFGS") and set(r.grid) == set(probe.FAST_WD)
    noisy = probe.fast_probe(blobs(400, 0), blobs(200, 1), blobs(400, 2, noise_rate=0.25))
    assert noisy.test_acc == pytest.approx(0.75, abs=0.005)


def test_fast_probe_switches_to_minibatch_when_features_are_large(caplog):
    with caplog.at_level(logging.WARNING):
        r = probe.fast_probe(
            blobs(400, 0),
            blobs(200, 1),
            blobs(400, 2),
            grid=[1e-3],
            max_full_batch_bytes=1000,
            epochs=30,
            minibatch=64,
        )
    assert "switching from full-batch L-BFGS to minibatch Adam" in caplog.text
    assert r.solver == "Adam (minibatch)" and r.test_acc > 0.95


def test_reference_probe_on_a_separable_problem():
    train, val, test = blobs(256, 0), blobs(128, 1), blobs(256, 2)
    member = Counting(20)

    def batches(epoch):
        return [(train.features[i : i + 64].float(), train.labels[i : i + 64]) for i in range(0, 256, 64)]

    r = probe.reference_probe(
        [member], batches, val, test, grid=[1e-4, 1e-3], epochs=6, milestones=(3, 5), augmented=True
    )
    assert r.test_acc == 1.0 and r.best_test_epoch_acc == 1.0
    assert member.seen == 2 * 6 * 256  # features recomputed every epoch, for each weight decay


def test_subsample_per_class():
    fs = features.subsample_per_class(blobs(400, 0), 10)
    assert torch.bincount(fs.labels).tolist() == [10] * 4


def test_real_dataset_path_on_generated_cifar(tmp_path):
    """The paper-scale path: members -> cached features of a CIFAR folder -> fast probe."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_data import write_cifar

    write_cifar(tmp_path, "cifar10", n_train=200, n_test=50)
    a, b = members_files(tmp_path)
    feats = features.folder_features(
        [a, b], "cifar10", tmp_path, image_size=32, cache_dir=tmp_path / "cache", workers=0
    )
    sets = {s: features.concat([feats[s][str(a)], feats[s][str(b)]]) for s in ("train", "val", "test")}
    assert sets["train"].features.shape == (190, 128) and len(sets["test"].labels) == 50
    r = probe.fast_probe(sets["train"], sets["val"], sets["test"])
    assert 0.0 <= r.test_acc <= 1.0 and r.weight_decay in probe.FAST_WD


def test_the_device_reaches_extraction_probing_and_direct_training(tmp_path, monkeypatch):
    """Notebook 04 passes one device; every extraction, probe and evaluation must run there (a GPU at
    paper scale), never silently on the CPU. `cpu:0` stands for it here: distinct from the default."""
    from richreps import pretrain

    device = torch.device("cpu", 0)
    seen: dict[str, set] = {"extract": set(), "probe": set(), "evaluate": set()}

    def spy(name, fn, position):
        def wrapped(*args, **kwargs):
            seen[name].add(str(kwargs["device"] if "device" in kwargs else args[position]))
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(features, "extract", spy("extract", features.extract, 4))
    monkeypatch.setattr(experiment, "fast_probe", spy("probe", experiment.fast_probe, 3))
    monkeypatch.setattr(pretrain, "evaluate", spy("evaluate", pretrain.evaluate, 2))
    a, b = members_files(tmp_path)
    reps = {0: [experiment.Representation("CAT2", 2, 1, (str(a), str(b)))]}
    sizes = {"train": 60, "val": 30, "test": 30}
    recipe = Recipe(width=8, global_batch=16, bn_batches=1, val_size=30)
    experiment.probe_cues(reps, recipe, ["color"], sizes, [0.01], [], tmp_path / "cache", device)
    experiment.direct_training(recipe, ["color"], 2, 64, sizes, 1, tmp_path / "direct", 1, device)
    assert seen["extract"] == seen["probe"] == {"cpu:0"} and "cpu:0" in seen["evaluate"]
    training_device = str(pretrain.setup()[2])  # direct training's own loop evaluates where it trains
    assert seen["evaluate"] <= {"cpu:0", training_device}
