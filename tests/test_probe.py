"""Members from both checkpoint formats, the feature cache, and both probes on problems with known answers."""

import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet50

from richreps import direct, experiment, featstore, features, members, probe, untrained
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
        untrained.save_untrained(tmp_path / f"m{i}_w{w}.pt", Recipe(width=w), i) for i, w in enumerate(widths)
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
    assert torch.equal(resumed.features.tensor(), ref.features.tensor()) and torch.equal(
        resumed.labels, labels
    )
    assert resumed.features.dtype == torch.float16
    m3 = Counting(4)
    hit = features.extract({"a": m3, "b": Counting(4)}, batches, "toy/train", tmp_path / "c")
    assert m3.seen == 0 and torch.equal(
        hit["a"].features.tensor(), ref.features.tensor()
    )  # hit: no network run
    cat = features.concat([hit["a"], hit["b"]]).features.tensor()
    assert torch.equal(cat, torch.cat([ref.features.tensor()] * 2, 1))


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


def test_fast_probe_streams_the_same_objective_when_features_exceed_the_ram_budget(caplog):
    sets = blobs(400, 0), blobs(200, 1), blobs(400, 2)
    with caplog.at_level(logging.INFO):
        r = probe.fast_probe(*sets, grid=[1e-3], ram_bytes=20_000)  # 400 x 20 float32 are 32 kB: no fit
    assert "do not fit in memory; L-BFGS streamed from the files" in caplog.text
    assert r.solver == probe.STREAMED and r.test_acc > 0.95 and "L-BFGS stops when" in r.stopping
    whole = probe.fast_probe(*sets, grid=[1e-3])
    assert whole.solver == probe.FULL_BATCH and whole.stopping.split(":", 1)[1] == r.stopping.split(":", 1)[1]
    assert r.converged[1e-3] and r.objective[1e-3] == pytest.approx(whole.objective[1e-3], rel=1e-5)


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
    direct.direct_training(recipe, ["color"], 2, 64, sizes, 1, tmp_path / "direct", 1, device)
    assert seen["extract"] == seen["probe"] == {"cpu:0"} and "cpu:0" in seen["evaluate"]
    training_device = str(pretrain.setup()[2])  # direct training's own loop evaluates where it trains
    assert seen["evaluate"] <= {"cpu:0", training_device}


def wide_blobs(n, seed, members=5, d=20, k=4):
    """Per member: its own noisy view of the same n labelled examples (k classes)."""
    base = blobs(n, seed, d=d, k=k)
    g = torch.Generator().manual_seed(100 + seed)
    views = [base.features.tensor().float() + torch.randn(n, d, generator=g) for _ in range(members)]
    return {f"m{i}": features.FeatureSet(v.half(), base.labels) for i, v in enumerate(views)}


def test_every_cat_of_a_task_is_probed_with_the_solver_of_its_largest_cat(monkeypatch):
    """CAT1 alone fits a full-batch solve in this RAM budget and CAT5 does not; probed together, as
    notebook 04 probes them, both get CAT5's solver, so CAT5 - CAT1 is not a difference between solvers."""
    from richreps import featstore

    monkeypatch.setenv(featstore.RAM_ENV, "0.0002")  # 200 kB: 400 x 20 fits, 400 x 100 does not
    feats = {
        "t": {s: wide_blobs(n, i) for i, (s, n) in enumerate([("train", 400), ("val", 200), ("test", 200)])}
    }
    cat1 = experiment.Representation("CAT1 (baseline)", 1, 10, ("m0",))
    cat5 = experiment.Representation("CAT5", 5, 2, tuple(f"m{i}" for i in range(5)))
    alone = probe.fast_probe(*(features.concat([feats["t"][s]["m0"]]) for s in ("train", "val", "test")))
    assert alone.solver == probe.FULL_BATCH
    rows = experiment.probe_rows([cat1, cat5], feats, ["t"], [1e-3], [], 0)
    assert [r["solver"] for r in rows] == [probe.STREAMED, probe.STREAMED]
    assert all(r["test_acc"] > 0.5 for r in rows)  # 4 classes: both learn


@pytest.mark.parametrize("solver", ["L-BFGS (full batch)", "L-BFGS (streamed full batch)"])
def test_a_probe_on_feature_files_equals_the_probe_in_ram(tmp_path, solver):
    """The same CAT3 read block by block from its members' cache files and held in RAM: the same
    numbers to the last bit (the blocks are small here, so many of them are read)."""
    sets = {
        s: wide_blobs(n, i, members=3)
        for i, (s, n) in enumerate([("train", 300), ("val", 100), ("test", 100)])
    }

    class Fixed(Member):
        def __init__(self, x):
            super().__init__()
            self.x, self.feature_dim, self.fc = x, x.shape[1], nn.Linear(x.shape[1], 4)

        def features(self, index):
            return self.x[index].float()

    stored = {}
    for s, by_member in sets.items():
        n = len(by_member["m0"].labels)
        labels = by_member["m0"].labels

        def batches(n=n, labels=labels):
            return ((torch.arange(i, min(i + 32, n)), labels[i : i + 32]) for i in range(0, n, 32))

        models = {k: Fixed(fs.features.tensor()) for k, fs in by_member.items()}
        got = features.extract(models, batches, f"fixed/{s}", tmp_path, chunk_batches=3)
        assert all(isinstance(fs.features, featstore.StoredRows) for fs in got.values())
        stored[s] = features.concat([got[k] for k in sorted(got)])
    in_ram = {s: features.FeatureSet(stored[s].features.tensor().clone(), stored[s].labels) for s in sets}
    assert isinstance(in_ram["train"].features, featstore.InMemory)
    kw = {"grid": [1e-2, 1e-3], "solver": solver, "ram_bytes": 50_000}
    from_files = probe.fast_probe(stored["train"], stored["val"], stored["test"], **kw)
    from_ram = probe.fast_probe(in_ram["train"], in_ram["val"], in_ram["test"], **kw)
    assert featstore.block_rows(60, 50_000) < 300  # several blocks
    assert from_files == from_ram and from_files.solver == solver and from_files.test_acc > 0.9


def test_each_seed_set_probes_its_own_sample_drawn_from_its_index(monkeypatch, tmp_path):
    """Issue 19: the interval over seed sets covers the probe sample; set k draws with seed k."""
    from richreps import experiment
    from richreps.config import Recipe

    calls = []

    def spy(files, tasks, sizes, seed, *a, **kw):
        calls.append((tuple(files), seed))
        return {"seed": seed}

    monkeypatch.setattr(experiment.features, "cue_features", spy)
    monkeypatch.setattr(experiment, "solvers_by_task", lambda *a, **kw: {})
    monkeypatch.setattr(experiment, "probe_rows", lambda reps, feats, *a, **kw: [feats["seed"]])
    rep = lambda k: experiment.Representation("CAT1 (baseline)", 1, 10, (f"set{k}.pt",))  # noqa: E731
    reps = {0: [rep(0)], 1: [rep(1)], 2: [rep(2)]}
    rows = experiment.probe_cues(reps, Recipe(), ["color"], {"train": 10}, [0.0], [], tmp_path)
    assert calls == [(("set0.pt",), 0), (("set1.pt",), 1), (("set2.pt",), 2)]
    assert rows == [0, 1, 2]  # each set's probes read its own features


@pytest.mark.parametrize("task", ["color", "mixture", "mnist_clutter"])
def test_a_probe_sample_differs_across_seed_sets_and_repeats_within_one(task):
    from richreps import features

    def draw(seed):
        return torch.cat(
            [x for x, _ in features.cue_batches(task, 300, "test", seed, weights=[1, 1, 1, 1])()]
        )

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(0), draw(1))


def test_an_lbfgs_fit_stopped_by_its_caps_is_never_reported_converged():
    """torch's L-BFGS stops at max_iter iterations or at 5/4 as many function evaluations, whichever
    comes first; both are caps. Three iterations cannot fit this problem to tolerance."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (300,), generator=g)
    x = torch.randn(300, 40, generator=g) + torch.nn.functional.one_hot(y, 40).float()
    sets = [features.FeatureSet(x.half(), y)] * 3
    r = probe.fast_probe(*sets, grid=[0.01, 0.0], max_iter=3, solver=probe.FULL_BATCH)
    assert r.converged and not any(r.converged.values())
    assert probe.fast_probe(*sets, grid=[0.01], max_iter=500, solver=probe.FULL_BATCH).converged[0.01]


def imagenet_shaped(n: int, seed: int, d: int = 4096, k: int = 1000) -> features.FeatureSet:
    """ImageNet's shape for a probe: k classes, d features, rows stored class-sorted as ImageFolder stores
    them; class centres shared by every split, small against the noise, so the probe is neither at chance
    nor perfect."""
    centres = torch.randn(k, d, generator=torch.Generator().manual_seed(0)) * 0.25
    y = torch.arange(n) % k
    y = y.sort().values  # class-sorted: every class's rows together, in class order
    x = centres[y] + torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return features.FeatureSet(x.half(), y)


def shuffled(fs: features.FeatureSet, seed: int) -> features.FeatureSet:
    order = torch.randperm(len(fs.labels), generator=torch.Generator().manual_seed(seed))
    return features.FeatureSet(fs.features.tensor()[order].clone(), fs.labels[order])


def test_a_probe_at_imagenets_shape_gives_the_same_fit_whatever_the_ram_budget_and_the_row_order():
    """Issue 27: 1,000 classes, 4,096 features, one training row per class, rows class-sorted. Held whole
    (the reference) or streamed from blocks of 1,037 or 518 rows, sorted or shuffled, the fit meets the
    gradient tolerance and reaches the same objective and the same test accuracy, under the same rule.

    At weight decay 0.01, where the optimum is flat: with torch's objective-change tolerance the four paths
    stopped at test accuracies from 0.646 to 0.666, differently on two CPUs (AVX-512, AVX2); only the
    gradient ends a fit now (`probe._lbfgs`)."""
    train, val, test = imagenet_shaped(1000, 1), imagenet_shaped(1000, 2), imagenet_shaped(1000, 3)
    wd = 0.01
    ref = probe.fast_probe(train, val, test, grid=[wd])
    assert ref.solver == probe.FULL_BATCH and ref.converged[wd] and ref.grad_max[wd] <= probe.TOLERANCE_GRAD
    assert 0.05 < ref.test_acc < 0.95  # neither chance (0.001) nor perfect: the comparison can tell
    for ram in (170e6, 85e6):  # blocks of 1,037 and 518 rows: the 1,000 training rows in one and in two
        for rows in (train, shuffled(train, 0)):
            r = probe.fast_probe(rows, val, test, grid=[wd], ram_bytes=ram)
            assert r.solver == probe.STREAMED and r.converged[wd], (ram, r.grad_max)
            assert r.grad_max[wd] <= probe.TOLERANCE_GRAD
            assert r.stopping.split(":", 1)[1] == ref.stopping.split(":", 1)[1]
            assert r.objective[wd] == pytest.approx(ref.objective[wd], rel=1e-6), (ram, r.objective)
            assert abs(r.test_acc - ref.test_acc) <= 0.002, (ram, r.test_acc, ref.test_acc)


def test_the_chunked_float16_solver_reaches_the_full_batch_optimum(monkeypatch):
    """Issue 27: what a GPU runs when the float32 matrix does not fit but the float16 rows do (ImageNet's
    CAT5 on an H100): the same objective, summed chunk by chunk from the float16 rows held on the device.
    Run here on the CPU in chunks of 100 rows, class-sorted, against the matrix held whole."""
    monkeypatch.setattr(probe, "CHUNK_BYTES", 4 * 100 * (4096 + 3 * 1000))  # 100 rows per chunk
    train, val, test = imagenet_shaped(1000, 1), imagenet_shaped(1000, 2), imagenet_shaped(1000, 3)
    wd = 0.01
    ref = probe.fast_probe(train, val, test, grid=[wd], solver=probe.FULL_BATCH)
    r = probe.fast_probe(train, val, test, grid=[wd], solver=probe.CHUNKED)
    assert r.solver == probe.CHUNKED and r.converged[wd] and r.grad_max[wd] <= probe.TOLERANCE_GRAD
    assert r.stopping.split(":", 1)[1] == ref.stopping.split(":", 1)[1]
    assert r.objective[wd] == pytest.approx(ref.objective[wd], rel=1e-6)
    assert abs(r.test_acc - ref.test_acc) <= 0.002


def test_an_h100_and_an_h200_fit_imagenets_cat5_with_the_same_solver(monkeypatch):
    """ImageNet's CAT5 (1.28M x 10,240, 1,000 classes): float32 held whole (68 GB) would fit an H200's
    free memory and not an H100's; its float16 rows (26 GB) fit both, so both run the chunked solver."""
    n, d, k = round(1_281_167 * 0.98), 10_240, 1000
    assert probe.full_batch_bytes(n, d, k) > 0.8 * 78e9 > probe.chunked_bytes(n, d, k)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (78e9, 80e9))  # an H100
    assert probe.choose_solver(n, d, k, "cuda") == probe.CHUNKED
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (139e9, 141e9))  # an H200
    assert probe.choose_solver(n, d, k, "cuda") == probe.CHUNKED
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20e9, 24e9))
    assert probe.choose_solver(n, d, k, "cuda") == probe.STREAMED


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback is what is tested")
def test_probing_without_a_gpu_is_said_under_auto_and_refused_under_cuda(capsys):
    assert probe.default_device("auto").type == "cpu"
    assert "[probe] probing on the CPU:" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--device cuda, but torch.cuda.is_available.. is False"):
        probe.default_device("cuda")
    assert probe.default_device("cpu").type == "cpu" and capsys.readouterr().err == ""
