"""The project's GPU check: every figure the paper's path needs from one GPU, in one resumable command.

    python -m bench.gpu_check [--out outputs/gpu_check] [--budget-s 480] [--dry-run]

Parts, each run in its own process group under its own time cap (`CAPS`, shares of `--budget-s`: 8
minutes in all) and written to <out>/parts/<part>.json as it finishes (a second call skips finished
parts; `--force` reruns them), then gathered into <out>/summary.json and summary.md, every figure with
the card and torch version that produced it, and which parts ran, finished, failed or were stopped at
their cap. A stopped part is killed with everything it started (torchrun workers, papermill and its
kernel, which runs in a session of its own), so nothing keeps the GPU after the check:

  throughput   ResNet-50 images/s, batch 256, bf16 + channels_last, eager and compiled: synthetic
               batch vs the real stream of `richreps.pretrain` for each --decode path (bench.pretrain_throughput)
  decode       PIL vs the decode paths' streams, images/s (bench.data_throughput)
  end_to_end   the paper's path on a generated ImageFolder: torchrun richreps.pretrain --arch resnet50
               (compiled on CUDA), two exports with BN recalibrated, then richreps.probe --dataset imagenet
  probe        the fast probe on the GPU vs on the CPU, same features
  notebooks    notebooks 03 and 04 of params/laptop.yaml (else small.yaml) with one seed set, timed; what
               does not fit in its cap is reported as such

`--dry-run` runs every part at a tiny size on whatever device is present (the tests run it on the CPU);
its figures say nothing about speed. Run it as `make gpu-check` (ARGS=--dry-run for the tiny version).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

from bench.processes import run_capped

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("throughput", "decode", "end_to_end", "probe", "notebooks")
# each part's share of the budget: at the default 480 s, 150 + 45 + 135 + 60 + 90 s
CAPS = {
    "throughput": 150 / 480,
    "decode": 45 / 480,
    "end_to_end": 135 / 480,
    "probe": 60 / 480,
    "notebooks": 90 / 480,
}
BUDGET_S, DRY_BUDGET_S = 480.0, 1500.0  # a dry run on a shared CPU is slower per part than the GPU check


def device_info() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
    }


def sh(cmd: list[str], timeout: float) -> tuple[int, float, str]:
    """(exit code, seconds, last lines of output) of a subprocess; its whole tree is killed past `timeout`."""
    return run_capped(cmd, timeout, cwd=ROOT)


def part_throughput(work: Path, dry: bool, left: float) -> dict:
    from bench import pretrain_throughput

    cuda = torch.cuda.is_available()
    size = ["--arch", "resnet50", "--size", "32" if dry else "224", "--batch", "4" if dry else "256"]
    size += [
        "--n",
        "16" if dry else "2048",
        "--seconds",
        "0.3" if dry else "8",
        "--warmup",
        "1" if dry else "3",
    ]
    out = {}
    for mode in ("eager", "compiled") if cuda else ("eager",):  # inductor on the CPU: minutes, no insight
        argv = [*size, "--workdir", str(work / "jpegs"), *(["--compile"] if mode == "compiled" else [])]
        out[mode] = pretrain_throughput.main(argv)
        write_early(work, "throughput", out)  # the eager figure survives a cap kill during compilation
    return out


def write_early(work: Path, part: str, result: dict) -> None:
    """A part's figures so far, written as each finishes into its record (`run_one_part` overwrites it with
    the whole part at the end): a part killed at its cap keeps what it measured."""
    from richreps.io import write_json

    write_json(work.parent / "parts" / f"{part}.json", {**device_info(), "partial": True, **result})


def part_decode(work: Path, dry: bool, left: float) -> dict:
    from bench import data_throughput

    argv = ["--n", "16" if dry else "512", "--size", "32" if dry else "224", "--batch", "4" if dry else "256"]
    results = data_throughput.main(
        [*argv, "--seconds", "0.3" if dry else "5", "--workdir", str(work / "decode")]
    )
    return {k: round(v, 1) for k, v in results.items()}


def part_end_to_end(work: Path, dry: bool, left: float) -> dict:
    from bench.common import imagenet_like_folder

    root = imagenet_like_folder(work / "e2e_imagenet", 48 if dry else 512, classes=4)
    run = work / "e2e_run"
    cuda = torch.cuda.is_available()
    steps = 4 if dry else 40
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += [
        "-m",
        "richreps.pretrain",
        "--out",
        str(run),
        "--steps",
        str(steps),
        "--export-at",
        str(steps // 2),
    ]
    cmd += ["--data", "imagenet", "--data-root", str(root), "--arch", "resnet50", "--image-size", "64"]
    cmd += [
        "--global-batch",
        "8" if dry else "64",
        "--bn-batches",
        "2",
        "--val-fraction",
        "0.1",
        "--eval-every",
        str(steps // 2),
    ]
    cmd += ["--resume", "none", "--overwrite", *(["--compile"] if cuda else [])]
    code, wall, tail = sh(cmd, left * 0.75)
    result = {"pretrain_exit": code, "pretrain_s": wall, "compiled": cuda, "steps": steps}
    if code != 0:
        return {**result, "error": tail}
    from richreps import members

    files = [str(members.member_path(run, 0, s)) for s in (steps // 2, steps)]
    stats = [members.load(f).state_dict()["net.bn1.running_var"] for f in files]
    result["bn_recalibrated"] = all(float((v - 1).abs().sum()) > 0 for v in stats)  # not left at reset values
    probe = [sys.executable, "-m", "richreps.probe", "--members", *files, "--dataset", "imagenet"]
    probe += ["--root", str(root), "--image-size", "64", "--cache", str(work / "e2e_cache")]
    code, wall, tail = sh(probe, left - wall)
    return {
        **result,
        "probe_exit": code,
        "probe_s": wall,
        "probe_output": tail.splitlines()[-1] if tail else "",
    }


def part_probe(work: Path, dry: bool, left: float) -> dict:
    from richreps.features import FeatureSet
    from richreps.probe import fast_probe

    n, d, k = (300, 32, 5) if dry else (20_000, 4096, 100)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(k, d, generator=g)

    def split(m):
        y = torch.randint(k, (m,), generator=g)
        return FeatureSet(centres[y] * 0.3 + torch.randn(m, d, generator=g), y)

    tr, va, te = split(n), split(n // 4), split(n // 4)
    out = {"n": n, "features": d, "classes": k}
    for name in ("cuda", "cpu") if torch.cuda.is_available() else ("cpu",):
        start = time.perf_counter()
        r = fast_probe(tr, va, te, device=name)
        if name == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_s"] = round(time.perf_counter() - start, 2)
        out[f"{name}_test_acc"] = round(r.test_acc, 4)
        out[f"{name}_solver"] = r.solver
        out[f"{name}_lbfgs_iterations"] = sum(r.steps.values())
        out[f"{name}_tolerance_met"] = all(r.converged.values())  # every weight decay's fit, not its cap
    if "cuda_s" in out:
        out["speedup_gpu_vs_cpu"] = round(out["cpu_s"] / out["cuda_s"], 1)
    return out


def part_notebooks(work: Path, dry: bool, left: float) -> dict:
    source = ROOT / "params" / ("smoke.yaml" if dry else "laptop.yaml")
    if not source.exists():
        source = ROOT / "params" / "small.yaml"
    params = yaml.safe_load(source.read_text())
    params["seed_sets"] = 1
    if dry:  # tiny: two short runs, one cue task, no direct training
        params.update(baseline_steps=6, total_steps=6, cat_sizes=[2], seeds=[0, 1], train_size=512,
                      val_size=128, global_batch=32, eval_every=0, probe_tasks=["color"],
                      probe_sizes=[200, 100, 100], shots=[], direct_steps=0, nproc=1,
                      sweep_budgets=[], trajectory_steps=[])  # fmt: skip
    path = work / f"{source.stem}_one_set.yaml"
    path.write_text(yaml.safe_dump(params))
    out_dir = work / "notebooks"
    code, wall, tail = sh(
        [sys.executable, "-m", "richreps.run", str(path), "--only", "03", "04", "--outputs", str(out_dir)],
        left,
    )
    result = {"params": f"params/{source.name} with seed_sets: 1", "exit": code, "wall_s": wall}
    manifest = out_dir / path.stem / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text()).get("notebooks", [])
        result["notebooks"] = {
            e["notebook"]: {"status": e["status"], "wall_s": e.get("wall_time_s")} for e in entries
        }
    if code == 124:
        result["note"] = f"did not finish in the part's cap of {left:.0f} s"
    elif code:
        result["error"] = tail
    return result


def headline(parts: dict) -> list[tuple[str, str, str]]:
    """(figure, measured, target) rows for the issue's targets and the timings a reader looks for."""
    rows = []
    for mode, r in parts.get("throughput", {}).items():
        if isinstance(r, dict) and "synthetic_images_per_s" in r:
            target = ">= 6,700" if mode == "compiled" else ""
            rows.append((f"ResNet-50 {r['size']} px batch {r['batch']}, {mode}, synthetic images/s",
                         f"{r['synthetic_images_per_s']:,.0f}", target))  # fmt: skip
            for d in ("cpu", "gpu", "gpu_inline"):
                if f"ratio_{d}" in r:
                    rows.append((f"  real stream --decode {d}: images/s (real / synthetic)",
                                 f"{r[f'real_{d}_images_per_s']:,.0f} ({r[f'ratio_{d}']:.3f})",
                                 ">= 0.95" if d == "gpu" else ""))  # fmt: skip
    for name, v in parts.get("decode", {}).items():
        if isinstance(v, float) and name not in ("seconds",):
            rows.append((f"decode: {name}, images/s", f"{v:,.0f}", ""))
    e2e = parts.get("end_to_end", {})
    if e2e:
        rows.append(("end to end: pretrain (s) / probe (s) / BN recalibrated",
                     f"{e2e.get('pretrain_s')} / {e2e.get('probe_s')} / {e2e.get('bn_recalibrated')}", "exit 0"))  # fmt: skip
    pr = parts.get("probe", {})
    if pr:
        rows.append((f"fast probe {pr['n']} x {pr['features']}, {pr['classes']} classes: GPU s / CPU s",
                     f"{pr.get('cuda_s', '-')} / {pr['cpu_s']}", ""))  # fmt: skip
        for dev in ("cuda", "cpu"):
            if f"{dev}_solver" in pr:
                rows.append((f"  {dev}: solver, L-BFGS iterations, gradient tolerance met at every weight decay",
                             f"{pr[f'{dev}_solver']}, {pr[f'{dev}_lbfgs_iterations']}, {pr[f'{dev}_tolerance_met']}",
                             "True"))  # fmt: skip
    nb = parts.get("notebooks", {})
    for name, e in nb.get("notebooks", {}).items():
        rows.append((f"{nb['params']}: {name}", f"{e['wall_s']} s ({e['status']})", ""))
    return rows


def markdown(summary: dict) -> str:
    info = summary["info"]
    dry = " (dry run: tiny sizes, not a speed figure)" if summary["dry_run"] else ""
    lines = [f"# GPU check: {info['device']}, torch {info['torch']}{dry}", "",
             "| figure | measured | target |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} |" for a, b, c in headline(summary["parts"])]
    lines += ["", f"Parts in this call (budget {summary['budget_s']:.0f} s, each part capped at its share):", "",
              "| part | status | seconds | cap (s) |", "|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {p} | {r['status']} | {r.get('seconds', '')} | {r.get('cap_s', '')} |"
        for p, r in summary["ran"].items()
    ]
    lines += ["", "Every part's full record (each names the card and torch version that produced it):", ""]
    for part in PARTS:
        lines += [f"## {part}", "", "```json", json.dumps(summary["parts"].get(part), indent=1), "```", ""]
    return "\n".join(lines)


def caps(budget_s: float) -> dict[str, float]:
    """Each part's time cap: its share of the budget (8 minutes in all by default)."""
    return {part: round(budget_s * CAPS[part], 1) for part in PARTS}


def run_one_part(part: str, out: Path, dry: bool, cap_s: float) -> int:
    """The child process of one part: run it and write its record (what `--one-part` does)."""
    from richreps.io import write_json

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # a margin under the cap, so that a part whose own commands run long still writes its record
    result = globals()[f"part_{part}"](work, dry, cap_s * 0.9)
    write_json(
        out / "parts" / f"{part}.json",
        {**device_info(), "seconds": round(time.perf_counter() - t0, 1), **result},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=None, help="default: outputs/gpu_check (outputs/gpu_check_dry with --dry-run)"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"seconds for all parts, shared out as each part's cap (default {BUDGET_S:.0f}; {DRY_BUDGET_S:.0f} "
        "with --dry-run, on a CPU)",
    )
    ap.add_argument("--dry-run", action="store_true", help="every part at a tiny size (tests, CPU)")
    ap.add_argument("--force", action="store_true", help="rerun parts that already finished")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--one-part", choices=PARTS, help=argparse.SUPPRESS)  # the child process of one part
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device here; the GPU check needs one (--dry-run runs every part tiny on the CPU)",
            file=sys.stderr,
        )
        return 2
    budget = args.budget_s if args.budget_s is not None else DRY_BUDGET_S if args.dry_run else BUDGET_S
    if not budget > 0:
        ap.error(f"--budget-s must be > 0, got {budget}")
    cap = caps(budget)
    out = Path(args.out or ROOT / "outputs" / ("gpu_check_dry" if args.dry_run else "gpu_check"))
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if args.one_part:
        return run_one_part(args.one_part, out, args.dry_run, cap[args.one_part])
    from richreps.io import write_json, write_text

    info = device_info()
    print(f"GPU check on {info['device']}, torch {info['torch']}{' (dry run)' if args.dry_run else ''}; "
          f"caps (s): {', '.join(f'{p} {cap[p]:g}' for p in args.parts)}")  # fmt: skip
    ran = {p: {"status": "not asked"} for p in PARTS}
    for part in args.parts:
        path = out / "parts" / f"{part}.json"
        if path.exists() and not args.force and not json.loads(path.read_text()).get("partial"):
            print(f"[{part}] done earlier ({path})")
            ran[part] = {"status": "done earlier"}
            continue
        path.unlink(missing_ok=True)  # a partial record (a part stopped at its cap) is measured again
        cmd = [sys.executable, "-m", "bench.gpu_check", "--one-part", part, "--out", str(out),
               "--budget-s", str(budget), *(["--dry-run"] if args.dry_run else [])]  # fmt: skip
        code, wall, tail = run_capped(cmd, cap[part], cwd=ROOT, log=out / "parts" / f"{part}.log")
        status = (
            "finished" if code == 0 and path.exists() else "stopped at its cap" if code == 124 else "failed"
        )
        ran[part] = {"status": status, "seconds": wall, "cap_s": cap[part]}
        if status != "finished":
            ran[part]["output"] = tail
        print(
            f"[{part}] {status}: {wall:.0f} s of its {cap[part]:g} s cap"
            + (f"\n{tail}" if status == "failed" else "")
        )
    parts = {
        p: json.loads((out / "parts" / f"{p}.json").read_text())
        for p in PARTS
        if (out / "parts" / f"{p}.json").exists()
    }
    summary = {"info": info, "dry_run": args.dry_run, "budget_s": budget, "ran": ran, "parts": parts}
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown(summary))
    print(f"wrote {out / 'summary.json'} and summary.md")
    unfinished = [p for p in args.parts if ran[p]["status"] not in ("finished", "done earlier")]
    if unfinished:
        print(
            f"error: {', '.join(unfinished)} did not finish (see summary.md); run again to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
