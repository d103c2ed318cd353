"""attnlib: the library behind the attention-conv reproduction (Cordonnier et al., ICLR 2020).

A house in wings, each a package that imports only the wings below it (docs/design.md, "Module map"):
runner/ on top, then report/ and explorer/ side by side, experiments/, training/, viz/, evidence/, results/. At
the ground, in this folder: the paper's networks and what they are built from (attention, dropout, models/,
conv_as_attention, data, loaders, schema, messages), which import nothing above the ground; and the command-line
names run, explore, params and distributed, which only hand over to their wing.
"""
__version__ = "0.1.0"
