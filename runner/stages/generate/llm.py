"""`qa_generator=llm`: questions for each chunk from any llama-index LLM, concurrently.

The prompt is llama-index-finetuning's own `DEFAULT_QA_GENERATE_PROMPT_TMPL` (or `prompt`), but
the loop is ours, for three things `generate_qa_embedding_pairs` does not do: requests run
concurrently up to `max_concurrency` through the LLM's async API (1,000 chunks must not be 1,000
round trips end to end); a failed chunk is retried with backoff, then skipped and counted instead
of stopping the run; and each chunk's answer is stored as soon as it arrives, keyed by every LLM
setting and the exact prompt (`answer_store`), so answers paid for before a crash are reused by the next run
(never the library's silent resume from a stale `qa_finetune_dataset.json` in the working dir).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.schema import TextNode
from tqdm import tqdm

from runner.data.pairs import EmbeddingQAFinetuneDataset
from runner.infra.atomic import write_json_atomic
from runner.infra.code_deps import library_versions
from runner.infra.errors import RagtuneError, first_line
from runner.infra.fingerprint import input_files
from runner.infra.secrets import key_view, redact
from runner.infra.stage_cache import touch

log = logging.getLogger("ragtune")

_NUMBERING = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|\(?[a-z][.)]|q(?:uestion)?\s*\d*\s*[:.)-])\s*", re.IGNORECASE)
_PREAMBLE = re.compile(r"^(here (are|is)|sure\b|certainly\b|okay\b|of course\b|the following\b|below are\b)", re.IGNORECASE)


def clean_questions(text: str, limit: int) -> list[str]:
    """LLM output -> questions: no preamble ("Here are two questions:"), no numbering or bullets,
    no empty or one-word lines, no duplicates; at most `limit`."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in text.splitlines():
        line = _NUMBERING.sub("", re.sub(r"^[\s*#>_]+", "", raw))  # markdown marks, then "1." / "Q3:"
        line = re.sub(r"^[\s*_:]+|[\s*_]+$", "", line).strip('"').strip()
        if len(line.split()) < 2 or _PREAMBLE.match(line) or (line.endswith(":") and "?" not in line):
            continue
        key = line.lower()
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out[:limit]


def _prompt_template(prompt: str | None) -> str:
    if prompt:
        return prompt
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from llama_index.finetuning.embeddings.common import DEFAULT_QA_GENERATE_PROMPT_TMPL
    return DEFAULT_QA_GENERATE_PROMPT_TMPL


def llm_settings(llm) -> dict:
    """What decides the LLM's answers: class, model, endpoint, sampling, and every other field
    (credentials as one marker in the store's key, whatever their value; redacted in its manifest)."""
    try:
        settings = llm.to_dict()
    except Exception:  # noqa: BLE001 - an LLM class without a serialiser: its type and model
        settings = {"class": type(llm).__name__, "model": getattr(llm, "model", None)}
    return {"class": f"{type(llm).__module__}.{type(llm).__qualname__}", **{k: v for k, v in settings.items() if k != "client"}}


def answer_store(cache_dir: str, llm) -> Path:
    """The folder of this LLM's answers, one file per prompt: keyed by every setting (a credential by its
    presence, not its value), the content of a local model's files, and the versions of the client library and what
    it requires. A manifest says what made it (`python -m runner.cache list`)."""
    settings = llm_settings(llm)
    libraries = library_versions({type(llm).__module__.split(".")[0]})
    material = {"settings": key_view(settings), "files": input_files(settings), "libraries": libraries}
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]
    store = Path(cache_dir) / key
    if (store / "manifest.json").is_file():
        touch(store)  # in use: `cache prune --older-than` ages answers by their last use, not their creation
    else:
        write_json_atomic(
            {
                "stage": "llm_questions",
                "key": key,
                "created": time.time(),
                "config": redact(settings),
                "files": material["files"],
                "libraries": libraries,
            },
            store / "manifest.json",
        )
    return store


def endpoint_of(llm) -> str:
    for attr in ("api_base", "base_url", "model_name", "model"):
        value = getattr(llm, attr, None)
        if value:
            return f"{type(llm).__name__} at {value}" if attr in ("api_base", "base_url") else f"{type(llm).__name__} {value}"
    return type(llm).__name__


async def _ask(llm, query: str) -> str:
    """A chat model gets the prompt as a user message (a local instruct model then goes through
    its tokenizer's chat template); a completion model gets it as is."""
    if llm.metadata.is_chat_model:
        from llama_index.core.llms import ChatMessage

        return (await llm.achat([ChatMessage(role="user", content=query)])).message.content or ""
    return (await llm.acomplete(query)).text


@dataclass
class _ChunkAsker:
    """Asks the LLM for one chunk's questions: from the answer store when it has them, else with
    retries and backoff; counts the chunks that failed and those reused from earlier runs."""

    llm: object
    template: str
    num_questions: int
    retries: int
    backoff_s: float
    store: Path | None
    bar: tqdm
    failed: int = 0
    reused: int = 0

    def query(self, node: TextNode) -> str:
        return self.template.format(context_str=node.get_content(), num_questions_per_chunk=self.num_questions)

    def stored_answer_path(self, query: str) -> Path | None:
        # the raw answer is stored, keyed by the exact prompt; cleaning runs on every read, so a
        # change to the cleaning (or to num_questions_per_chunk) never serves stale questions
        return self.store / f"{hashlib.sha256(query.encode()).hexdigest()[:32]}.json" if self.store else None

    def reuse(self, path: Path | None) -> list[str] | None:
        """The questions of an answer stored by an earlier run, if any (counted as reused)."""
        if not (path and path.is_file()):
            return None
        questions = clean_questions(json.loads(path.read_text()).get("answer", ""), self.num_questions)
        if not questions:
            return None
        self.reused += 1
        self.bar.update()
        return questions

    async def one(self, node: TextNode, sem: asyncio.Semaphore) -> tuple[str, list[str] | None]:
        query = self.query(node)
        path = self.stored_answer_path(query)
        questions = self.reuse(path)
        if questions:
            return node.node_id, questions
        async with sem:
            for attempt in range(self.retries + 1):
                try:
                    return node.node_id, await self.try_once(query, path)
                except Exception as err:  # noqa: BLE001 - any failure of one chunk: retry, then skip
                    if attempt == self.retries:
                        self.give_up(node, err)
                        return node.node_id, None
                    await self.wait_to_retry(node, attempt, err)
        return node.node_id, None

    async def try_once(self, query: str, path: Path | None) -> list[str]:
        answer = await _ask(self.llm, query)
        questions = clean_questions(answer, self.num_questions)
        if not questions:
            raise ValueError(f"no question in the answer: {answer[:80]!r}")
        if path:
            write_json_atomic({"answer": answer}, path)
        self.bar.update()
        return questions

    def give_up(self, node: TextNode, err: Exception) -> None:
        log.warning("LLM failed on chunk %s after %d tries: %s", node.node_id, self.retries + 1, first_line(err))
        self.failed += 1
        self.bar.update()

    async def wait_to_retry(self, node: TextNode, attempt: int, err: Exception) -> None:
        log.info(
            "LLM try %d on chunk %s failed (%s); retrying in %.1fs",
            attempt + 1,
            node.node_id,
            first_line(err, 200),
            self.backoff_s * 2**attempt,
        )
        await asyncio.sleep(self.backoff_s * 2**attempt)


async def _ask_all(chosen: list[TextNode], max_concurrency: int, asker: _ChunkAsker) -> list:
    sem = asyncio.Semaphore(max_concurrency)
    return await asyncio.gather(*(asker.one(n, sem) for n in chosen))


def _dataset(chosen: list[TextNode], results: list) -> EmbeddingQAFinetuneDataset:
    """Each chunk's questions, in the order of `results`: `<node id>/q<j>` -> question."""
    texts = {n.node_id: n.get_content() for n in chosen}
    queries, corpus, relevant = {}, {}, {}
    for node_id, questions in results:
        for j, q in enumerate(questions or []):
            qid = f"{node_id}/q{j}"
            queries[qid], relevant[qid] = q, [node_id]
            corpus[node_id] = texts[node_id]
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=corpus, relevant_docs=relevant)


def llm_pairs(
    nodes: list[TextNode],
    *,
    llm,
    num_questions_per_chunk: int = 2,
    prompt: str | None = None,
    max_chunks: int | None = None,
    max_concurrency: int = 8,
    retries: int = 3,
    backoff_s: float = 1.0,
    cache_dir: str | None = None,
    report: dict | None = None,
) -> EmbeddingQAFinetuneDataset:
    """Questions for each of `nodes` (the first `max_chunks` by id); `report`, when given, gets
    the counts: chunks sent, failed (skipped), reused from earlier runs, questions."""
    template = _prompt_template(prompt)
    chosen = sorted(nodes, key=lambda n: n.node_id)[:max_chunks]
    store = answer_store(cache_dir, llm) if cache_dir else None
    with tqdm(total=len(chosen), desc="LLM questions", unit="chunk") as bar:
        asker = _ChunkAsker(llm, template, num_questions_per_chunk, retries, backoff_s, store, bar)
        results = asyncio.run(_ask_all(chosen, max_concurrency, asker))
    if chosen and asker.failed == len(chosen):
        raise RagtuneError(
            f"the LLM ({endpoint_of(llm)}) failed on all {len(chosen)} chunks, each tried {retries + 1} "
            "times; check that the server is up and the model name is right (see the warnings above)."
        )
    dataset = _dataset(chosen, results)
    log.info(
        "LLM questions: %d chunks, %d questions, %d chunks failed, %d reused from earlier runs",
        len(chosen),
        len(dataset.queries),
        asker.failed,
        asker.reused,
    )
    if report is not None:
        report.update(chunks=len(chosen), failed_chunks=asker.failed, reused_chunks=asker.reused, questions=len(dataset.queries))
    return dataset
