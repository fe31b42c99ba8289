"""Stage one: run a frozen backbone over an image set once and fill a feature store (in one process or on a
dask.distributed cluster), with each block's local tokens resized to the store's grids."""
