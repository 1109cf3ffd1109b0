"""Training data: `audio` decodes, resamples and builds features, `rows` turns a set version into
windowed clips, `batches` the deterministic batch plan, `context` the city / time context captions.
"""
