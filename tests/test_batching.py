"""The length-grouped, no-duplicates batch sampler: every row once per epoch, no text twice in a
batch, less padding than random batches, a different order each epoch, the longest batch first."""

from __future__ import annotations

import random

import torch
from datasets import Dataset

from runner.batching import MEGABATCH, LengthGroupedNoDuplicatesBatchSampler


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
    sampler = LengthGroupedNoDuplicatesBatchSampler(data, batch_size=16, drop_last=False,
                                                    generator=torch.Generator(), seed=7)
    batches = _epoch(sampler, 0)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))
    for b in batches:
        texts = [data[i]["positive"] for i in b]
        assert len(set(texts)) == len(texts)
    lengths = [len(p) for p in data["positive"]]
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(7)).tolist()
    random_batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    assert _padded(batches, lengths) < 0.8 * _padded(random_batches, lengths)
    # the first batch holds the longest passage, so an out-of-memory shows at step one
    assert max(lengths[i] for i in batches[0]) == max(lengths)


def test_seeded_and_different_each_epoch():
    data = _dataset()

    def sampler():
        return LengthGroupedNoDuplicatesBatchSampler(data, batch_size=16, drop_last=True,
                                                     generator=torch.Generator(), seed=3)

    first, again = _epoch(sampler(), 0), _epoch(sampler(), 0)
    assert first == again
    second = _epoch(sampler(), 1)
    assert second != first
    assert all(len(b) == 16 for b in first)
    # batches mix rows from across the data set: a megabatch is MEGABATCH batches, not the whole set
    assert len(data) > 16 * MEGABATCH
    assert {frozenset(b) for b in first} != {frozenset(b) for b in second}
