"""The study's targets and bounds in one torch-free place: cue tasks, out-of-distribution targets, which of
them saturate, class counts, the mixture's name and the seed bound.

`config`, `verdicts`, `aggregate`, `params`, `budget`, `data.cues` and `data.ood` import these names from
here, so none of them is mirrored by hand and the table readers (report.md anywhere) need no torch.
"""

from __future__ import annotations

SEED_MAX = 2**63 - 1  # torch.manual_seed and numpy's generators take seeds up to this (pretrain's --seed)

CUES = ("shape", "color", "texture", "position")  # the four cues of the pretraining mixture
N_VALUES = 10  # values of each cue: the classes of every single-cue task and of every OOD target
# A transfer task on cue images: label = grouping(value of cue), every other cue random.
# name -> (cue, classes, grouping); grouping identity | parity (odd vs even) | row (top vs bottom)
CUE_TASKS = {
    "shape": ("shape", N_VALUES, "identity"),
    "color": ("color", N_VALUES, "identity"),
    "texture": ("texture", N_VALUES, "identity"),
    "position": ("position", N_VALUES, "identity"),
    "shape_parity": ("shape", 2, "parity"),  # odd vs even digit: a label never used in pretraining
    "position_row": ("position", 2, "row"),  # top vs bottom row
}
IID = "mixture (IID)"  # the pretraining task itself, held out: where the paper predicts no gain

# Out-of-distribution targets: test and validation sizes per target; the rest trains the probe (and
# direct training).
HELD_OUT = {
    "digits_uci": {"test": 450, "val": 300},
    "mnist_plain": {"test": 600, "val": 400},
    "mnist_clutter": {"test": 600, "val": 400},
    "uci_plasma": {"test": 450, "val": 300},
}
OOD_TARGETS = tuple(HELD_OUT)
# Read at 94-99 % by untrained networks (results/laptop): listed, labelled saturated, never discriminating.
SATURATED = ("digits_uci", "mnist_plain")
N_CLASSES_MAX = N_VALUES  # the most classes of any cue task or OOD target (a probe split needs one each)
