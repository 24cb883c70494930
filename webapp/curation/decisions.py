"""What curators have decided about photos, and when a later cleaning run may ask again.

A photo's *standing decision* is its latest label decision (relabel, accept, not a landmark, merge, keep)
that is not undone. A cleaning run leaves a decided photo out of the queue unless it brings *new evidence*:
the photo now verifies (at least ``verify_thresh`` inliers) with a photo of another landmark than its own
that it did not verify with, under that label, when the decision was made. "When the decision was made" is
the verdict the curator saw: the photo's verdict in the decision's cleaning run, else in the latest run
before the decision (none: nothing was seen, so every such photo is new). A verdict that re-queues a photo
records the decision it reopens (``Verdict.reopens``) and the new evidence (``evidence['new_evidence']``).
"""

from __future__ import annotations

from collections.abc import Iterable

from webapp.curation.models import LabelChange, Verdict

Action = LabelChange.Action
DECISIONS = (Action.RELABEL, Action.ACCEPT, Action.NOT_LANDMARK, Action.MERGE, Action.KEEP)


def standing_decisions(image_pks: Iterable[int]) -> dict[int, LabelChange]:
    """The standing decision of each photo that has one."""
    rows = (LabelChange.objects.filter(image_id__in=list(image_pks), action__in=DECISIONS, undone_by__isnull=True)
            .select_related("decided_by").order_by("image_id", "created_at", "id"))
    return {change.image_id: change for change in rows}  # the last of each photo's rows wins


def pending(image_pks: Iterable[int], decided: dict[int, LabelChange] | None = None) -> set[int]:
    """The photos among ``image_pks`` a curator still has to decide: no standing decision, or one that the
    photo's latest verdict reopens. ``decided``: their standing decisions, when the caller has them."""
    pks = set(image_pks)
    decided = standing_decisions(pks) if decided is None else decided
    latest: dict[int, int | None] = {}
    for image_id, reopens in (Verdict.objects.filter(image_id__in=list(decided)).order_by("image_id", "-run_id")
                              .values_list("image_id", "reopens_id")):
        latest.setdefault(image_id, reopens)
    return {pk for pk in pks if pk not in decided or latest.get(pk) == decided[pk].pk}


def new_evidence(now: Verdict, decision: LabelChange, verify_thresh: int) -> list[dict]:
    """The verified photos of another landmark in ``now`` that the decision was not made on (empty: none)."""
    label = now.label.external_id if now.label else None
    seen = _verified_other(_baseline(decision), label, verify_thresh)
    return [n for n in _verified_other(now, label, verify_thresh).values()
            if n["id"] not in seen or seen[n["id"]].get("label") not in (None, n.get("label"))]


def _verified_other(verdict: Verdict | None, label: str | None, verify_thresh: int) -> dict[str, dict]:
    """Neighbours of ``verdict`` verified with the photo, labelled other than ``label``, by id."""
    if verdict is None:
        return {}
    return {n["id"]: n for n in verdict.evidence.get("neighbours", [])
            if (n.get("inliers") or 0) >= verify_thresh and n.get("label") != label}


def _baseline(decision: LabelChange) -> Verdict | None:
    """The photo's verdict the decision was made on."""
    verdicts = Verdict.objects.filter(image_id=decision.image_id)
    if decision.cleaning_run_id:
        return verdicts.filter(run_id=decision.cleaning_run_id).first()
    return verdicts.filter(run__created_at__lte=decision.created_at).order_by("-run__created_at", "-run_id").first()


def recent_batches(user, count: int = 5) -> list[dict]:
    """The user's last ``count`` decisions that can still be undone (each one action on one or more photos,
    newest first): what, how many photos, in which clusters, and the batch to undo."""
    batches: dict = {}
    rows = (LabelChange.objects.filter(decided_by=user, action__in=DECISIONS, undone_by__isnull=True)
            .select_related("cluster", "new_landmark").order_by("-created_at", "-id")[:200])
    for change in rows:
        entry = batches.setdefault(change.batch, {"batch": change.batch, "action": change.get_action_display(),
                                                  "landmarks": {}, "clusters": {}, "photos": 0})
        entry["photos"] += 1
        entry["landmarks"][change.new_landmark_id] = change.new_landmark
        if change.cluster:
            entry["clusters"][change.cluster.pk] = change.cluster
    return [{**entry, "clusters": list(entry["clusters"].values()),
             "landmark": next(iter(entry["landmarks"].values())) if len(entry["landmarks"]) == 1 else None}
            for entry in list(batches.values())[:count]]
