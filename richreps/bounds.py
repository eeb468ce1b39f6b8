"""Upper bounds on what a run can mean: past one, a value is a typo, and it would be found only after compute.

One home, below both readers: `richreps.config` puts them in the recipe's flag rules (`pretrain --steps`,
`--global-batch`, ...), `richreps.params` in the params keys' rules. Each bound carries the reason its error
prints. No imports: every module may use it.
"""

STEPS_MAX = 10**8  # steps of any run
STEPS_WHY = "10^8 steps is 222 times the paper's longest run, CAT1's 450K"
IMAGES_MAX = 10**9  # images in any set or split, and shots
IMAGES_WHY = "10^9 images is 70 times ImageNet-21k"
PIXELS_MAX = 8192  # pixels on a side of any crop
PIXELS_WHY = "8,192 pixels a side is 36 times the paper's 224"
BATCH_MAX = 2**24  # images per optimizer step
BATCH_WHY = "2^24 images per step is 16,384 times the paper's 1,024"
WIDTH_MAX = 2**16  # small_cnn channels
WIDTH_WHY = "2^16 channels is 1,024 times the laptop study's 64"
