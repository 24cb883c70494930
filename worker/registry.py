"""Importing this module registers every job function with the runner (each module registers its own)."""

from worker import cleaning, evaluating, indexing, jobs, modelling  # noqa: F401
