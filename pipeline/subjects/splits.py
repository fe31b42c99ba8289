"""Seeded, recorded train/val/test splits of a subject's response rows.

Rule: the data's own test split when it has one (test images with responses),
else a seeded ``test_fraction`` of the rows held out; the remaining rows are split
into train and val by the same seed (``val_fraction`` of them to val). The same
seed and row count always give the same splits, and the seed is stored in the
:class:`~stages.subject.Subject` so every fit records it.
"""

from __future__ import annotations

import numpy as np

from cache.errors import InvalidInputError


def make_splits(n_images: int, *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                test_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Disjoint sorted int64 row-index arrays ``train``, ``val``, ``test`` covering ``range(n_images)``.

    Args:
        n_images: number of response rows.
        seed: seed of the random draw (``numpy.random.default_rng``).
        val_fraction: share of the non-test rows held out for validation, in [0, 1).
        test_fraction: share of all rows held out for testing when ``test_rows`` is None, in [0, 1).
        test_rows: the data's own test rows; when given, ``test_fraction`` is unused.
    """
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(value) < 1.0:
            raise InvalidInputError(f"{label} must lie in [0, 1), got {value}")
    rng = np.random.default_rng(seed)
    if test_rows is None:
        order = rng.permutation(n_images)
        n_test = int(round(test_fraction * n_images))
        test, rest = order[:n_test], order[n_test:]
    else:
        test = np.unique(np.asarray(test_rows, dtype=np.int64))
        if test.size and (test[0] < 0 or test[-1] >= n_images):
            raise InvalidInputError(f"test rows must lie in 0..{n_images - 1}")
        rest = rng.permutation(np.setdiff1d(np.arange(n_images), test))
    n_val = int(round(val_fraction * rest.size))
    val, train = rest[:n_val], rest[n_val:]
    if train.size == 0:
        raise InvalidInputError(f"no training rows left of {n_images} images with val_fraction={val_fraction} "
                                f"and {test.size} test rows; lower the fractions or add images")
    return {name: np.sort(rows).astype(np.int64) for name, rows in (("train", train), ("val", val), ("test", test))}
