"""Students: `weights` (safetensors and student.json I/O), `compact` (the CPU-sized student),
`clap_hf` (a Hugging Face ClapModel student), `encoders`, `heads`, `classifier` (scene classifiers),
and `loading` (build or load any kind from a folder).
"""
