"""Every label change goes through these functions (views, admin actions, commands and tasks alike),
so the audit trail cannot be bypassed: each writes the new label and one LabelChange row per image in a
single transaction, after checking the acting user's role."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import transaction

from webapp.catalog.models import CatalogRevision, Image, Landmark
from webapp.curation.decisions import pending
from webapp.curation.models import CleaningRun, LabelChange, NoiseCluster, Verdict
from webapp.curation.roles import CURATOR, require_role

Action = LabelChange.Action


def set_labels(images: Iterable[Image], new_landmark: Landmark | None, *, acting_user, action: str,
               reason: str = "", run: CleaningRun | None = None, cluster: NoiseCluster | None = None,
               batch: uuid.UUID | None = None) -> list[LabelChange]:
    """Give ``images`` the label ``new_landmark`` (None = not a landmark) and record why."""
    require_role(acting_user, CURATOR)
    batch = batch or uuid.uuid4()
    changes = []
    with transaction.atomic():
        for image in Image.objects.select_for_update().filter(pk__in=[im.pk for im in images]):
            changes.append(LabelChange(image=image, old_landmark_id=image.landmark_id, new_landmark=new_landmark,
                                       action=action, reason=reason[:500], cleaning_run=run, cluster=cluster,
                                       decided_by=acting_user, batch=batch))
            image.landmark = new_landmark
        Image.objects.filter(pk__in=[c.image_id for c in changes]).update(landmark=new_landmark)
        LabelChange.objects.bulk_create(changes)
        CatalogRevision.bump()
        _close_cluster_if_decided(cluster)
    return changes


def relabel(images, landmark: Landmark, *, acting_user, reason: str = "", cluster=None) -> list[LabelChange]:
    return set_labels(images, landmark, acting_user=acting_user, action=Action.RELABEL, reason=reason,
                      cluster=cluster, run=cluster.run if cluster else None)


def mark_not_landmark(images, *, acting_user, reason: str = "", cluster=None) -> list[LabelChange]:
    return set_labels(images, None, acting_user=acting_user, action=Action.NOT_LANDMARK, reason=reason,
                      cluster=cluster, run=cluster.run if cluster else None)


def keep_as_is(images, *, acting_user, reason: str = "", cluster=None) -> list[LabelChange]:
    """A decision that the current label is right: recorded (old = new) so it is not proposed again blind."""
    require_role(acting_user, CURATOR)
    batch = uuid.uuid4()
    with transaction.atomic():
        changes = [LabelChange(image=im, old_landmark_id=im.landmark_id, new_landmark_id=im.landmark_id,
                               action=Action.KEEP, reason=reason[:500], cluster=cluster,
                               cleaning_run=cluster.run if cluster else None, decided_by=acting_user, batch=batch)
                   for im in Image.objects.filter(pk__in=[im.pk for im in images])]
        LabelChange.objects.bulk_create(changes)
        _close_cluster_if_decided(cluster)
    return changes


def accept_suggestions(images, run: CleaningRun, *, acting_user, cluster=None,
                       batch: uuid.UUID | None = None) -> list[LabelChange]:
    """Apply each image's suggested label from ``run`` (images without a suggestion are left alone)."""
    require_role(acting_user, CURATOR)
    batch = batch or uuid.uuid4()
    verdicts = Verdict.objects.filter(run=run, image__in=list(images)).select_related("image", "suggested_landmark")
    changes: list[LabelChange] = []
    with transaction.atomic():
        for v in verdicts:
            if v.suggest_not_landmark or v.suggested_landmark:
                changes += set_labels([v.image], v.suggested_landmark, acting_user=acting_user, action=Action.ACCEPT,
                                      reason=f"suggested by cleaning run #{run.pk} (score {v.score:.2f})",
                                      run=run, cluster=cluster, batch=batch)
    return changes


def accept_clusters(clusters: Iterable[NoiseCluster], *, acting_user) -> list[LabelChange]:
    """Accept the suggestions for the photos left to decide in each cluster, as one batch (one undo)."""
    require_role(acting_user, CURATOR)
    batch = uuid.uuid4()
    changes: list[LabelChange] = []
    with transaction.atomic():
        for cluster in clusters:
            left = pending(cluster.images.values_list("pk", flat=True))
            changes += accept_suggestions(list(Image.objects.filter(pk__in=left)), cluster.run,
                                          acting_user=acting_user, cluster=cluster, batch=batch)
    return changes


def merge_landmarks(source: Landmark, target: Landmark, *, acting_user, reason: str = "",
                    cluster=None) -> list[LabelChange]:
    """Move every image of ``source`` to ``target``; ``source`` stays, empty, so history keeps its name."""
    if source.pk == target.pk:
        raise ValueError("cannot merge a landmark into itself")
    why = reason or f"merged {source.name} ({source.external_id}) into {target.name} ({target.external_id})"
    return set_labels(list(source.images.all()), target, acting_user=acting_user, action=Action.MERGE,
                      reason=why, cluster=cluster, run=cluster.run if cluster else None)


def undo(change: LabelChange, *, acting_user) -> LabelChange | None:
    """Put the image back to its label before ``change``, recorded as a change of its own."""
    require_role(acting_user, CURATOR)
    with transaction.atomic():
        change = LabelChange.objects.select_for_update().get(pk=change.pk)
        if change.action == Action.UNDO or LabelChange.objects.filter(undoes=change).exists():
            return None  # undoing an undo is a new relabel; undoing twice does nothing
        image = Image.objects.select_for_update().get(pk=change.image_id)
        reverted = LabelChange.objects.create(
            image=image, old_landmark_id=image.landmark_id, new_landmark_id=change.old_landmark_id,
            action=Action.UNDO, reason=f"undo of change #{change.pk} ({change.get_action_display()})",
            cleaning_run=change.cleaning_run, cluster=change.cluster, decided_by=acting_user, undoes=change)
        Image.objects.filter(pk=image.pk).update(landmark_id=change.old_landmark_id)
        CatalogRevision.bump()
        _close_cluster_if_decided(change.cluster)  # reopened, unless an earlier decision still stands
    return reverted


def take_down(images, *, acting_user, reason: str = "", restore: bool = False) -> list[LabelChange]:
    """Hide images from every search result at once (or show them again); recorded like a label change."""
    require_role(acting_user, CURATOR)
    batch = uuid.uuid4()
    with transaction.atomic():
        images = list(Image.objects.filter(pk__in=[im.pk for im in images]))
        Image.objects.filter(pk__in=[im.pk for im in images]).update(taken_down=not restore)
        changes = [LabelChange(image=im, old_landmark_id=im.landmark_id, new_landmark_id=im.landmark_id,
                               action=Action.RESTORE if restore else Action.TAKEDOWN, reason=reason[:500],
                               decided_by=acting_user, batch=batch) for im in images]
        LabelChange.objects.bulk_create(changes)
        CatalogRevision.bump()
    return changes


def undo_batch(batch: uuid.UUID, *, acting_user) -> list[LabelChange]:
    return [r for c in LabelChange.objects.filter(batch=batch).exclude(action=Action.UNDO)
            if (r := undo(c, acting_user=acting_user))]


def _close_cluster_if_decided(cluster: NoiseCluster | None) -> None:
    """A cluster is done once no photo in it is left to decide (``decisions.pending``)."""
    if cluster is None:
        return
    left = pending(cluster.images.values_list("pk", flat=True))
    status = NoiseCluster.Status.OPEN if left else NoiseCluster.Status.DONE
    NoiseCluster.objects.filter(pk=cluster.pk).update(status=status)
