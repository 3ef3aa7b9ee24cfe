"""Immunization methods: ours (``condnum``), the paper's baselines and the closed form,
declared once each in one registry (:mod:`condimmune.methods.registry`)."""
