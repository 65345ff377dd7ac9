"""Modality-grouped batches per rank: each index once per epoch, pure batches, the same plan on
every rank from (seed, epoch), and resumable."""

from __future__ import annotations

import numpy as np
import pytest

from som.train.sampler import ModalityLengthGroupedSampler, step_sizes


def mixed_lengths(images: int, texts: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.integers(1, 500, images)] + [-int(x) for x in rng.integers(1, 500, texts)]
    return [lengths[k] for k in rng.permutation(len(lengths))]


def rank_batches(lengths: list[int], world_size: int, **kwargs) -> list[list[list[int]]]:
    out = []
    for rank in range(world_size):
        sampler = ModalityLengthGroupedSampler(lengths, world_size=world_size, rank=rank, **kwargs)
        sampler.set_epoch(kwargs.get("seed", 0) + 3)
        out.append(list(sampler))
        assert len(sampler) == len(out[-1])
    return out


@pytest.mark.parametrize(
    ("images", "texts", "batch_size", "world_size"),
    [
        (37, 23, 4, 2),  # short last megabatches in both modalities
        (33, 17, 4, 2),  # a leftover (1) too short for every rank: merged with the step before
        (64, 0, 4, 2),  # image-only (stage 1)
        (5, 3, 4, 1),
        (103, 29, 3, 4),
    ],
)
def test_every_index_once_across_ranks_in_pure_batches(
    images: int, texts: int, batch_size: int, world_size: int
) -> None:
    lengths = mixed_lengths(images, texts)
    per_rank = rank_batches(lengths, world_size, batch_size=batch_size, seed=7)
    assert len({len(batches) for batches in per_rank}) == 1  # ranks step together
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(seen) == list(range(len(lengths)))
    for batches in per_rank:
        for batch in batches:
            assert 1 <= len(batch) <= batch_size
            assert len({lengths[i] > 0 for i in batch}) == 1, batch
    steps = list(zip(*per_rank, strict=False))
    full = [step for step in steps if all(len(batch) == batch_size for batch in step)]
    assert len(full) >= (images // (batch_size * world_size)) + (texts // (batch_size * world_size)) - 2


def test_steps_are_length_sorted_megabatches_balanced_across_ranks() -> None:
    lengths = [10 * k for k in range(1, 9)]  # one megabatch of 8, 2 ranks x 4
    batches = rank_batches(lengths, 2, batch_size=4)
    totals = sorted(sum(lengths[i] for i in batch[0]) for batch in batches)
    assert totals == [180, 180]  # greedy longest-first: 80+50+40+10 and 70+60+30+20


def test_same_plan_for_seed_and_epoch_another_for_another_epoch_or_seed() -> None:
    lengths = mixed_lengths(200, 120)

    def plan(seed: int, epoch: int) -> list[list[int]]:
        sampler = ModalityLengthGroupedSampler(lengths, batch_size=4, world_size=2, rank=1, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert plan(0, 0) == plan(0, 0)
    assert plan(0, 0) != plan(0, 1)
    assert plan(0, 0) != plan(1, 0)
    assert sorted(map(sorted, plan(0, 0))) != sorted(map(sorted, plan(0, 1)))  # other batches too


def test_resume_skips_the_batches_already_taken() -> None:
    lengths = mixed_lengths(50, 30)
    sampler = ModalityLengthGroupedSampler(lengths, batch_size=4, world_size=2, rank=0, seed=3)
    sampler.set_epoch(2)
    everything = list(sampler)
    sampler.set_epoch(2, skip_batches=4)
    assert list(sampler) == everything[4:] and len(sampler) == len(everything) - 4
    assert sampler.batches_per_epoch == len(everything)


def test_without_grouping_batches_may_mix_and_still_cover_everything() -> None:
    lengths = mixed_lengths(40, 40)
    per_rank = rank_batches(lengths, 2, batch_size=4, group_by_modality=False)
    seen = sorted(i for batches in per_rank for batch in batches for i in batch)
    assert seen == list(range(80))
    assert any(len({lengths[i] > 0 for i in batch}) == 2 for batch in per_rank[0] + per_rank[1])


def test_fewer_samples_than_ranks_are_repeated_so_every_rank_steps() -> None:
    per_rank = rank_batches([5, 9, 4], 4, batch_size=2)
    assert [len(batches) for batches in per_rank] == [1, 1, 1, 1]
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(set(seen)) == [0, 1, 2] and len(seen) == 4


def test_step_sizes() -> None:
    assert step_sizes(20, 2, 4) == ([8, 8, 4], 0)
    assert step_sizes(17, 2, 4) == ([8, 5, 4], 0)  # 8 + 1 would leave a rank empty: halved
    assert step_sizes(9, 2, 1) == ([2, 2, 2, 2], 1)  # batch size 1 cannot split one sample
    assert step_sizes(1, 2, 4) == ([], 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modality_lengths": []}, "no samples"),
        ({"modality_lengths": [3, 0, -2]}, "sample 1 has length 0"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"modality_lengths": [1, -1], "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        ModalityLengthGroupedSampler(**arguments)


def _modality(lengths: list[int], batch: list[int]) -> set[bool]:
    return {lengths[i] > 0 for i in batch}


@pytest.mark.parametrize(
    ("images", "texts", "batch_size", "world_size"),
    [
        (1, 1, 4, 2),  # one sample per modality: each makes its own step, repeated per rank
        (9, 3, 1, 2),  # batch size 1: one image and one text left over
        (13, 2, 2, 4),  # fewer texts than ranks
        (17, 5, 1, 4),  # leftovers of 1 in both modalities with 4 ranks
        (31, 7, 3, 4),
    ],
)
def test_every_step_is_one_modality_on_every_rank_at_the_epoch_edges(
    images: int, texts: int, batch_size: int, world_size: int
) -> None:
    """ZeRO-3 ranks must call the same modules at each step: a step never gives one rank
    images and another text, not even the leftover steps at the end of an epoch."""
    lengths = mixed_lengths(images, texts, seed=images)
    for epoch in range(3):
        per_rank = []
        for rank in range(world_size):
            sampler = ModalityLengthGroupedSampler(
                lengths, batch_size=batch_size, world_size=world_size, rank=rank, seed=1
            )
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert len({len(batches) for batches in per_rank}) == 1
        for step in zip(*per_rank, strict=False):
            assert all(1 <= len(batch) <= batch_size for batch in step)
            assert len(set().union(*(_modality(lengths, batch) for batch in step))) == 1, step
        seen = [i for batches in per_rank for batch in batches for i in batch]
        assert set(seen) == set(range(len(lengths)))
        # only leftovers repeat, fewer than one per rank for each modality
        assert len(seen) - len(lengths) <= 2 * (world_size - 1)
