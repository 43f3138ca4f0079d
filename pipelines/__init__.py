"""Orchestration: the ``reland`` CLI, the main job and (later) the Kubeflow pipelines.

Everything here calls step functions from ``components``; no data logic lives here.
May import: ``components``, ``models``, ``validation``.
"""
