"""Stand-ins inside the training loop: a fit that dies right after its first checkpoint, a fit that must not start."""

from __future__ import annotations

from stages.fit import train as train_module


class Killed(Exception):
    """Raised by :func:`interrupt_after_first_checkpoint` in place of a crash."""


def interrupt_after_first_checkpoint(monkeypatch) -> None:
    """Make training die (:class:`Killed`) right after writing its first epoch's checkpoint."""
    real = train_module.save_checkpoint

    def save_then_die(directory, **kwargs):
        path = real(directory, **kwargs)
        if kwargs["state"].epoch == 1:
            raise Killed()
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)


def forbid_training(monkeypatch) -> None:
    """Fail the test if a model is built: bad input must be caught before training starts."""

    def fail(*args, **kwargs):
        raise AssertionError("training started despite bad input")

    monkeypatch.setattr(train_module, "FactorTopy", fail)
