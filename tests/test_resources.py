"""The resource plan: GPU-hours, RAM and disk of a params file's whole plan, before any of it is spent."""

import sys
from pathlib import Path

import pytest
import yaml

from richreps import featstore, params, resources, run

sys.path.insert(0, str(Path(__file__).parent))
from test_cli import ROOT, readme_block, sh  # noqa: E402


def test_the_plan_of_params_paper_equals_the_hand_computed_one(tmp_path):
    values = yaml.safe_load((ROOT / "params" / "paper.yaml").read_text())
    res = resources.resources(values, tmp_path, sizes=resources.DATASETS)  # the official sizes, no data
    # shared-prefix runs: seed 2 to 450K (exports 80K, 100K, 200K, 450K), 550 to 200K, 23 and 477 to 100K,
    # 8529 to 80K: 930K steps of 1,024 images, 12 trained members, plus 5 untrained controls
    assert res.gpu_hours_training == pytest.approx(930_000 * 1024 / 6700 / 3600)  # 39.48
    # a ResNet-50 member: 25,557,032 float32 parameters, 2 x 26,560 BatchNorm statistics, 53 int64 counters
    member = 25_557_032 * 4 + 2 * 26_560 * 4 + 53 * 8
    assert res.disk["members"] == 17 * member == 1_741_497_544
    # 5 runs x (the last two checkpoints + the final state), each the model and AdamW-SF's z and v
    assert res.disk["checkpoints"] == 5 * 3 * (member + 2 * 25_557_032 * 4) == 4_603_459_320
    # every image of ImageNet (1,281,167 + 50,000), iNat18 (437,513 + 24,426) and both CIFARs (60,000 each),
    # 2,048 float16 features and an int64 label per member
    images = 1_281_167 + 50_000 + 437_513 + 24_426 + 2 * 60_000
    assert res.disk["feature cache"] == images * 17 * (2048 * 2 + 8) == 133_473_579_408
    assert res.gpu_hours_extraction == pytest.approx(images * 17 / 16_443 / 3600)
    # probing: 1 seed set x 8 weight decays x 125 evaluations x 4 n d k, n the probe's training split;
    # widths: CAT1, CAT2, CAT4, CAT5 (1 + 2 + 4 + 5 members), untrained CAT5 and CAT1: 18 x 2,048
    nk = sum(round(s["train"] * 0.98) * s["classes"] for s in resources.DATASETS.values())
    assert res.gpu_hours_probing == pytest.approx(8 * 125 * 4 * nk * 18 * 2048 / 200e12 / 3600)
    assert res.devices == 8
    assert res.ram_probing == featstore.ram_budget() and res.ram_extraction == res.ram_probing // 2
    # ImageNet's CAT5 for a full-batch solve: 1,255,544 train images x 10,240 float32 + logits for 1,000 classes
    assert res.full_batch_bytes["imagenet"] > 1_255_544 * 10_240 * 4
    text = resources.format_resources(res)
    assert "disk, feature cache: 133.5 GB" in text and f"{tmp_path}/feature_cache" in text
    assert "GPU-hours, probing the real datasets: at most" in text and "on the run's 8 GPU(s)" in text


def test_the_extraction_rate_is_stated_for_the_batch_and_layout_extraction_runs_at():
    from richreps import features

    assert features.extract_batch("cuda") == features.EXTRACT_BATCH == 1024
    assert f"batch {features.EXTRACT_BATCH}" in resources.INFERENCE_SETTING
    assert "channels_last" in resources.INFERENCE_SETTING and features.extract_batch("cpu") is None


def test_the_plan_counts_wide1_the_ablation_and_the_maps_pools_each_with_its_own_member_size(tmp_path):
    values = {}
    for nb in sorted((ROOT / "notebooks").glob("0[34]_*.ipynb")):
        values.update(params.defaults(params.declared_parameters(nb)))
    values.update(yaml.safe_load((ROOT / "params" / "laptop_map.yaml").read_text()))
    res = resources.resources(values, tmp_path)
    # per seed set: the main plan's 5 runs (seed 0 to 1,600 steps, seeds 1-4 to 288), WIDE1's and JOINT5's, the
    # same again for each of the 2 pools, and the ablation's 5 and WIDE1's (to 800 and 144): 3 x 7 + 6 runs, 3 seed sets
    assert "81 training runs" in res.notes[0]
    small, wide = (resources.model_bytes("small_cnn", 10, 16, m) for m in (1, 5))
    joint = resources.model_bytes("small_cnn", 10, 16, 1, towers=5)
    assert wide[2] == 5 * small[2] == joint[2] and wide[0] > small[0]  # CAT5's feature width, more weights
    per_set = [(5, small), (1, wide), (1, joint)]  # in the main run and each pool; the ablation has no JOINT5
    assert res.disk["checkpoints"] == 3 * resources.CHECKPOINTS_KEPT * (
        3 * sum(k * (b[0] + 2 * b[1]) for k, b in per_set)
        + sum(k * (b[0] + 2 * b[1]) for k, b in per_set[:2])
    )
    alone = resources.resources({**values, "ablate_label_smoothing": [], "map_pools": []}, tmp_path)
    assert "21 training runs" in alone.notes[0]


def test_the_readme_resources_line_runs_as_written():
    (line,) = [ln for ln in readme_block("## Running") if "richreps.resources" in ln]
    assert line == ".venv/bin/python -m richreps.resources params/paper.yaml"
    out = sh(line.replace(".venv/bin/python", "python"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GPU-hours, pretraining: 39.5 at 6,700 images/s per GPU" in out.stdout
    assert "disk, total: 139.8 GB" in out.stdout and "free under" in out.stdout


def test_the_runner_refuses_a_plan_its_disk_cannot_hold_naming_output_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resources, "free_bytes", lambda path: 1000)
    with pytest.raises(resources.ResourceError, match=r"^output_dir .*smoke: 0\.0 GB free .* the plan needs"):
        run.run(ROOT / "params" / "smoke.yaml", only=["03"], notebooks=ROOT / "notebooks", outputs=tmp_path)
    assert not (tmp_path / "smoke" / "03_pretrain_resnet50.ipynb").exists()  # refused before notebook 03
