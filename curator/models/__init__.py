"""Models: `registry` is the `models` table (one record type, `ModelRecord`), `teachers` loads a
registered model and embeds audio and text with it.
"""
