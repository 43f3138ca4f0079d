"""The data layer: load interaction logs, stage them, k-core filter and split them.

Flow: a loader (``loaders``) or the generator (``synthetic``) writes a *staged* dataset
(``tables.StagedDataset``: ordinal ids, rows sorted by user then time); ``prepare``
streams over it in chunks to filter and split, writing the canonical tables.
"""
