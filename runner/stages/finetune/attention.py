"""`finetune.attention_dropout`: dropout on the attention probabilities while training.

PyTorch's fused attention kernel on a CPU (scaled_dot_product_attention's flash path) runs only without
dropout; with BERT's own 0.1 every layer falls back to the unfused path, which materialises the full
attention matrix. Measured on MiniLM (16 passages, forward and backward, bf16, 2-core Xeon with AMX):
384 tokens 1.5 s without it against 4.2 s with it, 512 tokens 2.0 s against 11.5 s. Training at the
window the passages need then costs what it should. The hidden-state dropout stays as the model has it.

`auto` turns it off on a CPU and keeps the model's own on a GPU, whose fused kernels take dropout. A
number sets it; null keeps the model's own everywhere. The saved model keeps its own config: the setting
applies only while training.
"""

from __future__ import annotations

import contextlib


def resolve(setting, device: str) -> float | None:
    """The attention dropout to train with; None: the model's own."""
    if setting == "auto":
        return 0.0 if device in ("cpu", "mps") else None
    return None if setting is None else float(setting)


def check(setting) -> list[str]:
    """Problems with a `finetune.attention_dropout` setting (the validator's), as sentences."""
    if setting is None or setting == "auto":
        return []
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or not 0 <= setting < 1:
        return [
            f"finetune.attention_dropout={setting!r} is not a dropout rate; give a number in [0, 1), auto (0 on a "
            "CPU, where it lets the fused attention kernel run; the model's own on a GPU) or null (the model's own)"
        ]
    return []


def attention_dropouts(model) -> list:
    """The dropout layers on the attention probabilities: the Dropout children of each self-attention
    module (BertSelfAttention, MPNetSelfAttention, XLMRobertaSelfAttention, ...). (torch is imported here, not
    at the top: the config check imports this module, and must answer before torch loads.)"""
    from torch import nn

    return [
        child
        for module in model.modules()
        if type(module).__name__.endswith("SelfAttention")
        for child in module.children()
        if isinstance(child, nn.Dropout)
    ]


def dropout_record(setting, chosen: float | None, own: float | None) -> dict:
    """results.json `choices.attention_dropout`."""
    if chosen is None:
        reason = "the model's own" + (
            " (finetune.attention_dropout=null)" if setting is None else " on a GPU, whose fused kernels take it"
        )
    elif setting == "auto":
        reason = "0 on a CPU: the fused attention kernel runs only without it"
    else:
        reason = f"finetune.attention_dropout={setting}"
    return {"setting": setting, "chosen": own if chosen is None else chosen, "model_own": own, "reason": reason}


@contextlib.contextmanager
def attention_dropout(model, p: float | None):
    """While inside: the model's attention dropout at `p` (None: left alone); its own on the way out."""
    layers = attention_dropouts(model) if p is not None else []
    own = [layer.p for layer in layers]
    for layer in layers:
        layer.p = p
    try:
        yield own[0] if own else None
    finally:
        for layer, value in zip(layers, own):
            layer.p = value
