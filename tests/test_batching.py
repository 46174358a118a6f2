"""The no-duplicates batch sampler: every row once per epoch, no text twice in a batch, full batches
(no stray batch of one row), and, length-grouped, less padding than random batches, a different order
each epoch, the longest batch first."""

from __future__ import annotations

import random

import numpy as np
import torch
from datasets import Dataset

from runner.stages.finetune.batching import MEGABATCH, NoDuplicateBatches, full_batches, real_token_share, text_lengths


def _dataset(n=300, seed=0):
    rng = random.Random(seed)
    # passages of 1..200 words; every 10th row repeats the previous row's passage (two questions, one chunk)
    anchors, positives = [], []
    for i in range(n):
        anchors.append(f"question {i}")
        positives.append(positives[-1] if i % 10 == 9 else " ".join(["w"] * rng.randint(1, 200)) + f" {i}")
    return Dataset.from_dict({"anchor": anchors, "positive": positives})


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(iter(sampler))


def _padded(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_each_row_once_no_duplicate_text_and_less_padding():
    data = _dataset()
    sampler = NoDuplicateBatches(
        data, batch_size=16, drop_last=False, generator=torch.Generator(), seed=7, lengths=text_lengths(data)
    )
    batches = _epoch(sampler, 0)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))
    for b in batches:
        texts = [data[i]["positive"] for i in b]
        assert len(set(texts)) == len(texts)
    lengths = [len(p) for p in data["positive"]]
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(7)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    assert _padded(batches, lengths) < 0.8 * _padded(random_batches, lengths)
    # the first batch holds the longest passage, so an out-of-memory shows at step one
    assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_seeded_and_different_each_epoch():
    data = _dataset()

    def sampler():
        return NoDuplicateBatches(
            data, batch_size=16, drop_last=True, generator=torch.Generator(), seed=3, lengths=text_lengths(data)
        )

    first, again = _epoch(sampler(), 0), _epoch(sampler(), 0)
    assert first == again
    second = _epoch(sampler(), 1)
    assert second != first
    assert all(len(b) == 16 for b in first)
    # batches mix rows from across the data set: a megabatch is MEGABATCH batches, not the whole set
    assert len(data) > 16 * MEGABATCH
    assert {frozenset(b) for b in first} != {frozenset(b) for b in second}


def test_lengths_are_tokens_as_the_model_sees_them(tiny_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model), device="cpu")
    data = Dataset.from_dict(
        {
            "anchor": ["a", "b", "c"],
            "positive": ["short", " ".join(["word"] * 40), " ".join(["word"] * 400)],
            "negative": [" ".join(["word"] * 30), "x", "y"],
        }
    )
    lengths = text_lengths(data, model.tokenizer, max_length=64)
    # the longest passage column counts; a passage past max_length is cut there (and ties with others cut)
    assert lengths[0] == len(model.tokenizer(" ".join(["word"] * 30))["input_ids"])
    assert lengths[1] == len(model.tokenizer(" ".join(["word"] * 40))["input_ids"])
    assert lengths[2] == 64
    assert list(text_lengths(data)) == [len(" ".join(["word"] * 30)), len(" ".join(["word"] * 40)), 1999]


def test_real_token_share_counts_padding():
    lengths = np.array([10, 10, 100, 100])
    # grouped: [100, 100] and [10, 10] -> no padding; random batches of 2 pad at least one short row
    assert real_token_share(lengths, 2, grouped=True) == 1.0
    assert real_token_share(lengths, 4, grouped=False) == 220 / 400


def _many_questions_per_passage(n=203, per_passage=6):
    """`per_passage` questions about each chunk, as SciFact's judgements have: a length-grouped order
    puts a chunk's rows side by side, and the greedy fill skips all but one of them."""
    chunks = [f"passage {c} " + "w " * (c % 29) for c in range(n // per_passage + 1)]
    anchors = [f"question {i}" for i in range(n)]
    return Dataset.from_dict({"anchor": anchors, "positive": [chunks[i // per_passage] for i in range(n)]})


def _sizes_each_epoch(data, lengths, seeds=range(6)):
    for seed in seeds:
        sampler = NoDuplicateBatches(data, 16, drop_last=False, generator=torch.Generator(), seed=seed, lengths=lengths)
        for epoch in range(2):
            batches = _epoch(sampler, epoch)
            assert sorted(i for b in batches for i in b) == list(range(len(data)))  # every row once
            assert all(len({data[i]["positive"] for i in b}) == len(b) for b in batches)  # no text twice
            yield len(sampler), sorted(len(b) for b in batches)


def test_rows_skipped_for_a_shared_passage_are_swapped_into_full_batches_not_left_alone(monkeypatch):
    from runner.stages.finetune import batching

    data = _many_questions_per_passage()
    for lengths in (None, text_lengths(data)):  # a shuffled order and a length-grouped one
        for promised, sizes in _sizes_each_epoch(data, lengths):
            # as many batches as the epoch promised the trainer: 12 full ones and the 11 rows left
            assert promised == 13 and sizes == [11] + [16] * 12
    # the trainer's random batches are these too (length grouping off, or not worth it)
    from runner.stages.finetune.hf_trainer import batch_sampler

    assert batch_sampler(data, None, 16, group_by_length=False, seed=0)[0] is NoDuplicateBatches
    # the greedy fill alone leaves the skipped rows in extra short batches: what the swaps repair
    monkeypatch.setattr(batching, "full_batches", lambda batches, *_: batches)
    unrepaired = [sizes for _, sizes in _sizes_each_epoch(data, text_lengths(data))]
    assert any(len(sizes) > 13 and sizes[0] <= 2 for sizes in unrepaired)


def test_a_last_batch_of_one_row_takes_half_of_a_full_one():
    # 33 rows in batches of 16: 16, 16 and a row alone, which has no in-batch negative (its loss is 0)
    values = {i: {f"q{i}", f"p{i}"} for i in range(33)}
    batches = full_batches([list(range(16)), list(range(16, 32)), [32]], 16, values.__getitem__)
    assert sorted(len(b) for b in batches) == [8, 9, 16]
    assert sorted(i for b in batches for i in b) == list(range(33))


def test_full_batches_swaps_without_putting_a_text_twice_in_a_batch():
    # rows 4 and 5 share passage "p" with row 0 (in the full batch) and with each other
    values = {0: {"q0", "p"}, 1: {"q1", "a"}, 2: {"q2", "b"}, 3: {"q3", "c"}, 4: {"q4", "p"}, 5: {"q5", "p"}, 6: {"q6", "d"}}
    batches = full_batches([[0, 1, 2, 3], [6, 4], [5]], 4, values.__getitem__)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        texts = [v for i in b for v in values[i]]
        assert len(texts) == len(set(texts))
    # three rows share "p": three batches at least, however the rows are swapped
    assert len(batches) == 3 and len(batches[0]) == 4
