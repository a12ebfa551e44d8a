"""charlm: train character-level GRU language models on your own text, then sample and score with them.

This module stays free of heavy imports so that ``charlm --help`` starts at once; import the stages
(``charlm.model``, ``charlm.train``, ...) directly.
"""

__version__ = "0.1.0"
