"""Training targets: a subject's responses z-scored with its training statistics.

Held-out splits are small and scored as whole arrays, so they are materialised once
(:meth:`Standardisation.apply_rows`). The training split is as large as the responses
themselves (1.3 GB of float32 at subj01 scale), so a streamed fit serves it as
:class:`StandardisedRows`: each batch's rows are z-scored when the batch is cut, and no
second copy of the responses exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.fit.layer_statistics import ROW_BLOCK, ResponseMoments


@dataclass(frozen=True)
class Standardisation:
    """Per-vertex training statistics used to z-score responses (recorded in every fit).

    Attributes:
        mean, std: float32 arrays of shape (n_vertices,).
    """

    mean: np.ndarray
    std: np.ndarray

    def apply(self, responses: np.ndarray) -> np.ndarray:
        """Responses of shape (n_images, n_vertices) in training z-units."""
        return ((responses - self.mean) / self.std).astype(np.float32)

    def apply_rows(self, responses: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``apply(responses[rows])``, filled ``ROW_BLOCK`` rows at a time (one float32 copy, no temporaries
        of the whole selection)."""
        out = np.empty((len(rows), responses.shape[1]), dtype=np.float32)
        for start in range(0, len(rows), ROW_BLOCK):
            out[start:start + ROW_BLOCK] = self.apply(responses[rows[start:start + ROW_BLOCK]])
        return out


def standardise(responses: np.ndarray, train_rows: np.ndarray) -> Standardisation:
    """Per-vertex mean and standard deviation over the training rows (std 0 -> 1), computed in row blocks."""
    moments = ResponseMoments.of(responses, np.asarray(train_rows))
    std = np.sqrt(moments.sum_squares / moments.n)
    return Standardisation(moments.mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))


class StandardisedRows:
    """``standardisation.apply(responses[rows])`` without the copy: indexing z-scores only the rows asked for.

    Indexing with an integer array of positions (into ``rows``) returns a float32 array of
    shape (len(positions), n_vertices); ``numpy.asarray`` materialises the whole selection
    (for a resident source, which holds everything anyway).
    """

    def __init__(self, responses: np.ndarray, rows: np.ndarray, standardisation: Standardisation) -> None:
        self.responses = responses
        self.rows = np.asarray(rows)
        self.standardisation = standardisation

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), int(self.responses.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return self.standardisation.apply(self.responses[self.rows[positions]])

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        values = self.standardisation.apply_rows(self.responses, self.rows)
        return values if dtype is None else values.astype(dtype, copy=False)
