"""Training batches: no duplicate texts in a batch (in-batch negatives stay negatives), and,
with `group_by_length`, texts of similar length together so a batch pads less.

A batch is padded to its longest text, so random batches of chunks that run from a few words to
the model's limit spend half their tokens on padding (measured on the default run's pairs: 48% real
passage tokens at batch 32). Sorting within megabatches of a few batches, as transformers'
`LengthGroupedSampler` does, cuts that waste while batches still differ from epoch to epoch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

MEGABATCH = 8  # batches sorted together: 8 keeps ~86% of passage tokens real, and batches still mix


def text_lengths(dataset, tokenizer=None, max_length: int | None = None) -> np.ndarray:
    """Per row, the longest passage (all columns but the anchor: the padding that matters, queries
    are short) in tokens as the model will see them (cut at `max_length`), or in characters
    without a tokenizer. Passages cut to the same length tie, and ties keep the shuffled order."""
    columns = [c for c in dataset.column_names if c != "anchor"] or list(dataset.column_names)
    longest = np.zeros(len(dataset), dtype=np.int64)
    for column in columns:
        texts = [str(v) for v in dataset[column]]
        if tokenizer is None:
            lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        else:
            ids = tokenizer(texts, truncation=max_length is not None, max_length=max_length)["input_ids"]
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        longest = np.maximum(longest, lengths)
    return longest


def length_grouped(order, lengths: np.ndarray, batch_size: int) -> list[int]:
    """A shuffled `order` cut into megabatches of MEGABATCH batches, each sorted longest first."""
    size = batch_size * MEGABATCH
    return [
        int(i) for start in range(0, len(order), size) for i in sorted(order[start : start + size], key=lambda i: -lengths[i])
    ]


def real_token_share(lengths: np.ndarray, batch_size: int, grouped: bool, seed: int = 0) -> float:
    """Share of the padded passage tokens that are real, for one seeded epoch of random or
    length-grouped batches (duplicates ignored): what the log reports."""
    order = np.random.default_rng(seed).permutation(len(lengths))
    if grouped:
        order = np.array(length_grouped(order, lengths, batch_size))
    padded = sum(
        int(lengths[order[i : i + batch_size]].max()) * len(order[i : i + batch_size]) for i in range(0, len(order), batch_size)
    )
    return float(lengths.sum()) / padded if padded else 1.0


class NoDuplicateBatches(NoDuplicatesBatchSampler):
    """sentence-transformers' no-duplicates sampler, with full batches and, given `lengths`, a
    length-grouped order.

    `lengths`: one per row (text_lengths with the model's tokenizer; the trainer passes it through
    functools.partial), or None for a plain shuffled order.
    Each pass: a seeded shuffle (with `lengths`: cut into megabatches of MEGABATCH batches, each sorted
    by length); batches are filled greedily in that order, skipping a row whose text is already in the
    batch (it goes to a later batch). The greedy fill leaves the rows it skipped last (two questions
    about one chunk) for the end, where they used to make extra batches of one or two rows: a row
    alone has no in-batch negative (MultipleNegativesRankingLoss is 0, the step is wasted) and the
    epoch runs longer than the steps the trainer planned. `full_batches` swaps them into full batches
    for rows that fit the last one, and a last batch of a single row takes half of a full batch. The
    batches are then shuffled, with the longest one first so an out-of-memory shows at the first
    step, not the last.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns=None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        lengths=None,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        self.lengths = None if lengths is None else np.asarray(lengths)

    def _iter_one_pass(self, get_sample_values: Callable, has_overlap: Callable) -> Iterator[list[int]]:
        order = torch.randperm(len(self.dataset), generator=self.generator).numpy()
        remaining = [int(i) for i in order] if self.lengths is None else length_grouped(order, self.lengths, self.batch_size)
        batches = []
        while remaining:
            batch, values, deferred = [], set(), []
            for k, index in enumerate(remaining):
                if len(batch) == self.batch_size:
                    deferred.extend(remaining[k:])
                    break
                sample = get_sample_values(index)
                if has_overlap(sample, values):
                    deferred.append(index)
                    continue
                batch.append(index)
                values.update(sample)
            remaining = deferred
            batches.append(batch)
        batches = full_batches(batches, self.batch_size, lambda i: set(get_sample_values(i)))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if not batches:
            return
        longest = 0 if self.lengths is None else max(range(len(batches)), key=lambda b: self.lengths[batches[b]].max())
        rest = [b for b in range(len(batches)) if b != longest]
        shuffled = [rest[i] for i in torch.randperm(len(rest), generator=self.generator).tolist()]
        for b in [longest, *shuffled]:
            yield batches[b]


def full_batches(batches: list[list[int]], batch_size: int, values_of: Callable[[int], set]) -> list[list[int]]:
    """`batches` (the greedy fill: full ones, then the rows it skipped in short ones) as full batches
    and at most one short one, where swaps allow: a skipped row takes the place of a full batch's row
    that does not clash with the short batch, and the row it displaced joins the short batch. A short
    batch of a single row then takes rows from a full one until the two are even. No batch ever holds
    a text twice; a row no swap can place keeps a short batch of its own."""
    full = [list(b) for b in batches if len(b) == batch_size]
    counts: list[Counter | None] = [None] * len(full)  # each text's rows in each full batch, counted once needed
    short: list[list[int]] = []
    short_values: list[set] = []
    for row in (i for b in batches if len(b) < batch_size for i in b):
        mine = values_of(row)
        room = [k for k in range(len(short)) if len(short[k]) < batch_size]
        home = next((k for k in room if mine.isdisjoint(short_values[k])), None)
        if home is None and room and _swap_in(row, mine, full, counts, short[room[0]], short_values[room[0]], values_of):
            continue
        if home is None:
            short.append([])
            short_values.append(set())
            home = len(short) - 1
        short[home].append(row)
        short_values[home] |= mine
    if len(short) == 1 and len(short[0]) == 1 and full:
        _even_out(full[-1], short[0], short_values[0], values_of)
    return full + short


def _swap_in(row, mine: set, full: list, counts: list, short: list, short_values: set, values_of) -> bool:
    """Put `row` into a full batch in place of a row that fits `short`, which takes that row."""
    for k, batch in enumerate(full):
        if counts[k] is None:
            counts[k] = Counter(v for i in batch for v in values_of(i))
        count = counts[k]
        for j, other in enumerate(batch):
            theirs = values_of(other)
            # `row` may share no text with the batch's other rows; `other` none with the short batch
            if theirs.isdisjoint(short_values) and all(count[v] - (v in theirs) == 0 for v in mine):
                batch[j] = row
                count.subtract(theirs)
                count.update(mine)
                short.append(other)
                short_values |= theirs
                return True
    return False


def _even_out(full: list[int], short: list[int], short_values: set, values_of) -> None:
    """Move rows that fit `short` from the end of `full` until the two differ by at most one row."""
    for other in reversed(list(full)):
        if len(full) - len(short) <= 1:
            return
        theirs = values_of(other)
        if theirs.isdisjoint(short_values):
            full.remove(other)
            short.append(other)
            short_values |= theirs
