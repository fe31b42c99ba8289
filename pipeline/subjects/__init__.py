"""Subject readers: turn a data folder into a :class:`stages.subject.Subject`.

One registry maps a data kind to its reader; :func:`load_subject` is the single
entry point the CLI and the benchmarks use::

    load_subject("algonauts", 1, root=Path("algonauts_2023_challenge_data"))
    load_subject("synthetic", 1, root=run_root)        # <run root>/synthetic/subj01
    load_subject("nsd", 1, root=Path("NSD"), options={"sessions": [1, 2]})
    load_subject("generic", "mydata", root=Path("subjects"))

Kinds and what ``root`` means:

- ``algonauts``: the folder holding ``subj01``... in the Algonauts 2023 layout;
- ``synthetic``: the run root; subjects are read from ``runroot.synthetic_root(root)``
  with the Algonauts reader (they are written in that layout);
- ``nsd``: the NSD root (``nsddata``, ``nsddata_betas``);
- ``generic``: the folder holding one sub-folder per subject (see ``generic.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import ConfigError, InvalidInputError
from pipeline.runroot import synthetic_root
from pipeline.subjects.algonauts import read_algonauts
from pipeline.subjects.generic import read_generic, read_generic_folder
from pipeline.subjects.nsd import read_nsd
from pipeline.subjects.splits import make_splits
from stages.subject import Subject

__all__ = ["SubjectReader", "list_subject_readers", "load_subject", "make_splits", "read_algonauts",
           "read_generic", "read_nsd"]


@dataclass(frozen=True)
class SubjectReader:
    """A registered data kind: its reader (``read(root, subject, **options)``), what ``root`` is, extra options."""

    name: str
    read: Callable[..., Subject]
    root_help: str
    options: tuple[str, ...]


def _read_synthetic(root: Path, subject: int | str, **options: Any) -> Subject:
    return read_algonauts(synthetic_root(Path(root)), subject, reader="synthetic", **options)


READERS: dict[str, SubjectReader] = {
    reader.name: reader for reader in (
        SubjectReader("algonauts", read_algonauts, "folder holding subj01, subj02, ... (Algonauts 2023 layout)",
                      ("noise_ceiling_units",)),
        SubjectReader("synthetic", _read_synthetic, "run root (subjects in <run root>/synthetic/subjNN)",
                      ("noise_ceiling_units",)),
        SubjectReader("nsd", read_nsd, "NSD root (nsddata/, nsddata_betas/)",
                      ("sessions", "trials_per_session", "test")),
        SubjectReader("generic", read_generic_folder,
                      "folder holding <subject>/images, responses.npy|.parquet, vertices.npy|.txt", ()),
    )
}


def list_subject_readers() -> list[SubjectReader]:
    """Every registered data kind, for ``--help`` texts."""
    return list(READERS.values())


def load_subject(data: str, subject: int | str, *, root: Path, split_seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.1, mask: Sequence[str] | None = None, subjects_dir: Path | None = None,
                 options: Mapping[str, Any] | None = None) -> Subject:
    """Read one subject of data kind ``data`` (``algonauts``, ``synthetic``, ``nsd``, ``generic``).

    Args:
        data: the data kind; an unknown kind is an InvalidInputError listing the valid ones.
        subject: ``1`` -> ``subj01``; other names are used as given.
        root: what it means depends on the kind (module docstring).
        split_seed, val_fraction, test_fraction: the seeded splits (the data's own test split wins).
        mask: ROI classes and/or ROI names whose vertices are kept (None keeps all).
        subjects_dir: FreeSurfer subjects folder for meshes beyond fsaverage5.
        options: reader-specific keyword options (``READERS[data].options``); an unknown key
            is a ConfigError listing the allowed ones.
    """
    if data not in READERS:
        raise InvalidInputError(f"unknown subject data kind {data!r}; valid kinds: {sorted(READERS)}")
    reader = READERS[data]
    extra = dict(options or {})
    unknown = sorted(set(extra) - set(reader.options))
    if unknown:
        raise ConfigError(f"{data} subjects take no option(s) {unknown}; allowed: {list(reader.options) or 'none'}")
    return reader.read(Path(root), subject, split_seed=split_seed, val_fraction=val_fraction,
                       test_fraction=test_fraction, mask=mask, subjects_dir=subjects_dir, **extra)
