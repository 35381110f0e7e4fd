"""Deployment entry points: the ``prefect-mlops`` CLI, ``prefect.yaml`` and ``serve.py``."""
