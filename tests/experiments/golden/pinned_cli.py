"""``condimmune`` as regenerate.py runs it: the CLI with oneDNN switched off.

oneDNN picks its convolution kernels and blocking from the CPU's instruction set and cache
sizes, so the same float32 network trains to different numbers on different machines; with
it off, convolutions go through MKL, whose ``MKL_CBWR=COMPATIBLE`` code path (set by
regenerate.py) rounds the same on every x86-64 CPU. Usage: ``python pinned_cli.py ARGS...``.
"""

import sys

import torch

torch.backends.mkldnn.enabled = False

from condimmune.cli import app  # noqa: E402  (after the switch, before any model is built)

sys.exit(app())
