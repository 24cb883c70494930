"""Cleaning runs build on each other: a second run updates the open clusters instead of adding copies,
curator decisions survive it, and a photo a curator kept comes back only with new evidence, marked so."""

import numpy as np
import pytest
from django.core.management import call_command

from ml.clean import CleaningEvidence, EvidenceConfig
from tests.curation.test_clean_job import flip
from webapp.catalog.models import Image, Landmark
from webapp.curation import actions
from webapp.curation.models import CleaningRun, LabelChange, NoiseCluster, Verdict
from webapp.jobs.models import Job
from worker.cleaning import conclude

pytestmark = pytest.mark.django_db
OPEN = NoiseCluster.Status.OPEN


def open_queue() -> dict[int, set[str]]:
    return {c.pk: set(c.images.values_list("external_id", flat=True))
            for c in NoiseCluster.objects.filter(status=OPEN)}


class Collection:
    """Three landmarks of landmarks-mini with two photos under the wrong label, and cleaning evidence over
    them as verification would find it: photos of one place verify with each other (60 inliers), others
    do not (0)."""

    def __init__(self):
        self.places = {}  # photo -> the landmark it shows
        for name in ("london_bridge", "piazza_san_marco", "chichen_itza"):
            for im in Image.objects.filter(landmark__name=name).order_by("external_id"):
                self.places[im.external_id] = im.landmark.external_id
        ids = sorted(self.places)
        self.moved = next(i for i in ids if self.places[i] == "2")  # a piazza photo labelled london_bridge
        self.other = next(i for i in ids if self.places[i] == "6")  # a chichen_itza photo labelled piazza
        Image.objects.filter(external_id=self.moved).update(landmark=Landmark.objects.get(external_id="1"))
        Image.objects.filter(external_id=self.other).update(landmark=Landmark.objects.get(external_id="2"))
        self.ids = ids
        self.extra: dict[tuple[str, str], int] = {}

    def run(self, tmp_path) -> CleaningRun:
        """The clean job's last step (decide, cluster, store) on this evidence and the current labels."""
        images = {im.external_id: im for im in Image.objects.filter(external_id__in=self.ids)}
        labels = [images[i].landmark.external_id for i in self.ids]
        job = Job.objects.create(kind=Job.Kind.CLEAN)
        # The neighbours' label vote is off: in a world of three landmarks a photo's 10 nearest neighbours
        # span the whole collection, so the vote reads the landmarks' sizes, not the photo's place.
        conclude(job, None, tmp_path, self.evidence(labels), {"thresholds": {"vote_margin": 1.0}}, labels,
                 {i: images[i].pk for i in self.ids})
        return CleaningRun.objects.get(job=job)

    def evidence(self, labels: list[str]) -> CleaningEvidence:
        """Each photo's neighbours as descriptors would rank them (its own place's photos first, cos 0.8;
        the others at 0.3: the neighbours' label vote reads that order) and their inliers."""
        n = len(self.ids)
        place = [self.places[i] for i in self.ids]
        neighbours = np.array([sorted((j for j in range(n) if j != i), key=lambda j: (place[j] != place[i], j))
                               for i in range(n)], dtype=np.int64)
        same = np.array([[place[i] == place[j] for j in row] for i, row in enumerate(neighbours)])
        inliers = np.zeros(neighbours.shape, np.int32)
        for i, row in enumerate(neighbours):
            for r, j in enumerate(row):
                a, b = self.ids[i], self.ids[j]
                inliers[i, r] = self.extra.get((a, b), self.extra.get((b, a), 60 if same[i, r] else 0))
        return CleaningEvidence(self.ids, labels, neighbours, np.where(same, 0.8, 0.3).astype(np.float32), inliers,
                                EvidenceConfig(k=n - 1))


@pytest.fixture
def collection(imported_mini):
    return Collection()


def test_a_kept_photo_comes_back_only_with_new_evidence_and_the_queue_says_so(collection, curator_user, client,
                                                                             tmp_path):
    moved, other = collection.moved, collection.other
    first = collection.run(tmp_path)
    queue = open_queue()
    assert sorted(map(sorted, queue.values())) == sorted([[moved], [other]]), queue  # both flagged, nothing else
    kept_in = NoiseCluster.objects.get(images__external_id=moved)
    keep = actions.keep_as_is(list(kept_in.images.all()), acting_user=curator_user, cluster=kept_in)[0]
    assert NoiseCluster.objects.get(pk=kept_in.pk).status == NoiseCluster.Status.DONE

    second = collection.run(tmp_path)  # the same evidence: nothing new about the kept photo
    assert open_queue() == {pk: ids for pk, ids in queue.items() if pk != kept_in.pk}
    assert NoiseCluster.objects.get(images__external_id=other, status=OPEN).run == second  # updated in place
    assert Verdict.objects.get(run=second, image__external_id=moved).reopens is None
    assert LabelChange.objects.get(image__external_id=moved).pk == keep.pk
    assert second.queue == {"updated": 1, "new": 0, "closed": 0, "requeued": 0}

    collection.extra[(moved, sorted(i for i in collection.ids if collection.places[i] == "6")[-1])] = 40
    third = collection.run(tmp_path)  # now it also verifies with a chichen_itza photo: new evidence
    verdict = Verdict.objects.get(run=third, image__external_id=moved)
    assert verdict.reopens_id == keep.pk
    assert [n["label"] for n in verdict.evidence["new_evidence"]] == ["6"]
    requeued = NoiseCluster.objects.get(images__external_id=moved, status=OPEN)
    assert len(open_queue()) == 2 and third.queue["requeued"] == 1
    assert first.pk != requeued.run_id == third.pk

    client.force_login(curator_user)
    page = client.get(requeued.get_absolute_url()).content.decode()
    assert "Re-queued on new evidence" in page and "chichen_itza" in page
    queue_page = client.get("/curation/").content.decode()
    assert "re-queued: new evidence" in queue_page
    assert f"run (#{third.pk}," in queue_page and "re-queued 1 decided photo on new evidence" in queue_page


def test_a_cluster_decided_elsewhere_is_closed_by_the_next_run(collection, curator_user, tmp_path):
    collection.run(tmp_path)
    cluster = NoiseCluster.objects.get(images__external_id=collection.other)
    actions.relabel([Image.objects.get(external_id=collection.other)], Landmark.objects.get(external_id="6"),
                    acting_user=curator_user, reason="from the image page")  # not through the cluster
    assert NoiseCluster.objects.get(pk=cluster.pk).status == OPEN
    run = collection.run(tmp_path)
    assert NoiseCluster.objects.get(pk=cluster.pk).status == NoiseCluster.Status.DONE
    assert set(open_queue()) == {NoiseCluster.objects.get(images__external_id=collection.moved).pk}
    assert run.queue["closed"] == 1


def test_clean_twice_leaves_the_queue_as_it_was_and_decisions_stand(imported_mini, curator_user):
    flip(0.1, seed=3)
    call_command("clean", "--no-verify")
    queue = open_queue()
    assert len(queue) >= 3
    call_command("clean", "--no-verify")
    assert open_queue() == queue  # the same clusters, the same photos: no second copy
    photos = [i for ids in queue.values() for i in ids]
    assert len(photos) == len(set(photos))  # no photo in two open clusters

    kept, accepted = (NoiseCluster.objects.get(pk=pk) for pk in sorted(queue)[:2])
    actions.keep_as_is(list(kept.images.all()), acting_user=curator_user, cluster=kept)
    actions.accept_suggestions(list(accepted.images.all()), accepted.run, acting_user=curator_user, cluster=accepted)
    labels = dict(Image.objects.values_list("external_id", "landmark_id"))
    changes = list(LabelChange.objects.values_list("pk", "image_id", "action", "new_landmark_id"))
    assert {a for *_, a, _ in changes} == {"keep", "accept"}

    call_command("clean", "--no-verify")
    third = CleaningRun.objects.first()
    assert dict(Image.objects.values_list("external_id", "landmark_id")) == labels  # a run changes no label
    assert list(LabelChange.objects.values_list("pk", "image_id", "action", "new_landmark_id")) == changes
    assert set(NoiseCluster.objects.filter(pk__in=[kept.pk, accepted.pk]).values_list("status", flat=True)) == {"done"}
    after = open_queue()
    decided = queue[kept.pk] | queue[accepted.pk]
    assert not decided & {i for ids in after.values() for i in ids}  # not asked again
    assert {pk: ids for pk, ids in after.items() if pk in queue} == {
        pk: ids for pk, ids in queue.items() if pk not in (kept.pk, accepted.pk)}
    assert not Verdict.objects.filter(run=third, reopens__isnull=False).exists()
