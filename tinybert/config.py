"""Model configuration: the ModelConfig dataclass and the paper's named presets.

Where it sits in the flow (tokens -> batches -> model -> loss): this file only *describes* the model that
tinybert/model.py builds. It imports no torch, so the flags of train.py/eval.py, the checkpoint sidecars and
the experiment tables can all use it cheaply.

The presets mirror the checkpoints released with the paper's code (docs/paper-recipe.md#model-sizes):
hidden = heads * 64, intermediate = 4 * hidden, 128 positions, vocab 30522. The vocabulary size and the [PAD] id
are set from the tokenizer by the caller, never assumed here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def parse_conv_kernel(text: str | int | tuple | list) -> tuple[int, int]:
    """Parse a conv kernel spec: "3" -> (3, 3), "16x3" -> (16, 3) (along sequence, along hidden).

    Also accepts an int or a 2-sequence, so JSON lists and CLI strings go through one door.
    """
    if isinstance(text, bool):  # bool is an int; never a kernel
        raise ValueError(f"conv kernel must be like '3' or '16x3', got {text!r}")
    if isinstance(text, int):
        kernel = (text, text)
    elif isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise ValueError(f"conv kernel must have 2 sizes (sequence, hidden), got {text!r}")
        kernel = tuple(text)
    elif isinstance(text, str):
        parts = text.lower().replace(" ", "").split("x")
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ValueError(f"conv kernel must be like '3' or '16x3' (sequence x hidden), got {text!r}")
        kernel = (int(parts[0]), int(parts[-1]))
    else:
        raise ValueError(f"conv kernel must be like '3' or '16x3', got {text!r}")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kernel):
        raise ValueError(f"conv kernel sizes must be positive integers, got {text!r}")
    return kernel


@dataclass
class ModelConfig:
    vocab_size: int = 30522
    layers: int = 1                 # transformer blocks (the conv front end is not counted here)
    heads: int = 8
    head_size: int = 64
    max_position: int = 128
    type_vocab_size: int = 2
    dropout: float = 0.1            # hidden dropout (embeddings, residual branches, classifier)
    attention_dropout: float = 0.1  # dropout on the attention probabilities
    layer_norm_eps: float = 1e-12
    conv_layers: int = 0            # 0 = no conv front end
    conv_kernel: tuple[int, int] = (3, 3)  # (along sequence, along hidden)
    conv_channels: int = 64
    pad_id: int = 0                 # set from the tokenizer, never assumed

    def __post_init__(self):
        # JSON gives lists and flags give strings; keep the kernel a tuple of ints everywhere.
        self.conv_kernel = parse_conv_kernel(self.conv_kernel)
        for name in ("vocab_size", "layers", "heads", "head_size", "max_position", "type_vocab_size",
                     "conv_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.conv_layers < 0:
            raise ValueError(f"ModelConfig.conv_layers must be >= 0, got {self.conv_layers}")

    @property
    def hidden(self) -> int:
        return self.heads * self.head_size

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden

    def to_dict(self) -> dict:
        """JSON-safe dict of every field (the kernel becomes a list)."""
        d = dataclasses.asdict(self)
        d["conv_kernel"] = list(self.conv_kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of to_dict. Strict: unknown or missing fields are an error, so a checkpoint written by a
        different version of the code is noticed instead of silently half-loaded."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted(names - set(d))
        if unknown or missing:
            raise ValueError(f"ModelConfig.from_dict: unknown fields {unknown}, missing fields {missing}")
        return cls(**d)


# name -> overrides of ModelConfig fields. Paper presets follow docs/paper-recipe.md#model-sizes (head_size 64).
MODEL_PRESETS: dict[str, dict] = {
    # the paper's models
    "bert6": dict(layers=6, heads=12),
    "bert1-h24": dict(layers=1, heads=24),
    "bert1-h12-c2k3d64": dict(layers=1, heads=12, conv_layers=2, conv_kernel=(3, 3), conv_channels=64),
    "bert1-h8-c2k3d64": dict(layers=1, heads=8, conv_layers=2, conv_kernel=(3, 3), conv_channels=64),
    "bert1-h12-c3k3d32": dict(layers=1, heads=12, conv_layers=3, conv_kernel=(3, 3), conv_channels=32),
    "bert1-h12-c2k16x3d64": dict(layers=1, heads=12, conv_layers=2, conv_kernel=(16, 3), conv_channels=64),
    "bert1-h8": dict(layers=1, heads=8),    # the authors' README example: --layers 1 --heads 8, no conv
    "bert1-h12": dict(layers=1, heads=12),  # not released; the no-conv reference (docs/paper-recipe.md)
    # small models for CPU runs and tests
    "tiny": dict(layers=1, heads=2, head_size=16),
    "cpu-bert1": dict(layers=1, heads=4, head_size=32),
    "cpu-bert6": dict(layers=6, heads=4, head_size=32),
}


def make_model_config(preset: str | None = None, **overrides) -> ModelConfig:
    """Build a ModelConfig from a preset plus overrides. Overrides that are None are ignored (so argparse
    defaults of None mean "use the preset"); explicit values win over the preset."""
    fields = {}
    if preset is not None:
        if preset not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; known: {', '.join(MODEL_PRESETS)}")
        fields.update(MODEL_PRESETS[preset])
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(k for k in overrides if k not in names)
    if unknown:
        raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(names)}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**fields)
