"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each YAML option in ``conf/<group>/`` starts from one of these dataclasses (its defaults list names
``/schema/<group>/<option>``), so a misspelled key or a wrong type fails when the config is composed, before
any model is loaded. Range checks that a type cannot express live in ``runner.checks``.

This module must stay cheap to import: ``python -m runner --cfg job`` imports it and nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.infra.models import minilm_path


# --- corpus -------------------------------------------------------------------------------------
@dataclass
class PythonDocsCorpus:
    _target_: str = "runner.stages.load.corpus.load_python_docs"
    max_documents: Optional[int] = None  # keep only the first N topics (by name): debug runs


@dataclass
class DirectoryCorpus:
    _target_: str = "runner.stages.load.corpus.load_directory"
    path: str = MISSING
    required_exts: Optional[List[str]] = None  # e.g. [.md, .pdf]; null: every file
    recursive: bool = True
    max_documents: Optional[int] = None


@dataclass
class BeirCorpus:
    _target_: str = "runner.stages.load.corpus.load_beir_corpus"
    path: str = MISSING  # a BEIR folder: its corpus.jsonl
    max_documents: Optional[int] = None


@dataclass
class QaFileCorpus:
    _target_: str = "runner.stages.load.corpus.load_qa_file_corpus"
    path: str = MISSING  # an EmbeddingQAFinetuneDataset JSON: its corpus
    max_documents: Optional[int] = None


# --- chunker ------------------------------------------------------------------------------------
@dataclass
class SentenceChunker:
    _target_: str = "llama_index.core.node_parser.SentenceSplitter"
    chunk_size: Any = 128  # tiktoken tokens (llama-index's unit); auto: the base model's window in its word pieces
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class TokenChunker:
    _target_: str = "llama_index.core.node_parser.TokenTextSplitter"
    chunk_size: Any = 128
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class MarkdownChunker:
    _target_: str = "runner.stages.chunk.chunkers.markdown"
    chunk_size: Any = 128
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class SemanticChunker:
    _target_: str = "runner.stages.chunk.chunkers.semantic"
    model: str = "${base_model.name_or_path}"  # the base model decides where meaning shifts
    buffer_size: int = 1
    breakpoint_percentile_threshold: int = 95
    chunk_size: Any = 128  # the cap applied after the semantic split
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)
    device: str = "${device}"


# --- qa_generator -------------------------------------------------------------------------------
@dataclass
class IctGenerator:
    _target_: str = "runner.stages.generate.generators.ict_pairs"
    _partial_: bool = True
    num_questions_per_chunk: int = 1
    remove_prob: float = 0.9
    min_query_words: int = 5
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class KeywordGenerator:
    _target_: str = "runner.stages.generate.generators.keyword_pairs"
    _partial_: bool = True
    num_questions_per_chunk: int = 1
    min_keywords: int = 3
    max_keywords: int = 6
    pool: int = 12  # the chunk's best words (TF-IDF) that keywords are drawn from
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class TitleGenerator:
    _target_: str = "runner.stages.generate.generators.title_pairs"
    _partial_: bool = True
    min_title_words: int = 2


@dataclass
class MixedGenerator:
    _target_: str = "runner.stages.generate.generators.mixed_pairs"
    _partial_: bool = True
    generators: Dict[str, Any] = field(default_factory=dict)  # name -> a qa_generator config


@dataclass
class FileGenerator:
    _target_: str = "runner.stages.generate.generators.pairs_from_file"
    _partial_: bool = True
    path: str = MISSING  # an EmbeddingQAFinetuneDataset JSON, or a BEIR folder
    split: str = "train"  # a BEIR folder's qrels/<split>.tsv


@dataclass
class LlmGenerator:
    _target_: str = "runner.stages.generate.llm.llm_pairs"
    _partial_: bool = True
    llm: Any = MISSING  # a llama-index LLM, chosen with qa_generator/llm=openai|openai_like|ollama
    num_questions_per_chunk: int = 2
    prompt: Optional[str] = None  # a template with {context_str} and {num_questions_per_chunk}
    max_chunks: Optional[int] = None  # budget: at most this many chunks are sent
    max_concurrency: int = 8
    retries: int = 3
    backoff_s: float = 1.0
    cache_dir: Optional[str] = "${cache.dir}/llm_questions"  # questions kept per chunk as they arrive


# --- base_model ---------------------------------------------------------------------------------
@dataclass
class BaseModel:
    name_or_path: str = MISSING
    revision: Optional[str] = None  # a hub model's branch, tag or commit: pin it for runs you can repeat
    # word pieces; auto: chosen on the dev split (runner/stages/evaluate/seq_length.py); None: the model's own
    max_seq_length: Any = None
    query_prompt: str = ""
    passage_prompt: str = ""
    trust_remote_code: bool = False
    build: Optional[str] = None  # "tiny_bert": build a tiny random model at name_or_path if missing


# --- finetune -----------------------------------------------------------------------------------
@dataclass
class HardNegatives:
    # mined per pair with the base model; 0: in-batch negatives only; null (auto): 1 for pairs read from a
    # file (qa_generator=file: labelled ones, or generated earlier), 0 for pairs generated in the run
    num: Optional[int] = None
    relative_margin: float = 0.05  # a negative scores below (1 - margin) x the positive's score
    range_max: int = 50  # candidates considered per query


@dataclass
class SentenceTransformersFinetune:
    _target_: Optional[str] = "runner.stages.finetune.trainer.train_sentence_transformers"
    _partial_: bool = True
    loss: str = "mnrl"  # mnrl | cached_mnrl | matryoshka
    mini_batch_size: int = 32  # cached_mnrl: the memory-bound part of a large batch
    matryoshka_dims: List[int] = field(default_factory=lambda: [384, 256, 128, 64])
    scale: float = 20.0  # MNRL's 1 / temperature
    directions: List[str] = field(default_factory=lambda: ["query_to_doc"])  # + doc_to_query: symmetric
    hardness_strength: float = 0.0  # > 0: weight in-batch negatives by hardness (Lan et al. 2025 use 9)
    hard_negatives: HardNegatives = field(default_factory=HardNegatives)
    filter_top_k: int = 0  # > 0: keep a pair only if the base model ranks its passage in the top k (consistency filter)
    epochs: Any = "auto"  # auto: from the number of pairs (runner/stages/finetune/epochs.py, docs/auto.md); a number fixes it
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 32
    learning_rate: float = 5e-5
    group_by_length: Optional[bool] = None  # batch passages of similar length; null: only where it pays (README)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # seconds for the finetune stage; auto: 900 on a CPU, 3600 on a GPU; null: no budget. Over budget, mined
    # negatives go first, then epochs (runner/stages/finetune/budget.py); a budget that cannot fit one epoch stops the run
    time_budget_s: Any = "auto"
    best_epoch: Optional[bool] = None  # keep an earlier epoch clearly better on dev; null: where scoring is cheap
    dataloader_num_workers: int = 0  # tokenizing in worker processes: helps a GPU that waits on the CPU
    torch_compile: bool = False  # torch.compile the model: faster steps on GPUs after a compile warm-up
    seed: int = "${seed}"  # type: ignore[assignment]
    precision: str = "${precision}"
    device: str = "${device}"


@dataclass
class LlamaIndexFinetune:
    _target_: Optional[str] = "runner.stages.finetune.llama_index_engines.train_llama_index_engine"
    _partial_: bool = True
    epochs: int = 1
    batch_size: int = 10
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class AdapterFinetune:
    _target_: Optional[str] = "runner.stages.finetune.llama_index_engines.train_adapter"
    _partial_: bool = True
    adapter: str = "linear"  # linear | two_layer
    hidden_features: int = 1024  # two_layer only
    epochs: int = 1
    batch_size: int = 10
    learning_rate: float = 1e-3  # the engine's own default, 2e-5, barely moves an adapter that starts as identity
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class NoFinetune:
    _target_: Optional[str] = None  # evaluate the base model only


# --- eval_set -----------------------------------------------------------------------------------
@dataclass
class HeldOutEvalSet:
    kind: str = "held_out"
    generator: Optional[Any] = None  # null: the training generator; else a qa_generator config (held_out_ict)


@dataclass
class FileEvalSet:
    kind: str = "file"
    path: str = MISSING


@dataclass
class BeirEvalSet:
    kind: str = "beir"
    path: str = MISSING  # folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv
    split: str = "test"


# --- logger -------------------------------------------------------------------------------------
@dataclass
class WandbLogger:
    _target_: str = "runner.infra.tracking.WandbTracker"
    project: str = "ragtune"
    entity: Optional[str] = None
    mode: str = "auto"  # auto | online | offline | disabled
    group: Optional[str] = None  # default: the sweep (multirun dir) or the experiment's name
    job_type: str = "finetune"
    tags: List[str] = field(default_factory=list)
    log_model: bool = False  # upload the finetuned model as a W&B Artifact
    init_timeout: float = 60.0  # seconds before an online init gives up and falls back to offline


@dataclass
class NoLogger:
    _target_: str = "runner.infra.tracking.NullTracker"


# --- top level ----------------------------------------------------------------------------------
@dataclass
class SplitConfig:
    val_fraction: float = 0.2  # share of chunks held out for evaluation, as whole documents
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class DevConfig:
    # share of the training side held out for the run's choices (BM25, fusion, merge weight): whole
    # documents of generated pairs, whole groups of pairs sharing a passage for pairs from a file;
    # 0: no dev split (the choices keep LlamaIndex's defaults, no merging)
    fraction: float = 0.15
    path: Optional[str] = None  # a dev file (EmbeddingQAFinetuneDataset JSON) instead; training keeps every pair
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class BaselinesConfig:
    enabled: bool = True  # BM25 and BM25 + dense hybrids next to the dense models, and in the verdict
    language: str = "english"  # the Snowball stemmer's and the stopword list's language
    stopwords: Optional[bool] = None  # null: chosen on the dev split (with and without)
    stemming: Optional[bool] = None  # null: chosen on the dev split
    fusion_modes: List[str] = field(default_factory=lambda: ["relative_score", "dist_based_score", "reciprocal_rerank"])
    top_k: List[int] = field(default_factory=lambda: [10, 20, 50])  # each retriever's similarity_top_k, and the fused cut
    dense_weights: List[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])


@dataclass
class EvaluateConfig:
    engine: str = "fast"  # fast | llama_index (VectorStoreIndex + RetrieverEvaluator: hit rate, MRR)
    llama_index_top_k: int = 10  # similarity_top_k of the llama_index engine
    batch_size: int = 64
    bootstrap: int = 10000  # resamples for the paired BCa bootstrap CI and the randomization test
    hit_rate_at_k: List[int] = field(default_factory=lambda: [1, 5, 10])
    precision_recall_at_k: List[int] = field(default_factory=lambda: [10])
    mrr_at_k: List[int] = field(default_factory=lambda: [10])
    ndcg_at_k: List[int] = field(default_factory=lambda: [10])
    map_at_k: List[int] = field(default_factory=lambda: [100])
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)


@dataclass
class MergeConfig:
    enabled: bool = True  # interpolate base and finetuned weights (WiSE-FT); keep the best on dev
    alphas: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # the finetuned model's weight


@dataclass
class GuardConfig:
    # extra eval sets, each scored base vs finetuned: {name: {kind: beir|file, path: ..., split: test}}
    sets: Dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.01  # a finetuned model that loses more than this on a guard is flagged, not shipped


@dataclass
class PathsConfig:
    root: str = "outputs"
    output_dir: Optional[str] = "${hydra:runtime.output_dir}"  # None only in --cfg job --resolve
    models_dir: str = "${paths.root}/models"  # models the runner builds itself (debug's tiny BERT)


@dataclass
class CacheConfig:
    enabled: bool = True  # reuse the base model's corpus embeddings across runs
    dir: str = "${paths.root}/cache"


@dataclass
class Config:
    # the groups: typed by their own option schemas, so Any here
    corpus: Any = MISSING
    chunker: Any = MISSING
    qa_generator: Any = MISSING
    base_model: Any = MISSING
    finetune: Any = MISSING
    eval_set: Any = MISSING
    logger: Any = MISSING

    name: str = "default"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    optimized_metric: str = "finetuned/ndcg@10"
    secrets_file: Optional[str] = None  # KEY=VALUE lines (e.g. OPENAI_API_KEY) read into the environment
    resume: bool = False  # skip the job when its dir already holds results.json of the same config
    split: SplitConfig = field(default_factory=SplitConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


SCHEMAS = {
    "corpus": {"python_docs": PythonDocsCorpus, "directory": DirectoryCorpus, "beir": BeirCorpus, "qa_file": QaFileCorpus},
    "chunker": {"sentence": SentenceChunker, "token": TokenChunker, "markdown": MarkdownChunker, "semantic": SemanticChunker},
    "qa_generator": {
        "ict": IctGenerator,
        "keywords": KeywordGenerator,
        "titles": TitleGenerator,
        "mixed": MixedGenerator,
        "file": FileGenerator,
        "llm": LlmGenerator,
    },
    "base_model": {"base_model": BaseModel},
    "finetune": {
        "sentence_transformers": SentenceTransformersFinetune,
        "llama_index": LlamaIndexFinetune,
        "adapter": AdapterFinetune,
        "none": NoFinetune,
    },
    "eval_set": {"held_out": HeldOutEvalSet, "file": FileEvalSet, "beir": BeirEvalSet},
    "logger": {"wandb": WandbLogger, "none": NoLogger},
}


def _safe_dirname(overrides: str, limit: int = 100) -> str:
    """A sweep job's override string as one short directory name: path values must not nest
    directories, and a long sweep must not exceed the file system's 255-byte names."""
    import zlib

    name = overrides.replace("/", "-").replace("\\", "-")
    return name if len(name) <= limit else f"{name[: limit - 9]}~{zlib.crc32(name.encode()):08x}"


def register() -> None:
    """Put every schema in the ConfigStore and the resolvers in OmegaConf (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    for group, options in SCHEMAS.items():
        for option, node in options.items():
            cs.store(group=f"schema/{group}", name=option, node=node)
    if not OmegaConf.has_resolver("minilm_path"):
        OmegaConf.register_new_resolver("minilm_path", minilm_path)
    if not OmegaConf.has_resolver("pid"):  # two runs started in the same second get two dirs
        OmegaConf.register_new_resolver("pid", os.getpid)
    if not OmegaConf.has_resolver("secret"):  # ${secret:OPENAI_API_KEY,default}: runner/infra/secrets.py
        from runner.infra.secrets import secret

        OmegaConf.register_new_resolver("secret", secret)
    if not OmegaConf.has_resolver("ragtune_data"):  # files that ship inside the package (runner/data/)
        OmegaConf.register_new_resolver("ragtune_data", lambda name: str(Path(__file__).parent / "data" / name))
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", _safe_dirname)
