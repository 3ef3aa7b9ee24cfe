"""The two families' implementations of :class:`~condimmune.experiments.pipeline.Pipeline`."""
