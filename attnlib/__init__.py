"""attnlib: the library behind the attention-conv reproduction (Cordonnier et al., ICLR 2020)."""
__version__ = "0.1.0"
