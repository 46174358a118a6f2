"""Which option of a config group a node is, by what it declares (its `_target_`), not by which keys it
happens to have: `qa_generator=file` is the option whose schema targets `pairs_from_file`, whatever knobs a
later change gives the others."""

from __future__ import annotations


def option_of(node, registry: dict[str, type]) -> str | None:
    """The name in `registry` (option name -> schema dataclass) whose schema declares `node`'s `_target_`;
    None for a node with no target (finetune=none) or a target no option declares (a user's own)."""
    target = node.get("_target_") if node is not None else None
    if not target:
        return None
    for name, schema in registry.items():
        if getattr(schema, "_target_", None) == target:
            return name
    return None
