"""Stage one across a dask.distributed cluster: one task per pending chunk, each worker writes its own chunks.

The driver creates the store (so its layout and provenance are fixed once), then
submits one task per pending chunk. A task loads the model through
:func:`load_requested_model`, which caches it per worker process, so each worker
loads the model once however many chunks it computes. Tasks write straight into the
store (different chunks share no files, no locks needed) and return their counts
and any decoding failures; the driver's progress bar advances per finished chunk.
Batches inside a chunk are cut exactly as in one process, so the store is the same.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from tqdm.auto import tqdm

from cache.store import FeatureStore
from stages.features.extract import ExtractConfig, ExtractReport, extract_chunks, raise_for_failures, tune_allocator
from stages.features.image_source import ImageSource
from stages.models.base import FeatureModel
from stages.models.registry import ModelRequest


@functools.lru_cache(maxsize=2)
def load_requested_model(request: ModelRequest) -> FeatureModel:
    """``request.load()``, cached per process: a dask worker loads each model once."""
    return request.load()


def extract_chunk_task(request: ModelRequest, images: ImageSource, store: FeatureStore, cfg: ExtractConfig,
                       chunk: int) -> dict[str, Any]:
    """Compute one chunk on a worker; returns ``{"n_images", "megabytes", "failures"}``."""
    tune_allocator()
    model = load_requested_model(request)
    report = extract_chunks(model, images, store, cfg, chunks=[chunk], progress=False)
    return {"n_images": report.n_images, "megabytes": report.megabytes_written, "failures": report.failures}


def extract_features_distributed(request: ModelRequest, images: ImageSource, store: FeatureStore, cfg: ExtractConfig,
                                 *, client: Any, progress: bool = True) -> ExtractReport:
    """Fill every pending chunk of ``store`` with tasks on the cluster behind ``client`` (a ``distributed.Client``).

    Workers need the same packages and must reach the store's path and the image files
    (a shared file system on a multi-machine cluster). Raises InvalidInputError listing
    images that failed to decode once every other chunk is written.
    """
    from distributed import as_completed

    chunks = store.pending_chunks()
    report = ExtractReport()
    started = time.perf_counter()
    [shared_images] = client.scatter([images], broadcast=True)
    futures = {client.submit(extract_chunk_task, request, shared_images, store, cfg, chunk, pure=False): chunk
               for chunk in chunks}
    total = sum(store.chunk_rows(chunk).stop - store.chunk_rows(chunk).start for chunk in chunks)
    with tqdm(total=total, unit="img", desc="features", disable=not progress, dynamic_ncols=True) as bar:
        try:
            for future in as_completed(futures):
                result = future.result()
                rows = store.chunk_rows(futures[future])
                bar.update(rows.stop - rows.start)
                report.failures += result["failures"]
                report.n_images += result["n_images"]
                report.megabytes_written += result["megabytes"]
                report.n_chunks += 0 if result["failures"] else 1
        except BaseException:
            client.cancel(list(futures))
            raise
    report.seconds = time.perf_counter() - started
    raise_for_failures(report, store)
    return report
