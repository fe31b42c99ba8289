"""Sweeps: many models x many subjects (x methods) as one resumable job on dask.distributed."""
