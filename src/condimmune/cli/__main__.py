"""``python -m condimmune.cli``: the same command as ``condimmune``."""

from condimmune.cli import main

main()
