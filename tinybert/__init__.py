"""tinybert: a from-scratch, pure-PyTorch reimplementation of "Tiny language models" (arXiv 2507.14871).

The data flow is one-way:
text -> tokenizer -> token arrays on disk -> batches -> model -> loss/metrics -> results -> plots.
See README.md ("How it works") for the file that does each step.
"""

__version__ = "0.1.0"
