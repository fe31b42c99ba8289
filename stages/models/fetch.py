"""Turn a library's download/offline failure into a one-line :class:`WeightsUnavailableError`.

Hubs fail in many ways when weights are neither cached nor reachable: ``OSError`` from
transformers, ``LocalEntryNotFoundError`` (an ``OSError``) from huggingface_hub, ``URLError``
(an ``OSError``) or ``RuntimeError`` from torch hub downloads. The user needs one line:
which model, why, and how to supply the weights. :func:`hub_offline` also reads
``HF_HUB_OFFLINE`` at call time (huggingface_hub reads it once, at import) and treats an
unreachable hub as offline, so a machine without network loads cached weights or fails at
once, instead of retrying (for about 30 s) a download that cannot succeed.
"""

from __future__ import annotations

import functools
import os
import socket
from contextlib import contextmanager
from typing import Iterator

from cache.errors import BddnError, WeightsUnavailableError


@contextmanager
def weights_unavailable_on_failure(model_id: str, source: str, *, fix: str) -> Iterator[None]:
    """Re-raise ``OSError``/``RuntimeError`` inside the block as one :class:`WeightsUnavailableError` line.

    ``fix`` says how to supply the weights (a download command, an environment variable...).
    """
    try:
        yield
    except BddnError:
        raise
    except (OSError, RuntimeError) as error:
        raise weights_unavailable(model_id, source, fix=fix, reason=_first_line(error)) from error


def weights_unavailable(model_id: str, source: str, *, fix: str, reason: str = "not cached") -> WeightsUnavailableError:
    """The one-line error naming the model, the weights it wanted, why they failed, and the fix."""
    return WeightsUnavailableError(
        f"{model_id}: weights for {source} are not available offline and cannot be downloaded ({reason}); {fix}"
    )


def hub_offline() -> bool:
    """Whether the Hugging Face hub is out of use: switched off (``HF_HUB_OFFLINE`` now, or when
    huggingface_hub was imported) or unreachable (:func:`hub_reachable`)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(constants.HF_HUB_OFFLINE) or not hub_reachable(constants.ENDPOINT)


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether ``endpoint``'s host accepts a TCP connection within ``timeout`` seconds (asked once per process)."""
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_commit(repo_id: str, filename: str) -> str | None:
    """The commit of ``repo_id`` whose ``filename`` sits in the local hub cache, or ``None`` if not cached."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    return Path(cached).parent.name if isinstance(cached, str) else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__
