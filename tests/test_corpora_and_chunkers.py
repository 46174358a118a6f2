"""Every corpus and chunker option on small files the test writes itself."""

from __future__ import annotations

import json
import os

import pytest
from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter, TokenTextSplitter

from conftest import compose, fast
from runner.stages.chunk.chunking import chunk_documents
from runner.stages.chunk.chunkers import markdown, semantic
from runner.infra.errors import RagtuneError
from runner.stages.load.corpus import load_beir_corpus, load_directory, load_qa_file_corpus
from runner.pipeline import run

TEXT = (
    "Retrieval augmented generation finds passages that answer a question. "
    "An embedding model maps questions and passages to vectors. "
    "Finetuning moves the vectors of matching pairs closer together. "
)


def minimal_pdf(*pages: str) -> bytes:
    """A PDF with one page per text, in Helvetica, written by hand (no PDF library needed to make it)."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    font = 3 + 2 * n
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture
def docs_dir(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(TEXT * 3)
    (d / "sub" / "b.md").write_text("# Title\n\n" + TEXT + "\n\n## Part two\n\n" + TEXT)
    (d / "c.html").write_text(f"<html><head><title>t</title></head><body><p>{TEXT}</p><script>x=1</script></body></html>")
    (d / "d.pdf").write_bytes(minimal_pdf("Embeddings for retrieval in a PDF file"))
    (d / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (d / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    (d / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (d / ".hidden.txt").write_text("never read")
    return d


def test_directory_reads_text_markdown_html_and_pdf_and_skips_the_rest(docs_dir):
    loaded = load_directory(str(docs_dir))
    texts = {d.id_: d.text for d in loaded.documents}
    assert set(texts) == {"a.txt", "sub/b.md", "c.html", "d.pdf"}
    assert "Embeddings for retrieval in a PDF file" in texts["d.pdf"]  # real text, not raw bytes
    assert "<p>" not in texts["c.html"] and "embedding model maps" in texts["c.html"]
    assert texts["sub/b.md"].startswith("# Title")
    assert {d.id_: d.metadata.get("title") for d in loaded.documents}["sub/b.md"] == "Title"
    assert set(loaded.skipped) == {"broken.pdf", "latin1.txt", "blob.txt"}
    assert loaded.skipped["latin1.txt"] == "not UTF-8 text"
    only_md = load_directory(str(docs_dir), required_exts=["md"])
    assert [d.id_ for d in only_md.documents] == ["sub/b.md"]


def test_directory_without_readable_files_is_a_clear_error(tmp_path):
    with pytest.raises(RagtuneError, match="holds no file"):
        load_directory(str(tmp_path))
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(RagtuneError, match="none of its 1 file"):
        load_directory(str(tmp_path))
    with pytest.raises(RagtuneError, match="not a directory"):
        load_directory(str(tmp_path / "nope"))


def test_beir_and_qa_file_corpora(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
    assert [(d.id_, d.text, d.metadata) for d in load_beir_corpus(str(tmp_path)).documents] == [
        ("d1", "T body", {"title": "T"})
    ]  # the title rides along for qa_generator=titles
    qa = tmp_path / "qa.json"
    qa.write_text(json.dumps({"queries": {"q": "?"}, "corpus": {"n1": "one", "n2": "two"}, "relevant_docs": {"q": ["n1"]}}))
    assert [d.id_ for d in load_qa_file_corpus(str(qa)).documents] == ["n1", "n2"]


def test_token_markdown_and_semantic_chunkers_keep_stable_ids_and_the_size_cap(tiny_model):
    doc = Document(text="# Intro\n\n" + TEXT * 6 + "\n\n# Usage\n\n" + TEXT * 2, id_="guide.md")
    token = chunk_documents([doc], TokenTextSplitter(chunk_size=32, chunk_overlap=4))
    md = chunk_documents([doc], markdown(chunk_size=48, chunk_overlap=4))
    sem = chunk_documents([doc], semantic(str(tiny_model), chunk_size=48, chunk_overlap=4))
    for nodes in (token, md, sem):
        assert [n.node_id for n in nodes] == [f"guide.md#{i:04d}" for i in range(len(nodes))]
        assert all(n.ref_doc_id == "guide.md" for n in nodes)
    assert len(token) > 3 and len(md) >= 3
    assert md[0].get_content().startswith("# Intro") and any(n.get_content().startswith("# Usage") for n in md)
    assert chunk_documents([doc], markdown(chunk_size=48, chunk_overlap=4))[1].text == md[1].text


@pytest.mark.parametrize("chunker", ["token", "markdown", "semantic"])
def test_every_corpus_and_chunker_runs_end_to_end(chunker, docs_dir, tiny_model, tmp_path):
    from pydoc_data.topics import topics

    for extra, topic in enumerate(("assert", "pass", "global", "del")):  # enough distinct documents for a held-out split
        (docs_dir / f"more{extra}.md").write_text(f"# {topic}\n\n{topics[topic]}")
    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                "corpus=directory",
                f"corpus.path={docs_dir}",
                f"chunker={chunker}",
                "corpus.max_documents=null",
                "finetune.batch_size=2",
                "split.val_fraction=0.3",
            ),
            out,
        )
    )
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["skipped_files"] == 3 and results["counts"]["documents"] == 8
    assert results["metrics"]["finetuned"]


@pytest.mark.parametrize("corpus", ["beir", "qa_file"])
def test_beir_and_qa_file_corpora_run_end_to_end(corpus, tiny_model, tmp_path):
    sentences = [
        f"Topic {i}: retrieval passage number {i} explains embeddings and vectors in detail. "
        f"It also covers finetuning step {i} with matching pairs of questions and passages."
        for i in range(8)
    ]
    if corpus == "beir":
        path = tmp_path / "beir"
        path.mkdir()
        (path / "corpus.jsonl").write_text(
            "\n".join(json.dumps({"_id": f"d{i}", "title": f"Title number {i}", "text": t}) for i, t in enumerate(sentences))
        )
    else:
        path = tmp_path / "qa.json"
        path.write_text(
            json.dumps(
                {"queries": {"q": "?"}, "relevant_docs": {"q": ["d0"]}, "corpus": {f"d{i}": t for i, t in enumerate(sentences)}}
            )
        )
    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                f"corpus={corpus}",
                f"corpus.path={path}",
                "finetune.batch_size=2",
                "split.val_fraction=0.3",
            ),
            out,
        )
    )
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["documents"] == 6 and results["metrics"]["finetuned"]  # debug=fast keeps 6


@pytest.mark.parametrize(
    "option,prompts",
    [("bge_small", ("Represent this sentence", "")), ("e5_small", ("query: ", "passage: ")), ("gte_small", ("", ""))],
)
def test_hub_models_compose_with_their_prefixes_and_run_where_cached(option, prompts, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    cfg = compose([f"base_model={option}"], tmp_path)
    assert cfg.base_model.query_prompt.startswith(prompts[0]) and cfg.base_model.passage_prompt == prompts[1]
    assert cfg.base_model.max_seq_length == 512 and cfg.base_model.trust_remote_code is False
    if not isinstance(try_to_load_from_cache(cfg.base_model.name_or_path, "config.json"), str):
        pytest.skip(f"{cfg.base_model.name_or_path} is not in the Hugging Face cache (no network here)")
    run(compose(["debug=fast", f"base_model={option}", "logger=none"], tmp_path / "run"))


def test_a_hub_id_that_is_not_available_offline_fails_at_once(tmp_path):
    from conftest import run_cli

    r = run_cli(
        "debug=fast",
        "logger=none",
        "base_model.name_or_path=nobody/no-such-model",
        "base_model.build=null",
        f"hydra.run.dir={tmp_path}",
        f"paths.root={tmp_path / 'o'}",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "base_model.name_or_path=nobody/no-such-model could not be loaded" in r.stdout + r.stderr
    assert "[chunk]" not in (tmp_path / "run.log").read_text()  # before any work


def test_prefixes_reach_training_evaluation_and_the_saved_model(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    run(
        compose(
            fast(tiny_model, "logger=none", "base_model.query_prompt='query: '", "base_model.passage_prompt='passage: '"), out
        )
    )
    saved = json.loads((out / "model" / "config_sentence_transformers.json").read_text())
    assert saved["prompts"] == {"query": "query: ", "document": "passage: "}
    assert SentenceTransformer(str(out / "model"), device="cpu").prompts["query"] == "query: "


def test_documents_chunk_the_same_after_a_load_cache_round_trip():
    from llama_index.core.node_parser import SentenceSplitter

    from runner.stages.load.corpus import documents_from_json, documents_to_json, load_python_docs

    loaded = load_python_docs(max_documents=8)  # titled: the title must not eat into chunk_size either way
    splitter = SentenceSplitter(chunk_size=64, chunk_overlap=8)
    fresh = chunk_documents(loaded.documents, splitter)
    cached = chunk_documents(documents_from_json(documents_to_json(loaded)).documents, splitter)
    assert [n.get_content() for n in cached] == [n.get_content() for n in fresh]
    assert fresh[0].metadata["title"] == 'The "assert" statement'


def test_a_tiktoken_cache_dir_without_cl100k_gets_llama_index_copy_instead_of_a_download(tmp_path, monkeypatch, caplog):
    """GPU images set TIKTOKEN_CACHE_DIR to a folder without cl100k_base: offline, llama-index's
    splitters then fail on a download. The runner adds llama-index's own file, under tiktoken's name."""
    import hashlib

    from runner.stages.chunk.chunkers import fill_tiktoken_cache

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    cache = tmp_path / "tiktoken"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    copied = fill_tiktoken_cache()
    assert hashlib.sha1(url.encode()).hexdigest() in copied  # the name tiktoken looks up
    assert (cache / hashlib.sha1(url.encode()).hexdigest()).stat().st_size > 1_000_000  # the whole encoding
    assert not list(cache.glob(".*.tmp"))
    assert fill_tiktoken_cache() == []  # already there: nothing to do
    # tiktoken itself (a fresh process, hash-checked) now reads cl100k_base from that folder
    import subprocess
    import sys

    code = "import tiktoken; print(len(tiktoken.get_encoding('cl100k_base').encode('retrieval finetuning')))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TIKTOKEN_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr[-500:]

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "tiktoken"))  # cannot be made, even by root
    assert fill_tiktoken_cache() == []
    assert "TIKTOKEN_CACHE_DIR" in caplog.text and "Unset" in caplog.text


def test_chunk_size_auto_fits_the_base_models_window_in_its_word_pieces(tiny_model, tmp_path):
    from runner.stages.chunk.chunking import chunk_corpus
    from runner.stages.load.corpus import load_corpus
    from runner.infra.models import load_model, word_pieces
    from runner.data_stages import chunk_plan

    cfg = compose(
        fast(
            tiny_model,
            "logger=none",
            "chunker.chunk_size=auto",
            "base_model.max_seq_length=64",
            "base_model.passage_prompt=passage: ",
        ),
        tmp_path,
    )
    model = load_model(cfg.base_model, "cpu")
    plan = chunk_plan(cfg, model)
    prompt = len(model.tokenizer("passage: ", add_special_tokens=False)["input_ids"])
    assert prompt > 0 and plan.record["window"] == 64 and plan.record["special_tokens"] == 2
    assert plan.record["chosen"] == plan.config["chunk_size"] == 64 - 2 - prompt
    nodes = chunk_corpus(load_corpus(cfg.corpus), plan)["nodes"]
    lengths = word_pieces(model, [n.get_content() for n in nodes]) - 2  # less [CLS] and [SEP]
    assert lengths.max() <= plan.record["chosen"] and lengths.max() >= 0.8 * plan.record["chosen"]
    # the same number in tiktoken tokens (the unit of a number) makes chunks the model would cut ...
    size = plan.record["chosen"]
    loose = compose(
        fast(
            tiny_model,
            "logger=none",
            f"chunker.chunk_size={size}",
            "chunker.fit_window=false",
            "base_model.max_seq_length=64",
            "base_model.passage_prompt=passage: ",
        ),
        tmp_path,
    )
    cut = chunk_corpus(load_corpus(loose.corpus), chunk_plan(loose, model))["nodes"]
    assert (word_pieces(model, [n.get_content() for n in cut]) - 2).max() > size
    # ... unless fit_window (the default) splits them again at the window
    fitted = compose(
        fast(
            tiny_model,
            "logger=none",
            f"chunker.chunk_size={size}",
            "base_model.max_seq_length=64",
            "base_model.passage_prompt=passage: ",
        ),
        tmp_path,
    )
    fitted_plan = chunk_plan(fitted, model)
    assert fitted_plan.record["window_cap"] == size and fitted_plan.record["unit"] == "tiktoken tokens"
    capped = chunk_corpus(load_corpus(fitted.corpus), fitted_plan)["nodes"]
    assert (word_pieces(model, [n.get_content() for n in capped]) - 2).max() <= size and len(capped) > len(cut)


def test_chunk_size_auto_is_recorded_keyed_on_the_tokenizer_and_shipped(tiny_model, tmp_path):
    from runner.stages.load.corpus import load_corpus
    from runner.stages.ship.retriever import load_retriever

    out = tmp_path / "run"
    cfg = compose(fast(tiny_model, "logger=none", "chunker.chunk_size=auto", "base_model.max_seq_length=48"), out)
    run(cfg)
    results = json.loads((out / "results.json").read_text())
    record = results["choices"]["chunk_size"]
    assert record["setting"] == "auto" and record["chosen"] == 46 and record["unit"] == "word pieces"
    spec = json.loads((out / "retriever.json").read_text())["chunker"]
    assert spec["chunk_size"] == 46 and spec["tokenizer"]["name_or_path"] == str(tiny_model)
    # an app rebuilding the retriever from the documents chunks them as the run did, with the model's tokenizer
    from runner.stages.chunk.chunking import build_parser, chunk_documents

    documents = load_corpus(cfg.corpus).documents
    rebuilt = chunk_documents(documents, build_parser(spec))
    assert results["counts"]["chunks"] == len(rebuilt)
    assert load_retriever(out, documents).retrieve(rebuilt[3].get_content()[:200])


def test_a_chunk_size_auto_that_leaves_no_room_is_a_clear_error(tiny_model, tmp_path):
    cfg = compose(
        fast(tiny_model, "logger=none", "chunker.chunk_size=auto", "base_model.max_seq_length=16", "chunker.chunk_overlap=16"),
        tmp_path / "run",
    )
    with pytest.raises(
        RagtuneError,
        match=r"chunker.chunk_size=auto with the base model's window leaves 14 word pieces"
        r".*chunk_overlap=16",
    ):
        run(cfg)
    tiny = compose(fast(tiny_model, "logger=none", "base_model.max_seq_length=2"), tmp_path / "tiny")  # fit_window
    with pytest.raises(RagtuneError, match=r"chunker.chunk_size=96 with the base model's window leaves 0 word pieces"):
        run(tiny)


def _pages(book: str, n: int) -> list[str]:
    return [f"{book} page {i}: the harbour master logged ship number {i} arriving at dawn with cargo" for i in range(n)]


def test_pages_of_one_pdf_never_land_on_both_sides_of_a_split(tmp_path):
    """A reader makes a document per PDF page; the split holds out whole files, or, for a corpus of one
    file, whole runs of consecutive pages. The assertion names the pages that would leak."""
    from runner.stages.split.splitting import split_by_document, split_units

    several = tmp_path / "several"
    several.mkdir()
    for b in range(6):
        (several / f"book{b}.pdf").write_bytes(minimal_pdf(*_pages(f"book{b}", 5)))
    single = tmp_path / "single"
    single.mkdir()
    (single / "manual.pdf").write_bytes(minimal_pdf(*_pages("manual", 30)))
    for folder, unit_of_page in ((several, lambda doc: doc.split("#")[0]), (single, None)):
        docs = load_directory(str(folder)).documents
        assert len(docs) == 30 and all("#" in d.id_ for d in docs)
        nodes = chunk_documents(docs, SentenceSplitter(chunk_size=64, chunk_overlap=0))
        units = split_units(nodes)
        if unit_of_page is None:  # one file: runs of 3 consecutive pages (30 pages, 10 blocks)
            blocks = {}
            for doc, unit in units.items():
                blocks.setdefault(unit, []).append(int(doc.split("#")[1]))
            assert len(blocks) == 10 and all(p == list(range(p[0], p[0] + 3)) for p in map(sorted, blocks.values()))
        for seed in range(5):
            train, held = split_by_document(nodes, 0.3, seed)
            assert train and held
            sides = {}
            for side, part in (("train", train), ("held out", held)):
                for n in part:
                    sides.setdefault(units[n.ref_doc_id], set()).add((side, n.ref_doc_id))
            leaks = {u: sorted(d for _, d in s) for u, s in sides.items() if len({side for side, _ in s}) > 1}
            assert not leaks, f"pages on both sides (seed {seed}): {leaks}"
            if unit_of_page is not None:  # several files: every page of a file on one side
                assert {unit_of_page(n.ref_doc_id) for n in train}.isdisjoint({unit_of_page(n.ref_doc_id) for n in held})


def test_documents_whose_text_overlaps_stay_on_one_side_of_every_split(tmp_path):
    """The Python reference's topics contain each other (all of `class` lies inside `compound`): the default
    run's split once left 85 of its 684 held-out sentences of 40+ characters verbatim in the training text."""
    import re

    from conftest import compose
    from runner.data_stages import chunk_plan, split_settings
    from runner.stages.chunk.chunking import chunk_corpus
    from runner.stages.load.corpus import load_python_docs
    from runner.stages.split.splitting import near_duplicates, split_chunks

    cfg = compose(["logger=none"], tmp_path / "run")  # the default run: the built-in corpus and chunker
    chunked = chunk_corpus(load_python_docs(), chunk_plan(cfg))
    s = split_settings(cfg)
    split = {"val_fraction": s["val_fraction"], "seed": s["seed"], "dev_fraction": s["dev_fraction"], "dev_seed": s["dev_seed"]}
    parts = split_chunks(chunked, held_out=True, **split)
    training = "\n".join(n.get_content() for n in parts["train"] + parts["dev"])
    pieces = [x.strip() for n in parts["held_out"] for x in re.split(r"(?<=[.!?])\s+|\n\s*\n", n.get_content())]
    held = {x for x in pieces if len(x) >= 40}
    assert len(held) > 300 and [x for x in held if x in training] == []
    counts = parts["counts"]
    assert counts["overlap_groups"] >= 3 and counts["documents_grouped"] >= 10  # said, and in results.json counts
    topic = {n.ref_doc_id: side for side in ("train", "dev", "held_out") for n in parts[side]}
    assert topic["class"] == topic["compound"] and topic["customization"] == topic["specialnames"]
    # a file and its edited, reformatted copy share no sentence as it was: MinHash finds them all the same
    lines = [f"The harbour master logged ship number {i} arriving at dawn with a cargo of tea." for i in range(60)]
    text = " ".join(lines)
    edited = "\n".join(x.replace("arriving", "docking" if i % 2 else "arriving").rstrip(".") + ";" for i, x in enumerate(lines))
    other = " ".join(f"A recipe step {i}: fold the egg whites into the batter gently." for i in range(60))
    assert near_duplicates({"a": text, "b": edited, "c": other}) == [("a", "b")]


def test_a_template_line_groups_nothing_and_a_corpus_of_copies_still_splits(caplog):
    """A licence sentence in every file is a template's, not a copy: it must not glue the folder into one group
    no split can cut. A corpus whose files all copy each other splits by file, and says why that reads high."""
    import logging

    from llama_index.core import Document

    from runner.stages.split.splitting import overlap_groups, split_by_document

    import random

    licence = "Copyright 2026 the harbour authority; every right reserved, and this notice kept in every copy."
    topics = ("tides", "cranes", "pilots", "buoys", "cargo", "ferries", "locks", "dredging")
    vocabulary = [f"w{i}" for i in range(5000)]
    docs = [
        Document(
            text=f"{licence}\n\n" + ". ".join(" ".join(random.Random(t + str(i)).sample(vocabulary, 12)) for i in range(12)),
            id_=t,
        )
        for t in topics
    ]
    nodes = chunk_documents(docs, SentenceSplitter(chunk_size=64, chunk_overlap=0))
    groups = overlap_groups(nodes)
    assert len(set(groups.values())) == len(topics)  # the licence groups nothing
    same = [
        Document(text=" ".join(f"The same report, line {i}, copied into every file." for i in range(30)), id_=f"copy{c}")
        for c in range(5)
    ]
    nodes = chunk_documents(same, SentenceSplitter(chunk_size=64, chunk_overlap=0))
    groups = overlap_groups(nodes)
    assert len(set(groups.values())) == 1
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        train, held = split_by_document(nodes, 0.3, 0, groups=groups)
    assert train and held and "no split keeps them apart" in caplog.text
