"""Curation on the server: actions write the audit trail, undo restores, roles are enforced on every
URL and action, and the cleaned export reflects the decisions."""

import csv

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.urls import reverse

from tests.curation.fixtures import make_review_data
from webapp.catalog.models import Image, Landmark
from webapp.curation import actions
from webapp.curation.models import LabelChange, NoiseCluster

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(imported_mini):
    return make_review_data()


def test_relabel_records_who_when_old_new_and_why(cluster, curator_user):
    bridge, piazza = cluster.target_landmark, Landmark.objects.get(name="piazza_san_marco")
    images = list(cluster.images.all())
    changes = actions.relabel(images, bridge, acting_user=curator_user, reason="looks like the bridge", cluster=cluster)
    assert len(changes) == 3
    row = LabelChange.objects.get(image=images[0])
    assert (row.old_landmark, row.new_landmark, row.decided_by, row.reason) == (piazza, bridge, curator_user,
                                                                               "looks like the bridge")
    assert row.cluster == cluster and row.cleaning_run == cluster.run
    assert Image.objects.filter(pk__in=[i.pk for i in images], landmark=bridge).count() == 3
    cluster.refresh_from_db()
    assert cluster.status == NoiseCluster.Status.DONE


def test_undo_restores_the_label_and_reopens_the_cluster(cluster, curator_user):
    images = list(cluster.images.all())
    changes = actions.relabel(images, cluster.target_landmark, acting_user=curator_user, cluster=cluster)
    reverted = actions.undo(changes[0], acting_user=curator_user)
    assert reverted.action == "undo" and reverted.undoes == changes[0]
    assert Image.objects.get(pk=changes[0].image_id).landmark.name == "piazza_san_marco"
    assert actions.undo(changes[0], acting_user=curator_user) is None  # twice does nothing
    cluster.refresh_from_db()
    assert cluster.status == NoiseCluster.Status.OPEN


def test_accept_not_landmark_keep_and_merge(cluster, curator_user):
    images = list(cluster.images.order_by("external_id"))
    actions.accept_suggestions(images[:1], cluster.run, acting_user=curator_user, cluster=cluster)
    actions.mark_not_landmark(images[1:2], acting_user=curator_user)
    actions.keep_as_is(images[2:], acting_user=curator_user)
    labels = [Image.objects.get(pk=i.pk).landmark for i in images]
    assert labels[0].name == "london_bridge" and labels[1] is None and labels[2].name == "piazza_san_marco"
    piazza, bridge = Landmark.objects.get(name="piazza_san_marco"), Landmark.objects.get(name="london_bridge")
    n_piazza = piazza.images.count()
    merged = actions.merge_landmarks(piazza, bridge, acting_user=curator_user)
    assert len(merged) == n_piazza and piazza.images.count() == 0
    assert {c.action for c in LabelChange.objects.all()} == {"accept", "not_landmark", "keep", "merge"}


def test_viewers_cannot_change_labels(cluster, viewer_user):
    with pytest.raises(PermissionDenied):
        actions.relabel(list(cluster.images.all()), cluster.target_landmark, acting_user=viewer_user)
    assert not LabelChange.objects.exists()


def test_every_curation_url_and_action_is_403_for_a_viewer(client, cluster, viewer_user, curator_user):
    change = actions.relabel(list(cluster.images.all())[:1], cluster.target_landmark, acting_user=curator_user)[0]
    client.force_login(viewer_user)
    gets = [reverse("curation-queue"), reverse("cluster-detail", args=[cluster.pk]),
            reverse("landmark-autocomplete") + "?q=br"]
    posts = [(reverse("cluster-apply", args=[cluster.pk]), {"action": "not_landmark", "images": ["x"]}),
             (reverse("change-undo", args=[change.pk]), {}),
             (reverse("batch-undo"), {"batch": str(change.batch)})]
    for url in gets:
        assert client.get(url).status_code == 403, url
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert LabelChange.objects.count() == 1
    admin_posts = [("/admin/catalog/image/", {"action": "mark_not_landmark",
                                              "_selected_action": [cluster.images.first().pk]})]
    viewer_user.is_staff = True  # even with admin-site access, no curation without the role
    viewer_user.save()
    for url, data in admin_posts:
        assert client.post(url, data).status_code == 403


def test_review_page_applies_actions_and_offers_undo(client, cluster, curator_user, django_assert_max_num_queries):
    client.force_login(curator_user)
    with django_assert_max_num_queries(14):  # however many photos: the count left, the next cluster, your last decisions
        html = client.get(cluster.get_absolute_url()).content.decode()
    assert "Nearest verified" in html and "48 inliers" in html and "<kbd>r</kbd>" in html
    ids = list(cluster.images.values_list("external_id", flat=True))
    response = client.post(reverse("cluster-apply", args=[cluster.pk]),
                           {"action": "relabel", "landmark": "london_bridge (1)", "images": ids[:2]}, follow=True)
    assert "2 images: relabel." in response.content.decode()
    assert 'id="undo-last"' in response.content.decode()
    assert Image.objects.filter(external_id__in=ids[:2], landmark__name="london_bridge").count() == 2
    batch = LabelChange.objects.first().batch
    client.post(reverse("batch-undo"), {"batch": str(batch)})
    assert Image.objects.filter(external_id__in=ids[:2], landmark__name="piazza_san_marco").count() == 2
    bad = client.post(reverse("cluster-apply", args=[cluster.pk]),
                      {"action": "relabel", "landmark": "Atlantis", "images": ids[:1]}, follow=True)
    assert "Unknown landmark" in bad.content.decode()


def test_history_shows_on_image_and_landmark_pages(client, cluster, curator_user):
    image = cluster.images.first()
    actions.relabel([image], cluster.target_landmark, acting_user=curator_user, reason="bridge arches")
    client.force_login(curator_user)
    assert "bridge arches" in client.get(image.get_absolute_url()).content.decode()
    assert "bridge arches" in client.get(cluster.target_landmark.get_absolute_url()).content.decode()


def test_admin_actions_use_the_audited_path(client, cluster, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    client.force_login(root)
    image = cluster.images.first()
    client.post("/admin/catalog/image/", {"action": "relabel", "landmark": "1", "_selected_action": [image.pk]})
    assert LabelChange.objects.get(image=image).new_landmark.external_id == "1"
    piazza = Landmark.objects.get(name="piazza_san_marco")
    client.post("/admin/catalog/landmark/", {"action": "merge_into", "landmark": "1", "_selected_action": [piazza.pk]})
    assert piazza.images.count() == 0 and LabelChange.objects.filter(action="merge").exists()


def test_export_cleaned_writes_current_labels_and_a_manifest(cluster, curator_user, tmp_path):
    images = list(cluster.images.order_by("external_id"))
    actions.relabel(images[:1], cluster.target_landmark, acting_user=curator_user, reason="same bridge")
    actions.mark_not_landmark(images[1:2], acting_user=curator_user, reason="a boat")
    # images[2] keeps its 'drop' verdict, unreviewed: left out of the cleaned subset
    out = tmp_path / "clean.csv"
    call_command("export_cleaned", "--out", str(out))
    rows = {r["landmark_id"]: r["images"].split() for r in csv.DictReader(out.open())}
    assert images[0].external_id in rows["1"]
    everything = {i for ids in rows.values() for i in ids}
    assert images[1].external_id not in everything and images[2].external_id not in everything
    assert len(everything) == 179 - 2
    manifest = {r["id"]: r for r in csv.DictReader(open(f"{out}.manifest.csv"))}
    assert list(next(csv.reader(open(f"{out}.manifest.csv")))) == ["id", "old_label", "new_label", "action",
                                                                   "reason", "decided_by"]
    assert manifest[images[0].external_id] | {} == {"id": images[0].external_id, "old_label": "2", "new_label": "1",
                                                    "action": "relabel", "reason": "same bridge",
                                                    "decided_by": "curator"}
    assert manifest[images[1].external_id]["action"] == "not_landmark"
    assert manifest[images[2].external_id]["action"] == "drop"


def test_export_cleaned_cells_cannot_run_as_formulas(cluster, django_user_model, tmp_path):
    """A reason and a user name typed by people reach the manifest neutralised (CSV formula injection)."""
    from django.contrib.auth.models import Group

    hostile = django_user_model.objects.create_user("@evil", password="pw-evil-12345")
    hostile.groups.add(Group.objects.get_or_create(name="curators")[0])
    images = list(cluster.images.order_by("external_id"))
    actions.relabel(images[:1], cluster.target_landmark, acting_user=hostile, reason='=HYPERLINK("http://x","y")')
    actions.mark_not_landmark(images[1:2], acting_user=hostile, reason="-2+3+cmd|' /C calc'!A0")
    out = tmp_path / "clean.csv"
    call_command("export_cleaned", "--out", str(out))
    manifest = {r["id"]: r for r in csv.DictReader(open(f"{out}.manifest.csv"))}
    assert manifest[images[0].external_id]["reason"] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert manifest[images[1].external_id]["reason"] == "'-2+3+cmd|' /C calc'!A0"
    assert manifest[images[0].external_id]["decided_by"] == "'@evil"
    text = out.read_text() + open(f"{out}.manifest.csv").read()
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in csv.reader(text.splitlines()) for cell in row)


def test_takedown_hides_an_image_from_search_at_once(active_index, curator_user, client):
    from PIL import Image as PILImage

    from tests.conftest import MINI
    from webapp.search.engine import search_photo

    photo = PILImage.open(MINI / "images" / "233e2de188985424.jpg").convert("RGB")
    top = search_photo(photo).hits[0].image_id
    image = Image.objects.get(external_id=top)
    client.force_login(curator_user)
    client.post(reverse("image-takedown", args=[top]))
    assert Image.objects.get(pk=image.pk).taken_down
    assert top not in [h.image_id for h in search_photo(photo).hits]
    assert LabelChange.objects.filter(image=image, action="takedown").exists()
    client.post(reverse("image-takedown", args=[top]), {"restore": "1"})
    assert search_photo(photo).hits[0].image_id == top
    image.delete()  # deleted images leave the results too
    assert top not in [h.image_id for h in search_photo(photo).hits]
