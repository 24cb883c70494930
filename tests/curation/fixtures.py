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


def make_queue() -> list[NoiseCluster]:
    """make_review_data's cluster (3 photos, confidence 0.8) and two one-photo clusters of the same run, more
    confident: a colosseum photo labelled taj_mahal (0.95) and a petra photo that shows no landmark (0.92)."""
    three = make_review_data()
    made = [three]
    for photo, label, target, confidence in [("colosseum", "taj_mahal", "colosseum", 0.95),
                                              ("petra", "petra", None, 0.92)]:
        image = Image.objects.filter(landmark__name=photo).order_by("external_id").first()
        wrong = Landmark.objects.get(name=label)
        right = Landmark.objects.get(name=target) if target else None
        Image.objects.filter(pk=image.pk).update(landmark=wrong)
        Verdict.objects.create(run=three.run, image=image, verdict="drop", label=wrong, suggested_landmark=right,
                               suggest_not_landmark=right is None, score=confidence, evidence={"neighbours": []})
        cluster = NoiseCluster.objects.create(run=three.run, kind="relabel" if right else "distractor",
                                              target_landmark=right, size=1, confidence=confidence,
                                              benefit=confidence, suggested_action="")
        cluster.images.set([image])
        made.append(cluster)
    return made
