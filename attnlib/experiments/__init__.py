"""The experiments wing: a notebook's parameter file turned into a grid of runs, trained and read back.

`schema` reads YAML into typed dataclasses; `settings` holds those dataclasses, one per notebook, with their
checks; `params` loads a profile's files (`python -m attnlib.params FILE` checks them); `grid` resolves a
training notebook's parameters into planned runs with their ids; `runs` trains them (through the training
wing), reads them back and summarises them; `distributed` trains one grid under torchrun. It may import the
wings below (training, evidence, results, the ground), never the report, explorer or runner.
"""
