"""Getting data in: `sources` finds clips (folder scans and manifest CSVs with the ESC-50 / US8K /
scenes presets), `audio` probes, hashes and upserts them, `texts` ingests captions and label prompts.
"""
