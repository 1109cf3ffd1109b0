"""Embedding the store with a teacher: which ids are pending (and which shard owns them), the work
of one batch, the buffered writer, and importing vectors made elsewhere.
"""
