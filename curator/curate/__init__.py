"""Improvement sets. `strategies` builds the paper's DU / DS / ADS sets, `pairs` the captioned pairs,
`pseudo` pseudo-labels, `labelled` the scene workflow's labelled and union sets; `rows` is how every
builder selects inputs and assembles rows, `guard` the contamination guard, `decisions` review
decisions, `catalog` the versioned set catalog (write, list, show, diff, tag, export).
"""
