"""Training: `losses` (pure functions of tensors), `optim` (AdamW groups, warm-up + cosine), `loop`
(the one training loop), `hybrid` (the classification head + hybrid loss plugged into it),
`checkpoint` (atomic folders and exact resume), `runtime` (device, DDP, evaluation hook).
"""
