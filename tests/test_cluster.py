"""The paper's scale on a cluster, checked on the CPU: per-rank augmentation, workers from the cores a task
can use, SLURM settings from params, a checkpoint before a requeue, loud fallbacks, the GPU settings, and the
GPU check within its budget (issue 20, items 4 to 9)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import gpu_check
from bench.processes import kill_tree, run_capped
from richreps import launch, params, pretrain, runtime
from richreps.config import Recipe
from richreps.data import pipeline
from richreps.data.pipeline import DecodeFallbacks, JpegBytes, collate_bytes, decode_batch
from richreps.data.streams import LoaderStream, make_data

sys.path.insert(0, str(Path(__file__).parent))
from test_data import write_imagenet  # noqa: E402
from test_pretrain import SMALL, args_for, fake_slurm, same_state  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_03 = ROOT / "notebooks" / "03_pretrain_resnet50.ipynb"


# ---------------------------------------------------------------- per-rank augmentation (GPU decode path)


def one_image_dataset(tmp_path: Path, n: int = 8) -> JpegBytes:
    """n copies of the same JPEG: whatever differs between two ranks' batches is their augmentation."""
    path = tmp_path / "same.JPEG"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
    return JpegBytes([(str(path), 0)] * n)


def gpu_path_stream(dataset, rank: int) -> LoaderStream:
    augment = pipeline.BatchAugment(size=16, device="cpu")
    return LoaderStream(
        dataset, 2, seed=0, rank=rank, world=2, workers=0, augment=augment, collate_fn=collate_bytes
    )


def test_two_ranks_draw_different_crops_for_the_same_step_and_a_resume_draws_the_same(tmp_path):
    data = one_image_dataset(tmp_path)
    x0, _ = gpu_path_stream(data, rank=0).next()
    x1, _ = gpu_path_stream(data, rank=1).next()
    assert x0.shape == (2, 3, 16, 16) and not torch.equal(x0, x1)  # same images, same step: other crops
    stream = gpu_path_stream(data, rank=1)
    for _ in range(3):  # crosses an epoch: 4 images per rank, 2 per batch
        stream.next()
    state = stream.state_dict()
    ahead = [stream.next()[0] for _ in range(3)]
    resumed = gpu_path_stream(data, rank=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, [resumed.next()[0] for _ in range(3)]))


# ---------------------------------------------------------------- workers from the cores a task can use


def cores(monkeypatch, usable: int, node: int, local_ranks: int, slurm_cpus_per_task: int | None = None):
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(usable)), raising=False)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: node)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_ranks))
    if slurm_cpus_per_task is None:
        monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    else:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(slurm_cpus_per_task))


def test_workers_come_from_the_tasks_cores_and_are_divided_only_when_they_are_the_whole_node(monkeypatch):
    cores(monkeypatch, usable=10, node=80, local_ranks=8, slurm_cpus_per_task=10)  # SLURM per-task binding
    assert pipeline.default_workers() == 9  # its own 10 cores, not 10 // 8 - 1 = 0
    cores(monkeypatch, usable=64, node=64, local_ranks=8)  # torchrun on a whole node
    assert pipeline.default_workers() == 64 // 8 - 1
    cores(monkeypatch, usable=80, node=128, local_ranks=8, slurm_cpus_per_task=10)  # SLURM without binding
    assert pipeline.default_workers() == 80 // 8 - 1
    cores(monkeypatch, usable=16, node=64, local_ranks=8)  # a container's cpuset on a larger host
    assert pipeline.default_workers() == 16 // 8 - 1  # shared by its 8 ranks, not 15 each on 16 cores


def test_calibration_and_evaluation_loaders_get_workers_and_the_same_batches(tmp_path, monkeypatch):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=8)
    recipe = Recipe(
        data="imagenet", data_root=str(root), image_size=24, global_batch=4, val_fraction=0.1, bn_batches=2
    )
    monkeypatch.setattr(pipeline, "default_workers", lambda local_processes=None: 2)
    _, calib, val, _ = make_data(recipe, 0, 0, 1, torch.device("cpu"), micro=4, workers=None)
    assert calib.workers == 2 and val.num_workers == 2  # None: from the cores, as for training
    _, alone, _, _ = make_data(recipe, 0, 0, 1, torch.device("cpu"), micro=4, workers=0)
    assert all(torch.equal(a, b) for a, b in zip(calib, alone, strict=True))  # seeded per image


def test_a_start_lists_the_folder_once_and_each_rank_decodes_only_its_share_under_skip(tmp_path, monkeypatch):
    import richreps.data as data
    from richreps.data import folders

    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=8)
    files = sorted((root / "train").rglob("*.JPEG"))
    broken = files[0].with_name("broken.JPEG")
    broken.write_bytes(files[0].read_bytes()[:200])
    listed, decoded = [], []
    index, load = data.imagenet_index, folders.load_rgb
    monkeypatch.setattr(data, "imagenet_index", lambda r: listed.append(r) or index(r))
    monkeypatch.setattr(folders, "load_rgb", lambda path: decoded.append(path) or load(path))
    # rank 0 of 2: the other rank reports the broken file too, and what either finds is left out by both
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(
        torch.distributed,
        "all_gather_object",
        lambda out, bad: out.__setitem__(slice(None), [bad, [str(broken)]]),
    )
    recipe = Recipe(
        data="imagenet",
        data_root=str(root),
        image_size=24,
        global_batch=4,
        val_fraction=0.1,
        corrupt_policy="skip",
    )
    stream, _, val, _ = make_data(recipe, 0, 0, 2, torch.device("cpu"), micro=2, workers=0)
    assert len(listed) == 1  # one listing for both splits
    assert len(decoded) == 13  # 25 files, 2 ranks: this one decodes its 13, not all 25
    kept = [p for p, _ in stream.dataset.base.samples + val.dataset.samples]
    assert str(broken) not in kept and len(kept) == 24


# ---------------------------------------------------------------- loud fallbacks of the GPU decode path


def encoded_files(root: Path, n: int) -> tuple[list[torch.Tensor], list[str]]:
    paths = [str(p) for p in sorted((root / "train").rglob("*.JPEG"))[:n]]
    return [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths], paths


def test_pil_fallback_is_counted_per_epoch_and_said_with_its_reason(tmp_path, monkeypatch, capsys):
    root = write_imagenet(tmp_path / "imagenet", classes=2, per_class=3)
    encoded, paths = encoded_files(root, 3)

    def nvjpeg_refuses(data, **kw):
        raise RuntimeError("Not a JPEG file: starts with 0x89 0x50")

    monkeypatch.setattr(pipeline, "decode_jpeg", nvjpeg_refuses)
    counts = DecodeFallbacks()
    images = decode_batch(encoded, paths, torch.device("cpu"), counts)
    assert len(images) == 3 and images[0].dtype == torch.uint8  # PIL decoded them all
    said = capsys.readouterr().err
    assert (
        "batched decode failed" in said
        and f"{paths[0]}: decoded by PIL" in said
        and "Not a JPEG file" in said
    )
    epoch = counts.end_epoch(0)
    assert epoch == {
        "batches_one_by_one": 1,
        "pil_images": 3,
        "pil_reasons": {"RuntimeError: Not a JPEG file: starts with 0x89 0x50": 3},
    }
    assert "epoch 0: 3 images decoded by PIL" in capsys.readouterr().err
    assert counts.end_epoch(1)["pil_images"] == 0 and counts.history[0]["pil_images"] == 3  # per epoch


def test_the_training_stream_closes_each_epochs_fallback_count(tmp_path, monkeypatch):
    root = write_imagenet(tmp_path / "imagenet", classes=3, per_class=8)
    monkeypatch.setattr(
        pipeline, "decode_jpeg", lambda data, **kw: (_ for _ in ()).throw(RuntimeError("odd file"))
    )
    recipe = Recipe(data="imagenet", data_root=str(root), image_size=24, global_batch=4, val_fraction=0.1)
    stream = make_data(recipe, 0, 0, 1, torch.device("cpu"), micro=4, workers=0, decode="gpu")[0]
    for _ in range(6):  # 21 training images: 5 batches an epoch, the 6th starts epoch 1
        stream.next()
    assert stream.augment.fallbacks.history[0]["pil_images"] == 20


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("nvjpeg: out of memory"),
    ],
)
def test_out_of_memory_on_the_device_decode_is_raised_not_taken_for_an_odd_file(tmp_path, monkeypatch, error):
    root = write_imagenet(tmp_path / "imagenet", classes=2, per_class=2)
    encoded, paths = encoded_files(root, 2)

    def out_of_memory(data, **kw):
        raise error

    monkeypatch.setattr(pipeline, "decode_jpeg", out_of_memory)
    counts = DecodeFallbacks()
    with pytest.raises(type(error), match="out of memory"):
        decode_batch(encoded, paths, torch.device("cpu"), counts)
    assert counts.end_epoch(0)["pil_images"] == 0


# ---------------------------------------------------------------- the device a run chose, said; a missing GPU an error


def single_process(monkeypatch, cuda: bool):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)


def test_setup_says_in_one_line_which_backend_and_device_it_chose(monkeypatch, capsys):
    single_process(monkeypatch, cuda=False)
    assert pretrain.setup("auto") == (0, 1, torch.device("cpu"))
    said = capsys.readouterr().err.strip()
    assert (
        said
        == "[pretrain] 1 process (no torchrun), device cpu (no CUDA device visible; --device cuda makes this an error)"
    )


def test_device_cuda_makes_a_missing_gpu_or_a_driver_too_old_an_error(tmp_path, monkeypatch):
    single_process(monkeypatch, cuda=False)
    with pytest.raises(SystemExit, match=r"--device cuda, but torch.cuda.is_available\(\) is False"):
        pretrain.train(args_for(tmp_path / "run", 2, "--device", "cuda"))
    assert not (tmp_path / "run").exists()  # refused before anything is written
    node = tmp_path / "nvidia0"
    node.touch()
    monkeypatch.setattr(runtime, "GPU_NODE", node)  # a GPU is there, torch cannot use it: an old driver
    with pytest.raises(SystemExit, match="a GPU is present but unusable: a driver older than"):
        pretrain.setup("cuda")


def test_device_is_a_run_option_not_part_of_the_recipe(tmp_path):
    assert "device" not in Recipe.__dataclass_fields__
    plain, on_cpu = args_for(tmp_path, 2), args_for(tmp_path, 2, "--device", "cpu")
    assert Recipe.from_namespace(plain) == Recipe.from_namespace(on_cpu) and on_cpu.device == "cpu"


def test_cuda_turns_on_cudnn_benchmark_and_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    kept = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    )
    try:
        settings = runtime.gpu_settings(torch.device("cuda", 0))
        assert settings["cudnn_benchmark"] and settings["tf32"] and settings["gpu"] == "NVIDIA H200"
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert (
            runtime.gpu_settings(torch.device("cpu"))["cudnn_benchmark"] is False
        )  # the CPU keeps its kernels
    finally:
        torch.backends.cudnn.benchmark = kept[0]
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = kept[1:]


def test_a_run_records_its_device_and_kernel_settings(tmp_path, monkeypatch):
    single_process(monkeypatch, cuda=False)
    pretrain.train(args_for(tmp_path, 2))
    settings = json.loads((tmp_path / "metrics" / "settings_seed0.json").read_text())
    assert settings["device"] == "cpu" and settings["cudnn_benchmark"] is False and settings["tf32"] is False
    assert settings["world"] == 1 and settings["decode"] == "cues"


# ---------------------------------------------------------------- SLURM settings from params


def test_slurm_settings_from_params_reach_the_executor_and_the_batch_script(tmp_path, monkeypatch):
    from richreps import budget

    bins = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bins}:{os.environ['PATH']}")
    settings = launch.SlurmSettings("gpu-long", "proj42", "high", 1440, 12, 80)
    executor = launch.slurm_executor(tmp_path / "logs", nodes=2, gpus_per_node=8, settings=settings)
    params = executor._executor.parameters
    assert (params["partition"], params["account"], params["qos"], params["time"]) == (
        "gpu-long",
        "proj42",
        "high",
        1440,
    )
    assert (params["cpus_per_task"], params["mem"], params["srun_args"]) == (
        12,
        "640GB",
        ["--cpus-per-task", "12"],
    )

    (tmp_path / "imagenet").mkdir()
    recipe = Recipe(data="imagenet", data_root=str(tmp_path / "imagenet"), arch="resnet50")
    plan = budget.plan(400, 450, [2], "shared-prefix", seeds=[0, 1])
    launch.launch_plans([plan], tmp_path / "run", recipe, [], "slurm", nproc=8, slurm=settings)
    script = sorted(bins.glob("job*.sh"))[0].read_text()
    for line in (
        "--partition=gpu-long",
        "--account=proj42",
        "--qos=high",
        "--time=1440",
        "--cpus-per-task=12",
        "--mem=640GB",
    ):
        assert f"#SBATCH {line}\n" in script
    default = launch.slurm_executor(tmp_path / "logs2", 1, 8)._executor.parameters
    assert "account" not in default and "qos" not in default and default["time"] == 72 * 60  # '': SLURM's own


def test_slurm_keys_are_notebook_03_parameters_with_declared_rules():
    spec = params.declared_parameters(NOTEBOOK_03)
    for key in (
        "slurm_partition",
        "slurm_account",
        "slurm_qos",
        "slurm_time_min",
        "cpus_per_gpu",
        "mem_gb_per_gpu",
    ):
        assert key in spec
    assert all(
        params.rules_of(spec[k]) == ["min 1"] for k in ("slurm_time_min", "cpus_per_gpu", "mem_gb_per_gpu")
    )
    assert (
        params.check_rules("slurm_time_min", 0, params.rules_of(spec["slurm_time_min"]))
        == "must be >= 1, got 0"
    )
    assert params.rules_of(spec["device"]) == ["in: auto, cuda, cpu"]
    with pytest.raises(ValueError, match="^slurm_account must be a name without spaces"):
        launch.SlurmSettings(slurm_account="my project")
    with pytest.raises(ValueError, match="^slurm_time_min must be an integer >= 1, got 0"):
        launch.SlurmSettings(slurm_time_min=0)


# ---------------------------------------------------------------- a checkpoint before the requeue


def running_job(tmp_path: Path, steps: int):
    """A PretrainJob and the trainer it runs, `steps` steps in, on the CPU (what the handler sees)."""
    argv = ["--out", str(tmp_path), "--steps", "6", *SMALL]
    t = pretrain.build(pretrain.parse_args(argv), rank=0, world=1, device=torch.device("cpu"))
    pretrain.wrap(t, compile=False)
    for _ in range(steps):
        pretrain.train_step(t)
    return launch.PretrainJob(argv), t


def payload(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_preemption_saves_a_checkpoint_before_the_requeue_even_mid_step(tmp_path, capsys):
    job, t = running_job(tmp_path, steps=3)
    requeued = job.checkpoint()
    assert requeued.function.argv == job.argv  # the same command, which resumes with --resume auto
    saved = tmp_path / "ckpt" / "seed0" / "step000000003.pt"
    between = payload(saved)
    assert f"saved {saved}; requeueing" in capsys.readouterr().err

    # preempted inside step 4, after a forward moved the BatchNorm statistics and the stream moved on
    def preempted(module, inputs, output):
        handle.remove()
        job.checkpoint()

    handle = t.raw.register_forward_hook(preempted)
    pretrain.train_step(t)
    mid = payload(saved)
    assert (
        mid["step"] == 3 and same_state(mid["model"], between["model"]) and mid["stream"] == between["stream"]
    )
    assert torch.equal(mid["rng"][0]["cpu"], between["rng"][0]["cpu"])
    assert not same_state(t.raw.state_dict(), between["model"])  # the live run had moved on

    # and resuming from it ends bitwise where an uninterrupted run ends
    runtime.register(None)
    pretrain.train(args_for(tmp_path, 6))
    pretrain.train(args_for(tmp_path / "straight", 6))
    resumed, straight = (
        torch.load(p / "final" / "seed0.pt", weights_only=True) for p in (tmp_path, tmp_path / "straight")
    )
    assert same_state(resumed["model"], straight["model"])


def test_the_preemption_handler_waits_for_the_optimizer_update_to_finish(tmp_path):
    _, t = running_job(tmp_path, steps=1)
    seen = []
    previous = signal.signal(
        signal.SIGUSR2, lambda signum, frame: seen.append((t.in_step, runtime.completed_steps(t)))
    )
    update = t.opt.step

    def preempted_during_the_update(*args, **kw):
        os.kill(os.getpid(), signal.SIGUSR2)
        total = sum(range(10_000))  # bytecodes at which Python would run a handler that is not deferred
        return update(*args, **kw) if total else None

    t.opt.step = preempted_during_the_update
    try:
        pretrain.train_step(t)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(False, 2)]  # it ran once, after step 2 was complete


def test_a_preemption_with_no_run_going_still_requeues(tmp_path, capsys):
    runtime.register(None)
    job = launch.PretrainJob(["--out", str(tmp_path), "--steps", "2", *SMALL])
    assert job.checkpoint().function.argv == job.argv
    assert "no completed step to save; requeueing" in capsys.readouterr().err


# ---------------------------------------------------------------- the GPU check within its budget


def test_gpu_check_caps_sum_to_at_most_eight_minutes():
    caps = gpu_check.caps(gpu_check.BUDGET_S)
    assert set(caps) == set(gpu_check.PARTS) and sum(caps.values()) <= 8 * 60 and min(caps.values()) > 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


TREE = """
import subprocess, sys
same = subprocess.Popen(["sleep", "600"])
own = subprocess.Popen(["sleep", "600"], start_new_session=True)  # as a Jupyter kernel starts
open(sys.argv[1], "w").write(f"{same.pid} {own.pid}")
subprocess.run(["sleep", "600"])
"""


def test_a_part_past_its_cap_is_killed_with_its_grandchildren_even_in_their_own_session(tmp_path):
    pids = tmp_path / "pids"
    part = subprocess.Popen([sys.executable, "-c", TREE, str(pids)], start_new_session=True)
    while not pids.exists() or not pids.read_text():  # wait for the tree to exist
        time.sleep(0.05)
    grandchildren = [int(p) for p in pids.read_text().split()]
    assert all(alive(p) for p in grandchildren)
    kill_tree(part)
    for _ in range(200):  # SIGKILL is delivered asynchronously: wait for it to land, do not time it
        if not any(alive(p) for p in grandchildren):
            break
        time.sleep(0.05)
    assert not any(alive(p) for p in grandchildren) and part.returncode is not None
    code, _, tail = run_capped([sys.executable, "-c", "import time; time.sleep(600)"], cap_s=1)
    assert code == 124 and "stopped at its cap of 1 s" in tail


def test_gpu_check_summary_says_which_parts_ran(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--dry-run", "--parts", "decode", "--budget-s", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1 and "error: decode did not finish" in out.stderr
    ran = json.loads((tmp_path / "summary.json").read_text())["ran"]
    assert ran["decode"]["status"] == "stopped at its cap" and ran["probe"] == {"status": "not asked"}
    assert "| decode | stopped at its cap |" in (tmp_path / "summary.md").read_text()
