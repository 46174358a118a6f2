"""A command-line override Hydra cannot apply, said the way ragtune means it.

Hydra answers `finetune.lr=1e-4` with "To append to your config use +finetune.lr=1e-4", which then fails
with a TypeError (the trainer has no `lr`), and `corpus.path=docs/` without `corpus=directory` with "Key
'path' not in 'PythonDocsCorpus'" and the same advice. `advice(argv)` composes the config as `python -m
runner` would; where that fails on an override, it names the nearest real key (`finetune.learning_rate`) or
the group option that has it (`corpus=directory`). Cheap: Hydra and the schemas only, no torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

KEY_IN_MESSAGE = (r"Could not override '([^']+)'", r"Could not append to config\. An item is already at '([^']+)'")


def _overrides(argv: list[str]) -> list[str] | None:
    """The overrides of a single run (None for a multirun: a sweep's values are Hydra's to parse)."""
    if "-m" in argv or "--multirun" in argv:
        return None
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp"):
            skip = True
        elif not arg.startswith("-") and "=" in arg:
            out.append(arg)
    return out


def _options_with(group: str, key: str) -> list[str]:
    """The options of `group` whose schema has a field `key`."""
    from runner.config import SCHEMAS

    return [o for o, schema in SCHEMAS.get(group, {}).items() if key in {f.name for f in dataclasses.fields(schema)}]


def advice(argv: list[str], conf_dir: str) -> str | None:
    """The message for the first override of `argv` that does not compose, or None (it composes, or it is a
    multirun, or the failure is not about a key)."""
    overrides = _overrides(argv)
    if not overrides:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
        try:
            compose("config", overrides=overrides)
            return None
        except ConfigCompositionException as err:
            text = f"{err} {err.__cause__ or ''}"
        key = next((m.group(1) for pattern in KEY_IN_MESSAGE if (m := re.search(pattern, text))), None)
        bad = next((o for o in overrides if key and o.split("=", 1)[0].lstrip("+~") == key), None)
        if bad is None:
            return None
        try:
            cfg = compose("config", overrides=[o for o in overrides if o is not bad], return_hydra_config=True)
        except ConfigCompositionException:
            return None
        choices = dict(cfg.hydra.runtime.choices)
    parent, _, leaf = key.rpartition(".")
    group = key.split(".", 1)[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    known = [k for k in (node.keys() if OmegaConf.is_dict(node) else []) if not str(k).startswith("_")]
    where = f"{group}={choices[group]}" if choices.get(group) else (parent or "the config")
    message = f"{key} is not a setting of {where}"
    others = [o for o in _options_with(group, leaf) if o != choices.get(group)] if parent == group else []
    close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1, cutoff=0.4)
    if not close:  # an abbreviation difflib misses: lr -> learning_rate
        close = [k for k in map(str, known) if "".join(w[0] for w in k.split("_")) == leaf or k.startswith(leaf)][:1]
    value = bad.split("=", 1)[1]
    if others:
        message += f"; {leaf} belongs to {' and '.join(f'{group}={o}' for o in others)}: add {group}={others[0]} {key}={value}"
    elif close:
        message += f"; did you mean {parent + '.' if parent else ''}{close[0]}={value}?"
    if known:
        message += f" ({where} has {', '.join(map(str, known))})"
    return message + f". (Hydra's advice, +{key}=..., adds a key that nothing reads, and the run fails later.)"
