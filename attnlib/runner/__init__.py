"""The runner wing, at the top: what runs the notebooks, and what the training notebooks call.

`run` is `python -m attnlib.run` (what `make reproduce` calls): it checks every parameter file, then executes
the notebooks through papermill (`execute`), skipping those whose `stamps` say they are unchanged;
`training_notebook` is the one object notebooks 01-05 talk to. It may import every wing.
"""
