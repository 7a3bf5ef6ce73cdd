"""Deterministic synthetic posts whose entity types and relations depend on the image (see generate.py)."""
from common.synthetic.generate import SynthConfig, generate

__all__ = ["SynthConfig", "generate"]
