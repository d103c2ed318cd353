"""The explorer wing: where every head attends, for any query pixel, live in a notebook or as a static page.

`trained_runs` finds the runs a profile trained; `page` writes the self-contained explorer page from its web
files (`web/explorer.html`, `.css`, `.js`) and the runs' maps; `cli` is `python -m attnlib.explore IMAGE`;
`image` reads your own image; `live` renders maps in a kernel, `widget` wraps it in ipywidgets; `head_figures`
draws notebook 07's figures. It may import the experiments wing and everything below it, not the report or
the runner.
"""
