"""Evaluation: `evaluate` (`trainer eval` as one call), `zero_shot` (prompts, accuracy, retrieval),
`classifier` (scene classifiers and pseudo-label accuracy), `confusion` (the one confusion matrix),
`plots`.
"""
