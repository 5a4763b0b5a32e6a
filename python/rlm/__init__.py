"""rlm: Recursive Language Models on a Rust engine."""
from ._rlm import __version__
