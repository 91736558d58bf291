"""The decode store: a dataset's image files decoded once per (content, image size, decoder), in
parallel, and each carve recorded as row indices over it (no pixels copied).

MONAI's ``PersistentDataset`` keys its cache by content and transform, and ``CacheDataset`` fills it
with a worker pool and a progress bar; this is that, on disk and shared by every process of a node.
One module per job:

- ``keys``: the key (``store_key``) is the content (every file's name relative to the dataset root,
  size and mtime, sorted), the image size, the decode options and ``DECODER_VERSION``: never the
  carve seed or the grouping, so another seed decodes nothing (``carve_key`` names a carve's rows).
- ``chunks``: ``decode_chunk``, the one function every scheduler runs over a chunk of files.
- ``schedule``: where chunks run (``run_chunks``): Ray tasks when this process is a Ray driver
  (``--address``: on every node of the cluster, which must see the image files at the same paths),
  else a local process pool, else this process. ``TL_DECODE_SCHEDULER=ray-data`` runs them through
  Ray Data instead, measured at under half the speed on 2 cores (the figures: ``schedule``'s
  docstring and docs/guide/scale.md), so the tasks and the pool stay the default.
- ``progress``: the progress bar or lines.
- ``layout``: the folder, chunk files written atomically as they finish (an interrupted decode
  resumes from the chunks already written), the disk check and the locks; ``fill``: decoding what
  the store lacks; ``gather``: a carve's splits; ``splits``: ``store_splits``, the entry point.
- ``admin``: ``python -m tl.cache list|prune`` (the stores, their size and last use; pruning).

Grey images keep one channel (the batcher expands them); the store is 3-channel only when some
image really is colour. A carve (row indices per split, keyed by a hash of the rows) is recorded as
those rows; each split is a ``tl.data.arrays.ChunkRows``, which reads its images from the chunks
memory-mapped: every trial of a node shares one copy through the page cache (it pickles as the
chunks' folder and the rows), and the store on disk stays the decoded size whatever the carves.

Layout under ``cache_dir()/decoded/``::

    <name>-<key>/store.json                 what the key covers (files, size, options, decoder version)
    <name>-<key>/.lock                      FileLock: one process fills the store or gathers a carve at a time
    <name>-<key>/.in-use                    flock'ed shared by each process using the store; mtime: last use
    <name>-<key>/chunks-<C>/<i>.npy         images (n, 1|3, S, S) uint8 of files i*C..(i+1)*C-1
    <name>-<key>/chunks-<C>/<i>.fingerprints.npz  the audit's dHash and pixel digest of each image
    <name>-<key>/chunks-<C>/<i>.json        which decoded (ok), each file's decode record and error, who
                                            decoded it; written last: the chunk exists once it does
    <name>-<key>/splits/<carve>/rows.npz     each split's rows of the store, in the carve's order
    <name>-<key>/splits/<carve>/meta.json    decode summary, skipped files, channels; written last
                                            (carves before rows also held <split>.npy pixel copies:
                                            removed when no process uses the store)
"""
from tl.data.store.chunks import decode_chunk, local_decode_chunk, ray_decode_chunk
from tl.data.store.fill import fill_store
from tl.data.store.gather import drop_split_copies, gather_splits, store_fingerprints, write_carve
from tl.data.store.keys import DECODE_OPTIONS, carve_key, file_entries, store_key
from tl.data.store.layout import (ChunkDone, Store, atomic_write, check_disk, chunk_file, chunk_status, fill_lock,
                                  hold_in_use, human_bytes, open_store, write_chunk)
from tl.data.store.progress import PROGRESS_EVERY_S, Progress
from tl.data.store.schedule import (MAX_CHUNK, MIN_CHUNK, MIN_PARALLEL, chunk_size_for, local_cpus, run_chunks,
                                    run_with_pool, run_with_ray, run_with_ray_data)
from tl.data.store.splits import StoredSplits, store_splits

__all__ = ["DECODE_OPTIONS", "MAX_CHUNK", "MIN_CHUNK", "MIN_PARALLEL", "PROGRESS_EVERY_S", "ChunkDone", "Progress",
           "Store", "StoredSplits", "atomic_write", "carve_key", "check_disk", "chunk_file", "chunk_size_for",
           "chunk_status", "decode_chunk", "drop_split_copies", "file_entries", "fill_lock", "fill_store",
           "gather_splits", "hold_in_use", "human_bytes", "local_cpus", "local_decode_chunk", "open_store",
           "ray_decode_chunk", "run_chunks", "run_with_pool", "run_with_ray", "run_with_ray_data",
           "store_fingerprints", "store_key", "store_splits", "write_carve", "write_chunk"]
