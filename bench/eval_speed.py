"""Evaluation speed, run by hand: `python bench/eval_speed.py [--queries N] [--big N]`.

Prints one table of ratios, each against a baseline measured in the same run:
  (a) the runner's evaluation wall time / the time to only encode the same texts   (goal <= 1.10)
  (b) llama-index VectorStoreIndex + RetrieverEvaluator loop / the runner          (goal >= 5)
      cold (the runner encodes the corpus too) and warm (base corpus embeddings from the cache,
      as every sweep job after the first has them)
  (c) fp32 encode time / bf16 encode time on this CPU, and the nDCG@10 change
  (d) peak memory (RSS) of the runner's evaluation of a 100,000-text corpus        (goal: a few GB)
Data: the built-in corpus (python_docs), chunked at 128 tokens, ICT queries; all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def eval_set(n_queries: int):
    from llama_index.core.node_parser import SentenceSplitter

    from runner.stages.chunk.chunking import chunk_documents, drop_duplicate_chunks
    from runner.stages.evaluate.scoring import EvalSet
    from runner.stages.generate.generators import ict_pairs
    from runner.stages.load.corpus import load_python_docs

    nodes, _ = drop_duplicate_chunks(
        chunk_documents(load_python_docs().documents, SentenceSplitter(chunk_size=128, chunk_overlap=16))
    )
    ds = ict_pairs(nodes, seed=0)
    qids = sorted(ds.queries)[:n_queries]
    corpus = {n.node_id: ds.corpus.get(n.node_id, n.get_content()) for n in nodes}
    return EvalSet({q: ds.queries[q] for q in qids}, corpus, {q: ds.relevant_docs[q] for q in qids})


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def big_corpus_probe(n: int) -> None:
    """Child process: evaluate `n` short texts with the runner's path, print peak RSS in MiB."""
    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import EvalSet, evaluate_model
    from runner.config import EvaluateConfig
    from runner.infra.models import minilm_path

    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = 32
    words = open(__file__).read().split()
    corpus = {f"d{i:06d}": " ".join(words[(i * 7) % (len(words) - 12) :][:12]) + f" #{i}" for i in range(n)}
    queries = {f"q{i}": corpus[f"d{i * (n // 1000):06d}"] for i in range(1000)}
    es = EvalSet(queries, corpus, {q: [f"d{i * (n // 1000):06d}"] for i, q in enumerate(queries)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds, result = timed(lambda: evaluate_model(model, es, OmegaConf.structured(EvaluateConfig), 256))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak, "before_mib": before, "seconds": seconds, "hit_rate@1": result.metrics["hit_rate@1"]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--big", type=int, default=100_000, help="corpus size for (d); 0 skips it")
    ap.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return big_corpus_probe(args.probe)

    import torch
    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import build_index, encode, evaluate_model
    from runner.stages.evaluate.llama_index_eval import evaluate_with_llama_index
    from runner.config import EvaluateConfig
    from runner.infra.models import minilm_path

    es = eval_set(args.queries)
    cfg = OmegaConf.structured(EvaluateConfig)
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = 256
    docs, queries = list(es.corpus.values()), list(es.queries.values())
    print(f"eval set: {len(docs)} passages, {len(queries)} queries; torch threads {torch.get_num_threads()}")
    encode(model, docs[:64], "document", 64)  # warm-up

    t_encode, _ = timed(lambda: (encode(model, docs, "document", 64), encode(model, queries, "query", 64)))
    t_runner, fp32 = timed(lambda: evaluate_model(model, es, cfg, 64))
    index = build_index(model, "minilm", es.corpus, 64)
    t_warm, _ = timed(lambda: evaluate_model(model, es, cfg, 64, model_id="minilm", index=index))
    t_li, li = timed(lambda: evaluate_with_llama_index(minilm_path(), es, 10, max_length=256))
    assert abs(li.metrics["mrr@10"] - fp32.metrics["mrr@10"]) < 1e-3, (li.metrics, fp32.metrics)
    t_bf16, bf16 = timed(lambda: evaluate_model(model, es, cfg, 64, precision="bf16"))
    t_enc_bf16, _ = timed(lambda: (encode(model, docs, "document", 64, "bf16"), encode(model, queries, "query", 64, "bf16")))

    rows = [
        ("(a) runner eval / encode only", t_runner / t_encode, "<= 1.10", f"{t_runner:.1f}s / {t_encode:.1f}s"),
        ("(b) llama-index loop / runner, cold", t_li / t_runner, ">= 5", f"{t_li:.1f}s / {t_runner:.1f}s"),
        ("(b) llama-index loop / runner, warm", t_li / t_warm, ">= 5", f"{t_li:.1f}s / {t_warm:.1f}s"),
        (
            "(c) fp32 / bf16 encode",
            t_encode / t_enc_bf16,
            "> 1",
            f"nDCG@10 fp32 {fp32.metrics['ndcg@10']:.4f}, bf16 {bf16.metrics['ndcg@10']:.4f} "
            f"({bf16.metrics['ndcg@10'] - fp32.metrics['ndcg@10']:+.4f})",
        ),
    ]
    if args.big:
        out = subprocess.run([sys.executable, __file__, "--probe", str(args.big)], capture_output=True, text=True)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            (
                f"(d) peak RSS, {args.big:,} texts",
                probe["peak_mib"] / 1024,
                "a few GB",
                f"{probe['peak_mib']:.0f} MiB peak ({probe['before_mib']:.0f} MiB before), {probe['seconds']:.0f}s",
            )
        )
    print(f"\n{'measure':38} {'ratio':>8}  {'goal':9} detail")
    for name, ratio, goal, detail in rows:
        unit = " GiB" if name.startswith("(d)") else ""
        print(f"{name:38} {ratio:8.2f}{unit:4} {goal:9} {detail}")


if __name__ == "__main__":
    main()
