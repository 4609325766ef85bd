"""Robustness evaluation: class-wise counting, PGD-20, CW-l_inf and AutoAttack, the masking check.

`runner` evaluates a run's checkpoint and stores the result in its eval.json
(`srat_engine.runs.evaluations`, which reads it back without torch).
"""
