"""Thresholded cross-modal matching. `params` checks inputs, `engine` is the blocked matrix
arithmetic, `exact` the bounded-memory matcher, `stream` the same over a pool read block by block
from the store, `ann` the vector-index route, `reference` the DuckDB cross join tests hold the
others to, `run` a match run against the store, `sweep` threshold counts.
"""
