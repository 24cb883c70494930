"""What a new cleaning run does to the review queue, so that runs build on each other.

The run's clusters (``ml.clean.cluster_suspects``) hold only photos still to decide: a photo with a standing
curator decision stays out unless the run brings new evidence against it (``decisions.new_evidence``; its
verdict then records the decision it reopens). Each cluster found takes the place of the open cluster of
the same kind and suggestion that shares most photos with it (updated in place: same number, same page), or
becomes a new one. An open cluster that no found cluster continues loses the undecided photos this run judged (they are
where this run put them now) and keeps those it did not see. Decided photos stay in their clusters, as
their history. Every open cluster touched is closed when no photo in it is left to decide: "decided" when
curators decided some, else "no longer flagged".
Runs after one another with no new decisions or evidence therefore leave the queue as it was.
"""

from __future__ import annotations

from ml.clean import NOT_A_LANDMARK
from ml.clean import NoiseCluster as Found
from webapp.catalog.models import Landmark
from webapp.curation.decisions import new_evidence, pending, standing_decisions
from webapp.curation.models import CleaningRun, NoiseCluster, Verdict

Status = NoiseCluster.Status


def update_queue(run: CleaningRun, found: list[Found], pks: dict[str, int], landmarks: dict[str, Landmark],
                 verify_thresh: int) -> dict:
    """Put the run's clusters in the queue (inside the caller's transaction); returns what changed."""
    flagged = {pks[i] for c in found for i in c.image_ids if i in pks}
    reopened = _reopen_on_new_evidence(run, flagged, verify_thresh)
    decided = set(standing_decisions(flagged)) - reopened
    open_clusters = list(NoiseCluster.objects.select_for_update().filter(status=Status.OPEN).exclude(run=run)
                         .prefetch_related("images"))
    members = {c.pk: {im.pk for im in c.images.all()} for c in open_clusters}
    seen = set(Verdict.objects.filter(run=run, image_id__in=set().union(*members.values()))
               .values_list("image_id", flat=True))
    kept = {c.pk: members[c.pk] - pending(members[c.pk]) for c in open_clusters}  # decided: they stay, as history
    counts = {"updated": 0, "new": 0, "closed": 0, "requeued": len(reopened)}
    for c in found:
        queued = [pks[i] for i in c.image_ids if i in pks and pks[i] not in decided]
        if not queued:
            continue  # every photo in it is decided: nothing to ask
        target = landmarks.get(c.target_label) if c.target_label not in (None, NOT_A_LANDMARK) else None
        old = _best_match(c.kind, target, set(queued), open_clusters, members)
        fields = {"run": run, "kind": c.kind, "target_landmark": target, "confidence": c.confidence,
                  "benefit": round(len(queued) * c.confidence, 4),
                  "suggested_action": describe(c.kind, target, [landmarks.get(label) for label in c.labels])}
        if old is None:
            cluster = NoiseCluster.objects.create(size=len(queued), **fields)
            cluster.images.set(queued)
            counts["new"] += 1
            continue
        open_clusters.remove(old)
        photos = set(queued) | kept[old.pk] | (members[old.pk] - seen)
        NoiseCluster.objects.filter(pk=old.pk).update(size=len(photos), **fields)
        old.images.set(photos)
        counts["updated"] += 1
        counts["closed"] += _close_if_decided(old, photos, kept[old.pk])
    for old in open_clusters:  # no cluster of this run continues it
        photos = kept[old.pk] | (members[old.pk] - seen)
        if photos != members[old.pk]:
            old.images.set(photos)
            NoiseCluster.objects.filter(pk=old.pk).update(size=len(photos))
        counts["closed"] += _close_if_decided(old, photos, kept[old.pk])
    return counts


def describe(kind: str, target: Landmark | None, labels: list[Landmark | None]) -> str:
    """The suggestion in words, landmarks by name."""
    if kind == NoiseCluster.Kind.RELABEL and target is not None:
        return f"move to {target.name}"[:200]
    if kind == NoiseCluster.Kind.MERGE and target is not None:
        others = ", ".join(lm.name for lm in labels if lm is not None and lm.pk != target.pk) or "the other landmark"
        return f"merge {others} into {target.name} (their photos show one place)"[:200]
    return "mark as not a landmark (or find the landmark they show)"


def _reopen_on_new_evidence(run: CleaningRun, flagged: set[int], verify_thresh: int) -> set[int]:
    """Flagged photos with a standing decision and new evidence against it: their verdicts say so."""
    decisions = standing_decisions(flagged)
    reopened = set()
    for verdict in Verdict.objects.filter(run=run, image_id__in=list(decisions)).select_related("label"):
        decision = decisions[verdict.image_id]
        new = new_evidence(verdict, decision, verify_thresh)
        if new:
            Verdict.objects.filter(pk=verdict.pk).update(reopens=decision,
                                                         evidence={**verdict.evidence, "new_evidence": new})
            reopened.add(verdict.image_id)
    return reopened


def _best_match(kind: str, target: Landmark | None, photos: set[int], candidates: list[NoiseCluster],
                members: dict[int, set[int]]) -> NoiseCluster | None:
    """The open cluster with the same kind and suggestion that shares the most photos (None: none shares)."""
    same = [c for c in candidates if c.kind == kind and c.target_landmark_id == (target.pk if target else None)]
    best = max(same, key=lambda c: (len(members[c.pk] & photos), -c.pk), default=None)
    return best if best is not None and members[best.pk] & photos else None


def _close_if_decided(cluster: NoiseCluster, photos: set[int], decided: set[int]) -> int:
    """Close ``cluster`` when none of ``photos`` is left to decide; 1 if it was closed."""
    if photos and pending(photos):
        return 0
    status = Status.DONE if decided else Status.CLEARED
    NoiseCluster.objects.filter(pk=cluster.pk).update(status=status)
    return 1
