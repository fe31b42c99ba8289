"""Channel clusters: group vertices by their read-out weights W into a fixed number of clusters.

Reference recipe (method.md): k-means with k = 1000 and cosine distance on the rows of
``W W^T`` (an N x N matrix), then Ward linkage of the centroids' cosine similarities cut at
exactly 20 clusters. At 40,000 vertices ``W W^T`` alone is 6.4 GB (float32), so this module
deviates in one step and keeps the rest:

1. rows of W (shape (n_vertices, n_channels), n_channels = the bottleneck width D) are
   L2-normalised, so Euclidean k-means on them is spherical (cosine) k-means. ``W W^T`` has
   rank <= D and its rows are linear images of W's rows, so its cosine geometry carries no
   information that W's rows lack; clustering W directly needs O(N D) memory;
2. ``MiniBatchKMeans`` with k = 1000 centroids, capped at one centroid per
   :data:`VERTICES_PER_CENTROID` vertices for small fits (the reference's k = 1000 was set for
   ~40,000 vertices), in batches: memory O(batch x k);
3. Ward linkage of the (re-normalised) centroids, cut with ``cut_tree`` at exactly
   ``n_clusters`` groups (``fcluster(maxclust)`` may return fewer on ties).

Labels are renumbered by cluster size, largest first, so colours are stable across runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import cut_tree, linkage
from sklearn.cluster import MiniBatchKMeans

from cache.errors import ConfigError, InvalidInputError

#: Fewest vertices per k-means centroid (keeps k-means meaningful and fast on small fits).
VERTICES_PER_CENTROID = 10


@dataclass(frozen=True)
class ClusterConfig:
    """Options of :func:`cluster_channels`.

    Attributes:
        n_clusters: final number of channel clusters (reference: 20).
        n_centroids: k-means centroids before the Ward merge (reference: 1000; at most one per
            ten vertices).
        batch_size: MiniBatchKMeans batch size (memory ~ batch_size x n_centroids floats).
        seed: random state of k-means.
    """

    n_clusters: int = 20
    n_centroids: int = 1000
    batch_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_clusters < 2 or self.n_centroids < self.n_clusters or self.batch_size < 1:
            raise ConfigError(f"clusters: n_clusters {self.n_clusters} must be >= 2 and <= n_centroids "
                              f"{self.n_centroids}, batch_size {self.batch_size} >= 1")


def cluster_channels(readout: np.ndarray, cfg: ClusterConfig = ClusterConfig()) -> np.ndarray:
    """Cluster vertices by the direction of their read-out weights.

    Args:
        readout: float array of shape (n_vertices, n_channels), the read-out W.
        cfg: clustering options.

    Returns:
        int32 array of shape (n_vertices,) with labels 0 .. n_clusters-1, label 0 the largest cluster.
    """
    readout = np.asarray(readout, dtype=np.float32)
    if readout.ndim != 2:
        raise InvalidInputError(f"read-out weights must have shape (n_vertices, n_channels), got {readout.shape}")
    if not np.isfinite(readout).all():
        raise InvalidInputError("read-out weights contain NaN or infinite values; refit or drop those vertices")
    n_vertices = readout.shape[0]
    if cfg.n_clusters < 2 or n_vertices < cfg.n_clusters:
        raise InvalidInputError(f"cannot split {n_vertices} vertices into {cfg.n_clusters} clusters: "
                                f"n_clusters must be >= 2 and <= the number of vertices")
    directions = readout / np.maximum(np.linalg.norm(readout, axis=1, keepdims=True), 1e-12)
    n_centroids = max(cfg.n_clusters, min(cfg.n_centroids, n_vertices // VERTICES_PER_CENTROID))
    kmeans = MiniBatchKMeans(n_clusters=n_centroids, batch_size=cfg.batch_size, random_state=cfg.seed,
                             n_init=1, max_no_improvement=20)
    fine = kmeans.fit_predict(directions)
    used = np.unique(fine)
    if len(used) < cfg.n_clusters:
        raise InvalidInputError(f"read-out weights have only {len(used)} distinct directions, fewer than "
                                f"n_clusters={cfg.n_clusters}; lower n_clusters")
    centroids = kmeans.cluster_centers_[used]
    centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    coarse_of_used = cut_tree(linkage(centroids, method="ward"), n_clusters=cfg.n_clusters)[:, 0]
    coarse_of_fine = np.full(n_centroids, -1, dtype=np.int64)
    coarse_of_fine[used] = coarse_of_used
    labels = coarse_of_fine[fine]
    sizes = np.bincount(labels, minlength=cfg.n_clusters)
    rank = np.empty(cfg.n_clusters, dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(cfg.n_clusters)
    return rank[labels].astype(np.int32)
