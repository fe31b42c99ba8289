"""Turn a library's download/offline failure into a one-line :class:`WeightsUnavailableError`.

Hubs fail in many ways when weights are neither cached nor reachable: ``OSError`` from
transformers, ``LocalEntryNotFoundError`` (an ``OSError``) from huggingface_hub, ``URLError``
(an ``OSError``) or ``RuntimeError`` from torch hub downloads. The user needs one line:
which model, why, and how to supply the weights. :func:`hub_offline` also reads
``HF_HUB_OFFLINE`` at call time (huggingface_hub reads it once, at import), so an offline
run fails at once instead of retrying a download that cannot succeed.
"""

from __future__ import annotations

import os
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
    """Whether Hugging Face hub access is switched off (``HF_HUB_OFFLINE`` now, or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or bool(constants.HF_HUB_OFFLINE)


def hub_commit(repo_id: str, filename: str) -> str | None:
    """The commit of ``repo_id`` whose ``filename`` sits in the local hub cache, or ``None`` if not cached."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    return Path(cached).parent.name if isinstance(cached, str) else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__
