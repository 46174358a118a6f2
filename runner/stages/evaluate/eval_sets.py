"""Stage `eval_set`: the questions a run is scored on.

Built from held-out documents by the question generator (cached), or read from a llama-index dataset
file or a BEIR folder (read every run: reading costs less than a key would).
"""

from __future__ import annotations

from runner.data.eval_set import EvalSet


def held_out_eval_set(held_out_nodes, generator, report: dict | None = None) -> EvalSet:
    """The stage: questions from held-out chunks, retrieved against every held-out chunk (the others
    are distractors)."""
    from runner.stages.generate.generators import generate_pairs

    ds = generate_pairs(held_out_nodes, generator, report)
    corpus = {n.node_id: ds.corpus.get(n.node_id, n.get_content()) for n in held_out_nodes}
    return EvalSet(dict(ds.queries), corpus, dict(ds.relevant_docs))


def read_eval_set(eval_cfg, counts: dict, key: str = "eval_set.path") -> EvalSet:
    """eval_set=beir (a BEIR folder's split, graded) or eval_set=file (an EmbeddingQAFinetuneDataset)."""
    if eval_cfg.kind == "beir":
        from runner.data.beir import read_beir

        beir = read_beir(eval_cfg.path, eval_cfg.split, key=key)
        counts.update({f"eval_{k}": v for k, v in beir["counts"].items()})
        relevant = {q: [d for d, g in grades.items() if g > 0] for q, grades in beir["grades"].items()}
        return EvalSet(beir["queries"], beir["corpus"], relevant, beir["grades"])
    from runner.data.pairs import read_qa_dataset

    ds = read_qa_dataset(eval_cfg.path, key=key)
    return EvalSet(dict(ds.queries), dict(ds.corpus), dict(ds.relevant_docs))


def training_side(pairs, dev: EvalSet | None) -> EvalSet | None:
    """Every question the run has before training, over the training side's passages: the training pairs'
    questions and the dev split's, retrieved against the union of their passages. What the choices made
    before training are decided on (no model has learned from any of these questions yet); never the eval set.

    Dev ids are kept as they are (so the dev split is a subset of this set, id for id); a training id that
    would clash with a dev id (a dev file beside a pairs file) gets a `train:` prefix. None: no question."""
    if pairs is None and dev is None:
        return None
    queries, corpus, relevant = {}, {}, {}
    if dev is not None:
        answered = dev.answered_query_ids()
        queries.update({q: dev.queries[q] for q in answered})
        relevant.update({q: list(dev.relevant_docs[q]) for q in answered})
        corpus.update(dev.corpus)
    if pairs is not None:
        doc_id = {}
        for d, text in sorted(pairs.corpus.items()):
            doc_id[d] = d if corpus.get(d, text) == text else f"train:{d}"
            corpus[doc_id[d]] = text
        for q, text in pairs.queries.items():
            docs = [doc_id[d] for d in pairs.relevant_docs.get(q, []) if d in doc_id]
            if docs:
                qid = q if q not in queries else f"train:{q}"
                queries[qid], relevant[qid] = text, docs
    return EvalSet(queries, corpus, relevant) if queries else None
