"""Evaluation: `zero_shot` (prompts, accuracy, confusion, retrieval), `classifier` (scene classifiers
and pseudo-label accuracy), `plots`.
"""
