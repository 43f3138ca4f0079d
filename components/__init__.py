"""Pipeline steps: plain, typed Python functions that read and write files in a workspace.

Each step (``prepare_data`` …) takes a :class:`~components.config.Config` and a
:class:`~components.workspace.Workspace` and leaves its outputs as files there, so the
same code runs from the ``reland`` CLI, from tests and inside Kubeflow components
(``components.kubeflow``).  ``components.data`` is the data layer the steps start from.

May import: ``models`` (torch/DGL/transformers modules) and ``validation``; never ``pipelines``
(the CLI, the main job and the studies sit above the steps), ``serving`` or ``benchmarks``;
``tests/unit/test_architecture.py`` checks it.
"""
