"""torch / DGL / transformers modules, free of file I/O and pipeline logic.

* ``models.behaviour`` – behaviour encoders (heterogeneous GAT, LightGCN) behind one interface
* ``models.metrics``   – exact, vectorised full-ranking metrics

May import: torch, dgl, transformers; never ``components`` or ``pipelines``.
"""
