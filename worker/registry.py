"""Importing this module registers every job function with the runner (each module registers its own)."""

from worker import building, cleaning, embedding, evaluating, jobs, training  # noqa: F401
