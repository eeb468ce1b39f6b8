"""Issue 29, item 2: CAT1-ES and WIDE1-ES are the exports along CAT1's and WIDE1's own runs with the best
pretraining validation accuracy, chosen from every eighth of the run, without reading any target's data."""

import json

import pytest
from test_controls import TINY, VALUES

from richreps import earlystop, experiment, launch, planfile, study
from richreps.data import cues, ood

ES = {**VALUES, "baseline_steps": 8, "total_steps": 8, "wide_control": True, "early_stop_controls": True,
      "eval_every": 0, "sweep_budgets": [4], "early_stop_sweep": True}  # fmt: skip


def test_every_eighth_of_the_run_is_a_candidate_and_the_best_validation_export_is_kept():
    assert earlystop.eighths(800) == [100, 200, 300, 400, 500, 600, 700, 800]
    curve = {100: 0.30, 200: 0.41, 300: 0.41, 400: 0.39, 800: 0.35}
    assert earlystop.best_export(curve, [100, 200, 300, 400, 800]) == 200  # a tie: the earlier export
    with pytest.raises(ValueError, match=r"no validation accuracy logged at step\(s\) \[500\]"):
        earlystop.best_export(curve, [400, 500])


def test_early_stops_at_every_budget_without_the_early_stopped_controls_are_refused_naming_the_key():
    with pytest.raises(
        ValueError,
        match=r"^early_stop_sweep: adds the early-stopped controls at every sweep budget; set early_stop_controls too",
    ):
        study.plan_study({**ES, "early_stop_controls": False, "early_stop_sweep": True}, TINY)


def test_the_early_stopped_exports_are_chosen_without_reading_any_target(tmp_path, monkeypatch):
    st = study.plan_study(ES, TINY)
    cat1_run, wide = st.plans[0].runs[0], st.controls[0]
    assert set(earlystop.eighths(8)) <= set(cat1_run.exports) and set(range(1, 9)) <= set(
        wide.plans[0].runs[0].exports
    )
    # validated where an early-stopped control picks (every eighth of 8 and of 4), though eval_every is 0
    assert cat1_run.evals == wide.plans[0].runs[0].evals == list(range(1, 9))
    pre = tmp_path / "pretrain"
    planfile.write(pre, st)
    launch.launch_study(st, pre, ["--ckpt-every", "8", "--eval-every", "0"], "local", nproc=1)
    plan = planfile.read(pre)
    assert plan.early_stop and plan.early_stop_sweep
    chosen = earlystop.picks(plan)

    def no_target(*a, **kw):
        raise AssertionError("a target's data was read")

    for module, name in ((cues, "sample_task"), (cues, "task_splits"), (ood, "splits"), (ood, "images")):
        monkeypatch.setattr(module, name, no_target)
    assert earlystop.picks(plan) == chosen  # no target read, the same picks
    (picks,) = chosen
    curve = earlystop.validation_curve(plan.run_dir, picks["CAT1-ES"][1])
    assert picks["CAT1-ES"][2] == max(range(1, 9), key=lambda s: (curve[s], -s))
    assert picks["SINGLE-ES"] in (picks["CAT1-ES"], picks["WIDE1-ES"])
    assert picks["SINGLE-ES"][3] == max(picks["CAT1-ES"][3], picks["WIDE1-ES"][3])
    (cell,) = earlystop.picks(plan, 4)  # at sweep budget 4: among every eighth of the cell's own runs
    assert cell["CAT1-ES"][2] == max(range(1, 5), key=lambda s: (curve[s], -s)) and cell["WIDE1-ES"][2] <= 4
    # a changed validation log moves the pick: the validation accuracy, nothing else, decides
    log = plan.run_dir / "metrics" / f"seed{picks['CAT1-ES'][1]}.jsonl"
    other = 3 if picks["CAT1-ES"][2] != 3 else 5
    log.write_text(log.read_text() + json.dumps({"step": other, "val_acc": 2.0}) + "\n")
    assert earlystop.picks(plan)[0]["CAT1-ES"][2] == other
    assert earlystop.picks(plan, 4)[0]["CAT1-ES"][2] == (other if other <= 4 else cell["CAT1-ES"][2])
    assert [r.method for r in experiment.sweep_representations(plan)[0][4]] == [
        "CAT1", "CAT2", "WIDE1", "CAT1-ES", "WIDE1-ES", "SINGLE-ES"]  # fmt: skip
    reps = experiment.add_early_stopped({0: []}, plan, tmp_path / "untrained")
    names = [r.method for r in reps[0]]
    assert names == [
        "CAT1-ES",
        "untrained CAT1-ES",
        "WIDE1-ES",
        "untrained WIDE1-ES",
        "SINGLE-ES",
        "untrained SINGLE-ES",
    ]
