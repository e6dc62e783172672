"""Constants defined once: the CLI flags that fill a config dataclass default to that dataclass's field defaults."""

import dataclasses

import eval as evalcli
import train
from tinybert.finetune import FinetuneConfig
from tinybert.pretrain import PretrainConfig


def flag_defaults(parser) -> dict:
    """dest -> default of every option of an argparse parser."""
    return {a.dest: a.default for a in parser._actions if a.option_strings}


def field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_train_flags_default_to_pretrain_config():
    flags, fields = flag_defaults(train.build_parser()), field_defaults(PretrainConfig)
    shared = sorted(flags.keys() & fields.keys())
    # every PretrainConfig field is a train.py flag (train_run builds the config from them)
    assert shared == sorted(fields)
    assert {name: flags[name] for name in shared} == {name: fields[name] for name in shared}
    assert PretrainConfig.seed == 42  # the paper's sampling seed, the documented --seed default


def test_eval_finetuning_flags_default_to_finetune_config():
    flags, fields = flag_defaults(evalcli.build_parser()), field_defaults(FinetuneConfig)
    shared = sorted(flags.keys() & fields.keys())
    assert {"epochs", "lr", "batch_size", "weight_decay", "warmup_steps", "schedule", "max_length",
            "log_every"} <= set(shared)
    assert {name: flags[name] for name in shared} == {name: fields[name] for name in shared}
    assert flags["seeds"] == [FinetuneConfig.seed]  # --seeds (a list) fills FinetuneConfig.seed, one run each
