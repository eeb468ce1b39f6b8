"""Wall time per step of `richreps.data.prefetch.Prefetcher` against the same stream read inline.

    python -m bench.prefetch_overlap [--data-ms 40] [--step-ms 60] [--steps 50]

A stream whose batch takes `--data-ms` (a sleep: it releases the GIL as decode, file reads and torch
kernels do) feeds a step that takes `--step-ms`. Inline, the wall time per step is their sum; made ahead
by the product's own Prefetcher, it should come close to their max. Both are timed here, in this process.
"""

from __future__ import annotations

import argparse
import time

import torch

from richreps.data.prefetch import Prefetcher


class Sleepy:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, 0

    def next(self):
        time.sleep(self.seconds)
        self.start += 1
        return torch.zeros(1), torch.zeros(1)

    def state_dict(self) -> dict:
        return {"epoch": 0, "start": self.start, "seed": 0}

    def load_state_dict(self, state: dict) -> None:
        self.start = state["start"]


def per_step(stream, step_s: float, steps: int) -> float:
    stream.next()  # the first batch is made before any step can overlap it
    start = time.perf_counter()
    for _ in range(steps):
        stream.next()
        time.sleep(step_s)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-ms", type=float, default=40.0)
    ap.add_argument("--step-ms", type=float, default=60.0)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args(argv)
    d, s = args.data_ms / 1e3, args.step_ms / 1e3
    inline = per_step(Sleepy(d), s, args.steps)
    ahead = Prefetcher(Sleepy(d), 2, "cpu")
    made_ahead = per_step(ahead, s, args.steps)
    ahead.close()
    out = {"data_ms": args.data_ms, "step_ms": args.step_ms, "inline_ms": round(inline * 1e3, 1),
           "prefetch_ms": round(made_ahead * 1e3, 1), "prefetch_over_max": round(made_ahead / max(d, s), 3),
           "prefetch_over_sum": round(made_ahead / (d + s), 3)}  # fmt: skip
    print(f"data {args.data_ms:.0f} ms + step {args.step_ms:.0f} ms: inline {out['inline_ms']} ms/step, "
          f"made ahead {out['prefetch_ms']} ms/step = {out['prefetch_over_max']} x max, "
          f"{out['prefetch_over_sum']} x sum")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
