"""Comparing cleaning results: the evidence of one build_evidence call, and the verdict rows of a run."""

import numpy as np

from ml.clean import CleaningEvidence, build_evidence
from ml.embed import read_embedding_shards
from ml.spatial import LocalFeatureStore
from webapp.curation.models import CleaningRun, Verdict
from webapp.search.services import feature_dir


def single_task_evidence(run: CleaningRun, like: CleaningEvidence) -> CleaningEvidence:
    """build_evidence in one call over the run's vectors, labels and cached local features."""
    ids, vectors = read_embedding_shards(run.embedding_set.path)
    pos = {i: n for n, i in enumerate(ids)}
    x = np.asarray(vectors[[pos[i] for i in like.ids]], dtype=np.float32)
    return build_evidence(x, like.ids, like.labels, like.config, local_features=LocalFeatureStore(feature_dir()))


def assert_same_evidence(a: CleaningEvidence, b: CleaningEvidence) -> None:
    assert a.ids == b.ids and a.labels == b.labels and a.config == b.config
    np.testing.assert_array_equal(a.neighbours, b.neighbours)
    np.testing.assert_array_equal(a.similarities, b.similarities)
    np.testing.assert_array_equal(a.inliers, b.inliers)  # every pair: the same inlier count
    assert a.meta["pairs_verified"] == b.meta["pairs_verified"] and a.meta["spatial"] and b.meta["spatial"]


def verdict_rows(run: CleaningRun) -> dict:
    return {v.image.external_id: (v.verdict, v.label_id, v.suggested_landmark_id, v.suggest_not_landmark, v.score,
                                  v.evidence)
            for v in Verdict.objects.filter(run=run).select_related("image")}
