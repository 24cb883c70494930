"""A cleaning run with verdicts and clusters, written as rows (the cleaner itself is tested in ml/)."""

from webapp.catalog.models import Image, Landmark
from webapp.curation.models import CleaningRun, NoiseCluster, Verdict


def make_review_data() -> NoiseCluster:
    """Three london_bridge photos labelled piazza_san_marco by mistake, in one 'relabel' cluster."""
    bridge = Landmark.objects.get(name="london_bridge")
    piazza = Landmark.objects.get(name="piazza_san_marco")
    wrong = list(Image.objects.filter(landmark=bridge, split="index").order_by("external_id"))
    Image.objects.filter(pk__in=[im.pk for im in wrong]).update(landmark=piazza)
    right = Image.objects.filter(landmark=bridge).first()
    run = CleaningRun.objects.create(params={"k": 10})
    for im in wrong:
        Verdict.objects.create(run=run, image=im, verdict="drop", label=piazza, suggested_landmark=bridge, score=0.9,
                               evidence={"neighbours": [{"id": right.external_id, "similarity": 0.71, "inliers": 48}]})
    cluster = NoiseCluster.objects.create(run=run, kind="relabel", target_landmark=bridge, size=len(wrong),
                                          suggested_action="relabel to london_bridge", confidence=0.8, benefit=2.4)
    cluster.images.set(wrong)
    return cluster
