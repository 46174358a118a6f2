"""The whole pipeline on debug=fast data with a tiny local model: files, values, W&B records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import compose, fast, run_cli
from runner.pipeline import run
from wandb_records import run_contents

METRICS = {"hit_rate@1", "hit_rate@5", "hit_rate@10", "precision@10", "recall@10", "mrr@10", "ndcg@10", "map@100"}


@pytest.fixture(scope="module")
def fast_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = compose(fast(tiny_model, "logger.tags=[test]"), out)
    value = run(cfg)
    return out, value, json.loads((out / "results.json").read_text())


def test_results_json_follows_the_contract(fast_run):
    out, value, results = fast_run
    m = results["metrics"]
    assert set(m["base"]) == METRICS and set(m["finetuned"]) == METRICS
    for k in METRICS:
        assert m["delta"][k] == pytest.approx(m["finetuned"][k] - m["base"][k])
        low, high = m["delta_ci95"][k]
        assert low <= high and 0 <= m["delta_p"][k] <= 1
        assert 0 <= m["base"][k] <= 1
    assert value == pytest.approx(m["finetuned"]["ndcg@10"])
    assert m["finetuned"] != m["base"]  # training moved the model
    assert set(results["timings_s"]) >= {"load", "chunk", "split", "generate", "finetune", "evaluate_base", "evaluate_finetuned"}
    assert results["config"]["corpus"]["max_documents"] == 6
    assert results["counts"]["train_pairs"] > 8 and results["counts"]["eval_queries"] > 5
    assert results["versions"]["torch"] == "2.13.0+cpu" or results["versions"]["torch"].startswith("2.13.0")
    assert 0 <= results["truncation"]["passages_over"] <= 1
    assert Path(results["model_dir"]) == out / "model"
    assert not (out / "checkpoints").exists()


def test_no_held_out_document_contributes_a_training_pair(fast_run):
    out, _, _ = fast_run
    train = json.loads((out / "train_pairs.json").read_text())
    evals = json.loads((out / "eval_set.json").read_text())
    doc = lambda node_id: node_id.split("#")[0]  # noqa: E731
    assert {doc(d) for d in train["corpus"]}.isdisjoint({doc(d) for d in evals["corpus"]})


def test_per_query_csv_has_a_row_per_eval_query(fast_run):
    import csv

    out, _, results = fast_run
    rows = list(csv.DictReader((out / "per_query.csv").open()))
    assert len(rows) == results["counts"]["eval_queries"]
    assert set(rows[0]) >= {
        "query_id",
        "query",
        "relevant_ids",
        "base_rank",
        "finetuned_rank",
        "bm25_rank",
        "hybrid_base_rank",
        "hybrid_finetuned_rank",
    }
    hits = sum(1 for r in rows if r["base_rank"] and int(r["base_rank"]) == 1)
    assert hits / len(rows) == pytest.approx(results["metrics"]["base"]["hit_rate@1"])
    for row in ("base", "finetuned", "bm25", "hybrid_finetuned"):  # each question's score: their mean is the row's
        values = [float(r[f"{row}_ndcg@10"]) for r in rows]
        assert sum(values) / len(values) == pytest.approx(results["metrics"][row]["ndcg@10"], abs=1e-6)


def test_saved_model_loads_in_sentence_transformers_and_llamaindex(fast_run):
    import numpy as np
    from llama_index.core import Settings
    from sentence_transformers import SentenceTransformer

    out, _, _ = fast_run
    st = SentenceTransformer(str(out / "model"), device="cpu")
    Settings.embed_model = f"local:{out / 'model'}"
    li = np.asarray(Settings.embed_model.get_text_embedding("How does the assert statement work?"))
    ref = st.encode("How does the assert statement work?", normalize_embeddings=True)
    assert li.shape == ref.shape
    assert float(li @ ref / np.linalg.norm(li)) > 0.999


def test_wandb_offline_run_holds_config_metrics_and_loss(fast_run):
    out, _, results = fast_run
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    contents = run_contents(run_file)
    assert contents["config"]["finetune.learning_rate"] == results["config"]["finetune"]["learning_rate"]
    assert contents["config"]["corpus.max_documents"] == 6
    summary = contents["summary"]
    for k in ("ndcg@10", "mrr@10"):
        assert summary[f"base/{k}"] == pytest.approx(results["metrics"]["base"][k])
        assert summary[f"finetuned/{k}"] == pytest.approx(results["metrics"]["finetuned"][k])
        assert summary[f"delta/{k}"] == pytest.approx(results["metrics"]["delta"][k])
    losses = [h["train/loss"] for h in contents["history"] if "train/loss" in h]
    assert len(losses) >= 2 and all(x > 0 for x in losses)
    for name in ("bm25", "fusion_hybrid_base", "merge"):  # every choice with its evidence
        record = results["choices"][name]
        assert summary[f"choices/{name}.questions"] == record["questions"] > 0
        assert summary[f"choices/{name}.stability"] == pytest.approx(record["stability"])
        assert summary[f"choices/{name}.decided_by"] == record["decided_by"]
        assert summary[f"choices/{name}.margin_ci95_low"] == pytest.approx(record["margin_ci95"][0])
    from runner.report.results import choices_table

    table = choices_table(results["choices"])  # the console's: one row a choice, with its evidence
    assert "choices (never on the eval set)" in table and "stability" in table
    assert all(name in table for name, r in results["choices"].items() if "decided_by" in r)


def test_train_on_one_file_and_evaluate_on_another(fast_run, tiny_model, tmp_path):
    src, _, _ = fast_run
    out = tmp_path / "files"
    cfg = compose(
        fast(
            tiny_model,
            "qa_generator=file",
            f"qa_generator.path={src / 'train_pairs.json'}",
            "eval_set=file",
            f"eval_set.path={src / 'eval_set.json'}",
            "logger=none",
        ),
        out,
    )
    run(cfg)
    results = json.loads((out / "results.json").read_text())
    assert "load" not in results["timings_s"]  # neither corpus nor chunker is needed
    train = json.loads((src / "train_pairs.json").read_text())
    # pairs from a file: a dev split of whole passage groups is carved out of them, the rest trains
    assert results["counts"]["train_pairs"] + results["counts"]["dev_queries"] == sum(
        len(v) for v in train["relevant_docs"].values()
    )
    assert results["counts"]["dev_corpus"] == len(train["corpus"])  # dev queries search every passage
    # the same eval set and the same base model: the same base metrics as the run that wrote it
    assert results["metrics"]["base"] == pytest.approx(fast_run[2]["metrics"]["base"])
    assert "finetuned" in results["metrics"]


def test_finetune_none_evaluates_the_base_model_alone(fast_run, tiny_model, tmp_path):
    src, _, _ = fast_run
    out = tmp_path / "base_only"
    value = run(
        compose(fast(tiny_model, "finetune=none", "eval_set=file", f"eval_set.path={src / 'eval_set.json'}", "logger=none"), out)
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]) == {"base", "bm25", "hybrid_base", "vs_verdict"} and results["model_dir"] is None
    assert results["verdict"]["deploy"] in ("base", "bm25", "hybrid_base")
    assert value == pytest.approx(results["metrics"]["base"]["ndcg@10"])
    assert not (out / "model").exists() and "finetune" not in results["timings_s"]


def test_debug_fast_runs_from_the_command_line(tmp_path):
    r = run_cli("debug=fast", "logger.mode=offline", f"hydra.run.dir={tmp_path}", f"paths.root={tmp_path / 'outputs'}")
    assert r.returncode == 0, r.stdout + r.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]["finetuned"]) == METRICS
    assert (tmp_path / "run.log").read_text().count("[finetune] done") == 1
    assert "ndcg@10" in r.stdout + r.stderr and "wandb sync" in (tmp_path / "run.log").read_text()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    # what a newcomer saw bury the result: bm25s's DEBUG lines, transformers' loss dicts, W&B's run summary
    said = r.stdout + r.stderr
    assert "Building index" not in said and "{'loss'" not in said and "Run summary" not in said and "Run history" not in said
    last = [line for line in r.stdout.splitlines() if line.strip()][-1]  # the log (progress bars go to stderr)
    assert "model:" in last and "ragtune.load_embedding" in last, last  # the run's own last words come last


def test_wandb_run_holds_the_per_query_table(fast_run):
    out, _, results = fast_run
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    logged = [
        {k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("per_query/")}
        for h in run_contents(run_file)["history"]
        if "per_query/_type" in h
    ]
    assert len(logged) == 1 and logged[0]["_type"] == "table-file"
    assert logged[0]["nrows"] == results["counts"]["eval_queries"]
    assert logged[0]["ncols"] == 3 + 2 * len(results["verdict"]["scores"])  # a rank and a score column per retriever
    (table_file,) = out.glob("wandb/offline-run-*/files/media/table/per_query_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:5] == ["query_id", "query", "relevant_ids", "base_rank", "finetuned_rank"]
    rows = results["verdict"]["scores"]
    assert set(table["columns"][3:]) == {f"{r}_rank" for r in rows} | {f"{r}_ndcg@10" for r in rows}


def test_second_run_reuses_the_base_corpus_embeddings(fast_run, tiny_model, tmp_path):
    src, _, first = fast_run
    stages = (
        "load",
        "chunk",
        "split",
        "generate",
        "dev_set",
        "eval_set",
        "choices_before_training",
        "evaluate_base",
        "base_embeddings",
    )
    assert first["cache"] == dict.fromkeys(stages, "miss")
    out = tmp_path / "again"
    run(compose(fast(tiny_model, "logger=none", "finetune.learning_rate=3e-3"), out, root=src / "outputs"))
    again = json.loads((out / "results.json").read_text())
    # every shared stage hits; with pairs and eval set cached, nothing upstream is even read
    assert again["cache"] == {
        "generate": "hit",
        "dev_set": "hit",
        "eval_set": "hit",
        "choices_before_training": "hit",
        "evaluate_base": "hit",
        "base_embeddings": "hit",
    }
    assert not {"load", "chunk", "split", "generate", "dev_set", "eval_set"} & set(again["timings_s"])
    assert again["counts"]["train_pairs"] == first["counts"]["train_pairs"]
    assert (out / "train_pairs.json").read_text() == (src / "train_pairs.json").read_text()
    assert again["metrics"]["base"] == pytest.approx(first["metrics"]["base"], abs=1e-6)
    assert again["metrics"]["finetuned"] != first["metrics"]["finetuned"]  # its own training
    chunked = tmp_path / "rechunk"
    run(compose(fast(tiny_model, "logger=none", "finetune=none", "chunker.chunk_size=80"), chunked, root=src / "outputs"))
    re = json.loads((chunked / "results.json").read_text())["cache"]
    assert re == {
        "load": "hit",
        "chunk": "miss",
        "split": "miss",
        "dev_set": "miss",
        "eval_set": "miss",
        "choices_before_training": "miss",
        "evaluate_base": "miss",
        "base_embeddings": "miss",
    }
    off = tmp_path / "off"
    run(compose(fast(tiny_model, "logger=none", "finetune=none", "cache.enabled=false"), off, root=src / "outputs"))
    assert set(json.loads((off / "results.json").read_text())["cache"].values()) == {"off"}


def test_beir_eval_set_and_llama_index_engine_run_end_to_end(fast_run, tiny_model, tmp_path):
    src, _, _ = fast_run
    evals = json.loads((src / "eval_set.json").read_text())
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in evals["corpus"].items())
    )
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in evals["queries"].items()))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, ds in evals["relevant_docs"].items() for d in ds)
    )
    fast_out, li_out = tmp_path / "fast", tmp_path / "li"
    run(compose(fast(tiny_model, "logger=none", "eval_set=beir", f"eval_set.path={beir}"), fast_out))
    # the default optimized_metric (finetuned/ndcg@10) needs no second flag with this engine
    value = run(
        compose(fast(tiny_model, "logger=none", "eval_set=beir", f"eval_set.path={beir}", "evaluate.engine=llama_index"), li_out)
    )
    f = json.loads((fast_out / "results.json").read_text())["metrics"]
    li = json.loads((li_out / "results.json").read_text())["metrics"]
    assert set(li["base"]) == {"hit_rate@10", "mrr@10", "precision@10", "recall@10", "ndcg@10"}
    assert value == pytest.approx(li["finetuned"]["ndcg@10"])
    for group in ("base", "finetuned"):
        for k in li["base"]:
            assert li[group][k] == pytest.approx(f[group][k], abs=1e-6), (group, k)
    # same data as the held-out run's eval set: same base numbers, through the BEIR reader
    assert f["base"]["ndcg@10"] == pytest.approx(fast_run[2]["metrics"]["base"]["ndcg@10"], abs=1e-6)


def test_held_out_ict_keeps_one_yardstick_whatever_the_generator(fast_run, tiny_model, tmp_path):
    src, _, _ = fast_run  # trained and evaluated with ICT
    out = tmp_path / "keywords"
    root = src / "outputs"  # the same cache: the ICT eval set is a hit
    run(compose(fast(tiny_model, "qa_generator=keywords", "eval_set=held_out_ict", "logger=none"), out, root))
    results = json.loads((out / "results.json").read_text())
    assert json.loads((out / "eval_set.json").read_text()) == json.loads((src / "eval_set.json").read_text())
    assert results["cache"]["eval_set"] == "hit" and results["cache"]["generate"] == "miss"
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert all(not q.endswith(".") and len(q.split()) <= 6 for q in pairs["queries"].values())  # keywords


def test_experiment_quick_composes_and_runs_under_debug(tiny_model, tmp_path):
    assert compose(["experiment=quick"], tmp_path).corpus.max_documents == 45
    out = tmp_path / "quick"
    run(compose(fast(tiny_model, "experiment=quick", "logger=none"), out))
    assert json.loads((out / "results.json").read_text())["config"]["name"] == "debug"


def test_train_on_a_beir_split_and_evaluate_on_another(tiny_model, tmp_path):
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    topics = [
        "loops",
        "classes",
        "imports",
        "exceptions",
        "generators",
        "decorators",
        "lists",
        "strings",
        "files",
        "threads",
        "sockets",
        "tests",
    ]
    (beir / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": f"d{i}", "title": t, "text": f"A passage on Python {t}: how {t} work and when to use {t}."})
            for i, t in enumerate(topics)
        )
    )
    (beir / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": f"how do {t} work"}) for i, t in enumerate(topics))
    )
    head = "query-id\tcorpus-id\tscore\n"
    (beir / "qrels" / "train.tsv").write_text(head + "".join(f"q{i}\td{i}\t1\n" for i in range(8)) + "q8\td8\t0\n")
    (beir / "qrels" / "test.tsv").write_text(head + "".join(f"q{i}\td{i}\t1\n" for i in range(8, 12)))
    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                "qa_generator=file",
                f"qa_generator.path={beir}",
                "qa_generator.split=train",
                "eval_set=beir",
                f"eval_set.path={beir}",
                "finetune.batch_size=4",
                "dev.fraction=0",
            ),
            out,
        )
    )  # every judged pair trains
    results = json.loads((out / "results.json").read_text())
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert pairs["relevant_docs"] == {f"q{i}": [f"d{i}"] for i in range(8)}  # grade 0 is not a pair
    assert results["counts"]["train_pairs"] == 8 and results["counts"]["eval_queries"] == 4
    assert results["counts"]["eval_corpus"] == 12


def test_ict_and_titles_together_train_on_both_kinds_of_query(fast_run, tiny_model, tmp_path):
    from runner.checks import config_problems

    assert any("held_out_ict" in p for p in config_problems(compose(["qa_generator=ict_titles"], tmp_path)))
    out = tmp_path / "mixed"
    run(
        compose(fast(tiny_model, "qa_generator=ict_titles", "eval_set=held_out_ict", "logger=none"), out, fast_run[0] / "outputs")
    )
    pairs = json.loads((out / "train_pairs.json").read_text())
    titles = {q: t for q, t in pairs["queries"].items() if q.endswith("/title")}
    assert titles and len(titles) < len(pairs["queries"])  # both kinds
    ids = [d for qid in titles for d in pairs["relevant_docs"][qid]]
    assert all(d in pairs["corpus"] for d in ids)
    assert any(d.endswith("@1") for d in ids)  # chunks whose ICT passage lost a sentence: a second entry
    results = json.loads((out / "results.json").read_text())
    assert results["cache"]["eval_set"] == "hit"  # the same ICT yardstick as the plain ICT run


def test_a_run_leaves_the_processs_wandb_dirs_as_it_found_them(fast_run):
    import os

    from runner.infra.tracking import STATE_DIRS

    # the module's fast_run logged to W&B in this process; its outputs/ must not leak into the next run
    assert not [var for var, _ in STATE_DIRS if str(fast_run[0]) in os.environ.get(var, "")]
