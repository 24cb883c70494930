"""Jobs as lists of stages (``protocol``): each stage splits into parts that any number of workers compute
once, and joins them. One module per stage:

- ``embed``: images -> descriptors (and region descriptors, and dense features caught from the same passes)
  -> an embedding set;
- ``features``: the RootSIFT and dense features a pipeline verifies with, cached per image;
- ``regions``: the region descriptors of the index folder (the set's own, or made here);
- ``postprocess``: learned whitening and database-side augmentation of the vectors to index;
- ``shards``: the index, one faiss folder per shard, published as one;
- ``verify``: a cleaning job's kNN pairs, spatially verified.

``index_build`` puts the first five together as the product's index build; ``verify`` with ``features``
makes a cleaning job's evidence. ``worker.stages`` runs the same lists on the Celery workers.
"""
