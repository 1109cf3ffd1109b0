"""The review page: `data` loads the rows of a run or set, `page` writes the static page and serves
it, `media` makes audio copies and spectrogram thumbnails; `assets/` is the page's HTML/JS/CSS.
"""
