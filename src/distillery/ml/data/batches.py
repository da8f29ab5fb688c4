"""Datasets, dynamic-padding collation and a length-bucketed distributed batch sampler.

The sampler builds the same list of *global* batches on every rank and hands each rank
a strided slice of each one, so a run on W ranks sees exactly the batches a 1-rank run
sees at every step. That is what makes 1-rank and W-rank training interchangeable.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("input_ids", "attention_mask", "label")
TEACHER_COLUMN = "teacher_logits"
TEACHER_POOLED_COLUMN = "teacher_pooled"


class TokenDataset(Dataset):
    """Pre-tokenized, unpadded examples held as small numpy arrays.

    Args:
        frame: Columns ``input_ids``, ``attention_mask``, ``label`` and, optionally,
            ``teacher_logits`` (one list of C floats per row) and
            ``teacher_pooled`` (the teacher's pooled embedding, H floats per row).
        with_teacher: Require and return ``teacher_logits`` (and ``teacher_pooled``
            when the frame has it).

    Raises:
        ValueError: If a column is missing, a row is empty or a mask does not match
            its ids.
    """

    def __init__(self, frame: pd.DataFrame, with_teacher: bool = False) -> None:
        required = (
            (*REQUIRED_COLUMNS, TEACHER_COLUMN) if with_teacher else REQUIRED_COLUMNS
        )
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(f"training frame lacks columns {missing}")
        # np.array copies: arrays read from parquet are read-only, which torch rejects.
        self.input_ids = [np.array(x, dtype=np.int64) for x in frame["input_ids"]]
        self.attention_mask = [
            np.array(x, dtype=np.int64) for x in frame["attention_mask"]
        ]
        self.labels = frame["label"].to_numpy(dtype=np.int64, copy=True)
        self.teacher_logits: np.ndarray | None = None
        self.teacher_pooled: np.ndarray | None = None
        if with_teacher:
            self.teacher_logits = np.stack(
                [np.asarray(x, dtype=np.float32) for x in frame[TEACHER_COLUMN]]
            )  # (N, C)
            if TEACHER_POOLED_COLUMN in frame.columns:
                self.teacher_pooled = np.stack(
                    [
                        np.asarray(x, dtype=np.float32)
                        for x in frame[TEACHER_POOLED_COLUMN]
                    ]
                )  # (N, H)
        for i, (ids, mask) in enumerate(
            zip(self.input_ids, self.attention_mask, strict=True)
        ):
            if ids.size == 0 or ids.shape != mask.shape:
                raise ValueError(
                    f"row {i}: input_ids has {ids.size} tokens, "
                    f"attention_mask {mask.size}; need equal, non-zero lengths"
                )
        self.lengths = np.asarray([ids.size for ids in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def fingerprint(self) -> str:
        """Return a sha256 over every example's normalized arrays.

        Checkpoint hashes include it, so a checkpoint is never resumed on other data.
        Hashing the normalized arrays (not the frame) makes it independent of how the
        frame was stored (python lists vs numpy, parquet round trips).
        """
        digest = hashlib.sha256(f"n={len(self)}".encode())
        for ids, mask in zip(self.input_ids, self.attention_mask, strict=True):
            # The length goes in so that the concatenation is unambiguous.
            digest.update(f"{ids.size};".encode())
            digest.update(ids.tobytes())
            digest.update(mask.tobytes())
        digest.update(self.labels.tobytes())
        if self.teacher_logits is not None:
            digest.update(self.teacher_logits.tobytes())
        if self.teacher_pooled is not None:
            digest.update(self.teacher_pooled.tobytes())
        return digest.hexdigest()

    def __getitem__(self, index: int) -> dict[str, np.ndarray | int]:
        item: dict[str, np.ndarray | int] = {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "label": int(self.labels[index]),
        }
        if self.teacher_logits is not None:
            item["teacher_logits"] = self.teacher_logits[index]
        if self.teacher_pooled is not None:
            item["teacher_pooled"] = self.teacher_pooled[index]
        return item


@dataclass(frozen=True)
class PadCollator:
    """Pad a list of examples to the longest one in the batch.

    A class rather than a closure so that DataLoader workers can pickle it.

    Args:
        pad_id: Token id written into padded positions (the tokenizer's pad id).
    """

    pad_id: int = 0

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Collate examples from :class:`TokenDataset`.

        Args:
            examples: Items with ``input_ids``, ``attention_mask``, ``label`` and
                optionally ``teacher_logits`` and ``teacher_pooled``.

        Returns:
            ``input_ids`` and ``attention_mask`` ``(B, T)`` long, ``labels`` ``(B,)``
            long and, if present, ``teacher_logits`` ``(B, C)`` and
            ``teacher_pooled`` ``(B, H)`` float.
        """
        width = max(len(ex["input_ids"]) for ex in examples)
        input_ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex["input_ids"])
            input_ids[row, :n] = torch.as_tensor(ex["input_ids"])
            attention_mask[row, :n] = torch.as_tensor(ex["attention_mask"])
        batch = {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": attention_mask,  # (B, T)
            "labels": torch.tensor([ex["label"] for ex in examples], dtype=torch.long),
        }
        for key in ("teacher_logits", "teacher_pooled"):  # (B, C), (B, H)
            if key in examples[0]:
                batch[key] = torch.from_numpy(np.stack([ex[key] for ex in examples]))
        return batch


class BucketedDistributedBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches, identical across ranks up to each rank's slice.

    Per epoch, on every rank alike: shuffle the indices with ``(seed, epoch)``, repeat
    from the start until the count is a multiple of ``global_batch_size`` (so every
    batch is full and every rank gets the same number of steps), cut into chunks of
    ``global_batch_size * bucket_multiplier``, sort each chunk by length, cut each
    into global batches and shuffle the batch order. Rank ``r`` then takes the
    strided slice ``batch[r::num_replicas]``, which keeps the ranks' padded lengths
    (and so their step times) alike.

    Args:
        lengths: Token count of every example.
        global_batch_size: Examples per step summed over all ranks.
        num_replicas: World size.
        rank: This rank.
        seed: Shuffling seed shared by all ranks.
        bucket_multiplier: Batches per sorting chunk; 1 sorts within a batch only.
        shuffle: Shuffle examples and batches (False keeps the order, for tests).

    Raises:
        ValueError: On an empty dataset, a bad rank or a global batch that the ranks
            cannot share evenly.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        global_batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        bucket_multiplier: int = 50,
        shuffle: bool = True,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.size == 0:
            raise ValueError("cannot sample from an empty dataset")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside world size {num_replicas}")
        if global_batch_size % num_replicas:
            raise ValueError(
                f"global batch {global_batch_size} is not divisible by "
                f"{num_replicas} ranks"
            )
        if bucket_multiplier < 1:
            raise ValueError(f"bucket_multiplier must be >= 1, got {bucket_multiplier}")
        self.global_batch_size = global_batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.bucket_multiplier = bucket_multiplier
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def per_rank_batch_size(self) -> int:
        """Examples per step on one rank."""
        return self.global_batch_size // self.num_replicas

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank), ignoring ``start_batch``."""
        return math.ceil(self.lengths.size / self.global_batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; ``start_batch`` skips batches done before a resume."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} outside 0..{len(self)}")
        self.epoch = epoch
        self.start_batch = start_batch

    def global_batches(self) -> list[np.ndarray]:
        """The epoch's global batches, in order; identical on every rank."""
        n = self.lengths.size
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        # np.resize repeats from the start, like DistributedSampler's padding.
        order = np.resize(order, len(self) * self.global_batch_size)
        chunk = self.global_batch_size * self.bucket_multiplier
        batches: list[np.ndarray] = []
        for start in range(0, order.size, chunk):
            part = order[start : start + chunk]
            # Stable sort keeps ties in shuffled order, so the result is seed-determined.
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(np.split(part, part.size // self.global_batch_size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches()[self.start_batch :]:
            yield batch[self.rank :: self.num_replicas].tolist()


def shard_by_length(
    lengths: Sequence[int] | np.ndarray, batch_size: int, num_replicas: int, rank: int
) -> list[list[int]]:
    """Split evaluation examples across ranks into length-sorted batches.

    Rank ``r`` gets indices ``r, r + W, ...``; nothing is repeated, so the gathered
    predictions cover each example exactly once.

    Args:
        lengths: Token count of every example.
        batch_size: Examples per batch on this rank.
        num_replicas: World size.
        rank: This rank.

    Returns:
        This rank's batches of dataset indices (possibly none).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    mine = np.arange(rank, lengths.size, num_replicas)
    mine = mine[np.argsort(lengths[mine], kind="stable")]
    return [mine[i : i + batch_size].tolist() for i in range(0, mine.size, batch_size)]
