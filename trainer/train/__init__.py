"""Training: `config` (the options of a run), `loop` (the one training loop), `objective` (the seam
between the loop and what a step computes), `contrastive` and `hybrid` (the two objectives),
`losses` (pure functions of tensors), `optim` (AdamW groups, warm-up + cosine), `checkpoint`
(atomic folders), `resume` (what a resume may continue), `metrics` (metrics.jsonl), `runtime`
(device, DDP, autocast, the starting student).
"""
