"""What the review pages show: the queue's rows, a cluster's cards with their evidence and decisions, the
next cluster to review after one, and the clusters a bulk accept would take."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Exists, OuterRef, Q

from webapp.catalog.models import Image, Landmark
from webapp.curation.decisions import pending, standing_decisions
from webapp.curation.models import NoiseCluster, Verdict

OPEN = NoiseCluster.Status.OPEN
BULK_KINDS = (NoiseCluster.Kind.RELABEL, NoiseCluster.Kind.DISTRACTOR)  # a merge is decided landmark by landmark


def with_requeued(clusters):
    """``clusters`` annotated with ``requeued``: a photo in it came back on new evidence."""
    reopened = Verdict.objects.filter(run=OuterRef("run"), image__noise_clusters=OuterRef("pk"), reopens__isnull=False)
    return clusters.annotate(requeued=Exists(reopened))


def label_names(clusters) -> dict[int, list[Landmark]]:
    """The current labels of each cluster's photos (what the photos are filed under), by cluster."""
    found = defaultdict(dict)  # cluster -> landmark pks, in order, once each
    rows = NoiseCluster.images.through.objects.filter(noisecluster__in=[c.pk for c in clusters])
    for cluster_id, landmark_id in rows.values_list("noisecluster_id", "image__landmark_id"):
        found[cluster_id][landmark_id] = None
    landmarks = Landmark.objects.in_bulk({pk for pks in found.values() for pk in pks if pk})
    return {cid: [landmarks[pk] for pk in pks if pk in landmarks] for cid, pks in found.items()}


def with_labels(clusters) -> list[NoiseCluster]:
    """``clusters`` as a list, each with ``labels``: the labels its photos are filed under other than its
    suggestion (for the suggestion in words: "move these to that")."""
    clusters = list(clusters)
    names = label_names(clusters)
    for cluster in clusters:
        cluster.labels = [lm for lm in names.get(cluster.pk, []) if lm.pk != cluster.target_landmark_id]
    return clusters


def open_count() -> int:
    return NoiseCluster.objects.filter(status=OPEN).count()


def next_open(after: NoiseCluster | None) -> NoiseCluster | None:
    """The open cluster after ``after`` in queue order (most useful first), from the top when none follows."""
    clusters = NoiseCluster.objects.filter(status=OPEN).order_by("-benefit", "id")
    if after is None:
        return clusters.first()
    later = clusters.filter(Q(benefit__lt=after.benefit) | Q(benefit=after.benefit, id__gt=after.pk)).first()
    return later or clusters.exclude(pk=after.pk).first()


def cluster_cards(cluster: NoiseCluster) -> list[dict]:
    """One card per photo: the photo, its verdict in the cluster's run, the neighbours it rests on, its
    standing decision, whether it is left to decide, and the new evidence that re-queued it."""
    images = list(cluster.images.select_related("landmark").order_by("landmark__name", "external_id"))
    verdicts = {v.image_id: v for v in Verdict.objects.filter(run=cluster.run, image__in=images)
                .select_related("suggested_landmark", "reopens__decided_by")}
    shown = {n["id"] for v in verdicts.values() for n in top_neighbours(v)}
    neighbours = {im.external_id: im for im in Image.objects.filter(external_id__in=shown).select_related("landmark")}
    decisions = standing_decisions(im.pk for im in images)
    left = pending((im.pk for im in images), decisions)
    new_labels = {n.get("label") for v in verdicts.values() if v.reopens_id for n in v.evidence.get("new_evidence", [])}
    landmarks = {lm.external_id: lm for lm in Landmark.objects.filter(external_id__in=new_labels - {None})}
    return [{"image": im, "verdict": verdicts.get(im.pk), "decision": decisions.get(im.pk), "pending": im.pk in left,
             "neighbours": [(neighbours.get(n["id"]), n) for n in top_neighbours(verdicts.get(im.pk))],
             "new_evidence": _new_evidence(verdicts.get(im.pk), landmarks)}
            for im in images]


def top_neighbours(verdict: Verdict | None, n: int = 3) -> list[dict]:
    """The nearest neighbours a verdict rests on, verified ones first."""
    if verdict is None:
        return []
    items = verdict.evidence.get("neighbours", [])
    return sorted(items, key=lambda x: (-(x.get("inliers") or 0), -x.get("similarity", 0)))[:n]


def _new_evidence(verdict: Verdict | None, landmarks: dict[str, Landmark]) -> list[tuple[Landmark | None, int]]:
    """(landmark, photos) the photo now verifies with that it did not when it was decided."""
    if verdict is None or not verdict.reopens_id:
        return []
    counts: dict = defaultdict(int)
    for n in verdict.evidence.get("new_evidence", []):
        counts[n.get("label")] += 1
    return [(landmarks.get(label), photos) for label, photos in counts.items()]


def bulk_candidates(min_confidence: float) -> list[NoiseCluster]:
    """Open relabel and distractor clusters at least this confident, most useful first."""
    return list(NoiseCluster.objects.filter(status=OPEN, kind__in=BULK_KINDS, confidence__gte=min_confidence)
                .select_related("target_landmark", "run").order_by("-benefit", "id"))
