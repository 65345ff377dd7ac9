"""LLaVA's ``group_by_modality_length`` sampling, per rank, with modality-pure batches.

Why group: a batch mixing image and text-only samples pads the text ones with nothing useful
and runs the vision tower for a fraction of the batch; a batch of similar lengths wastes
little padding. LLaVA shuffles each modality, cuts it into megabatches of world_size x
batch_size, sorts each megabatch by length and deals it to the ranks, then shuffles the
megabatches. Its last "additional batch" mixes both modalities' leftovers; here leftovers stay
pure: a short last megabatch is dealt as smaller batches, and one too short to give every rank
a sample is merged with the one before and the two are split in halves.

Every rank computes the same global plan from (seed, epoch) and takes its own batch of each
step, so all ranks run the same number of steps and a resumed run skips the steps it already
took (`set_epoch(epoch, skip_batches=n)`). Every step is pure across ranks: all ranks' batches
of a step hold the same modality. Each index appears exactly once per epoch, except in a
corner that cannot be both (a modality with fewer samples than ranks, or batch_size 1 with a
leftover shorter than world_size): that modality's few leftover samples make a final step of
their own, one per rank, repeated as DistributedSampler repeats. Purity across ranks matters
beyond padding: ZeRO-3 gathers weights collectively, so ranks must call the same modules in
the same order (the model's blank-image pass makes the order independent of the batch too;
see som.train.model.BlankImagePass). Without modality grouping, batches may mix freely.

The sampler yields batches (lists of indices): use it as ``DataLoader(dataset,
batch_sampler=sampler, collate_fn=SupervisedCollator(...))``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

Step = list[list[int]]  # one batch per rank


class ModalityLengthGroupedSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's batches of an epoch.

    Arguments:
        modality_lengths: per sample, its length; positive with an image, negative without
            (`SupervisedDataset.modality_lengths`).
        batch_size: samples per rank and step (the per-device micro batch).
        world_size, rank: the data-parallel group and this process's place in it.
        seed: with the epoch, fixes the plan on every rank.
        group_by_modality: False treats all samples as one group (length grouping only)."""

    def __init__(
        self,
        modality_lengths: Sequence[int],
        *,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_modality: bool = True,
    ) -> None:
        lengths = np.asarray(modality_lengths, dtype=np.int64)
        if lengths.size == 0:
            raise ValueError("no samples to sample from")
        if (lengths == 0).any():
            raise ValueError(
                f"sample {int(np.flatnonzero(lengths == 0)[0])} has length 0; "
                "lengths are signed by modality and never 0"
            )
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got batch_size="
                f"{batch_size}, rank={rank}, world_size={world_size}"
            )
        self.lengths = lengths
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.epoch = 0
        self.skip_batches = 0
        self._plan: tuple[int, list[Step]] | None = None

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Plan `epoch`; on resume, `skip_batches` steps already taken are left out."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def plan(self) -> list[Step]:
        """The epoch's steps, each one batch per rank: identical on every rank."""
        if self._plan is None or self._plan[0] != self.epoch:
            self._plan = (self.epoch, self._make_plan(self.epoch))
        return self._plan[1]

    @property
    def batches_per_epoch(self) -> int:
        return len(self.plan())

    def __len__(self) -> int:
        return max(0, len(self.plan()) - self.skip_batches)

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan()[self.skip_batches :]:
            yield step[self.rank]

    # ------------------------------------------------------------------ planning

    def _make_plan(self, epoch: int) -> list[Step]:
        rng = np.random.default_rng([self.seed, epoch])
        everything = np.arange(len(self.lengths))
        groups = (
            [everything[self.lengths > 0], everything[self.lengths < 0]] if self.group_by_modality else [everything]
        )
        steps: list[Step] = []
        leftovers: list[list[int]] = []
        for group in groups:
            shuffled = rng.permutation(group)
            sizes, left = step_sizes(len(shuffled), self.world_size, self.batch_size)
            start = 0
            for size in sizes:
                steps.append(self._deal(shuffled[start : start + size]))
                start += size
            if left:
                leftovers.append(shuffled[len(shuffled) - left :].tolist())
        steps = [steps[k] for k in rng.permutation(len(steps))]
        for orphans in leftovers:  # one modality's each: their steps stay pure across ranks
            steps += self._orphan_steps(orphans)
        return steps

    def _deal(self, indices: np.ndarray) -> Step:
        """Longest first, each sample to the rank whose batch has the least total length so
        far and still has room (LLaVA's split_to_even_chunks); sizes differ by at most one."""
        size, extra = divmod(len(indices), self.world_size)
        room = [size + (1 if k < extra else 0) for k in range(self.world_size)]
        totals = [0] * self.world_size
        batches: Step = [[] for _ in range(self.world_size)]
        lengths = np.abs(self.lengths[indices])
        for position in np.argsort(-lengths, kind="stable"):
            rank = min((k for k in range(self.world_size) if room[k]), key=lambda k: totals[k])
            batches[rank].append(int(indices[position]))
            totals[rank] += int(lengths[position])
            room[rank] -= 1
        return batches

    def _orphan_steps(self, orphans: list[int]) -> list[Step]:
        """One group's leftovers (fewer than ranks): repeated up to one per rank, longest first."""
        orphans.sort(key=lambda i: (self.lengths[i] < 0, -abs(int(self.lengths[i]))))
        capacity = self.world_size * self.batch_size
        count = -(-len(orphans) // capacity)
        needed = count * self.world_size
        padded = [orphans[k % len(orphans)] for k in range(max(needed, len(orphans)))]
        if len(padded) > len(orphans):
            log.info(
                "epoch %d: %d leftover samples repeated so every rank has one", self.epoch, len(padded) - len(orphans)
            )
        steps = []
        for chunk in np.array_split(np.asarray(padded), count):
            steps.append([part.tolist() for part in np.array_split(chunk, self.world_size)])
        return steps


def step_sizes(count: int, world_size: int, batch_size: int) -> tuple[list[int], int]:
    """How `count` samples of one group split into steps that give every rank 1..batch_size
    samples: full steps, then a short one; a last step too short for every rank is merged with
    the one before and halved. Returns (step sizes, samples left over)."""
    capacity = world_size * batch_size
    full, rest = divmod(count, capacity)
    sizes = [capacity] * full
    if rest >= world_size:
        sizes.append(rest)
    elif rest and full and batch_size >= 2:  # capacity + rest >= 2 * world_size
        total = capacity + rest
        sizes[-1:] = [total - total // 2, total // 2]
    else:
        return sizes, rest
    return sizes, 0
