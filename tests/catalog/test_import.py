"""Importing data sets into the database: every layout, idempotence, bad files, the command and its Job."""

import shutil

import pytest
from django.core.files.storage import default_storage
from django.core.management import CommandError, call_command

from tests.badimages import png_header_bomb, text_as_jpeg, truncated_jpeg
from tests.layouts import make_folders_layout, make_gldv2_clean_layout, make_gldv2_layout
from webapp.catalog.models import Image, Landmark
from webapp.jobs.models import Job
from worker.importing import import_dataset

pytestmark = pytest.mark.django_db


def test_landmarks_mini_import_keeps_external_ids_labels_and_splits(mini_dir):
    result = import_dataset(mini_dir)
    assert (result.landmarks_added, result.images_added, result.bad_files) == (34, 179, [])
    im = Image.objects.select_related("landmark").get(external_id="233e2de188985424")
    assert im.landmark.external_id == "1" and im.landmark.name == "london_bridge"
    assert im.split == "query" and (im.width, im.height) == (767, 1024)
    assert im.path == str(mini_dir / "images" / "233e2de188985424.jpg") and not im.file
    assert Image.objects.filter(split="index").count() == 145
    assert "CC" in im.landmark.source


@pytest.mark.parametrize("make, landmark", [
    (make_gldv2_layout, ("1", "london bridge")),  # name from train_label_to_category.csv
    (make_gldv2_clean_layout, ("1", "landmark 1")),  # no names in GLDv2-clean
    (make_folders_layout, ("london_bridge", "london_bridge")),
])
def test_other_layouts_import_every_image(make, landmark, tmp_path):
    root = make(tmp_path / "data")
    result = import_dataset(root)
    assert result.images_added == 179 and result.bad_files == []
    assert Landmark.objects.count() == 34
    assert Image.objects.filter(landmark__isnull=True).count() == 0
    im = Image.objects.get(external_id="233e2de188985424")
    assert (im.landmark.external_id, im.landmark.name) == landmark
    assert im.split == "train"


def test_second_import_adds_nothing(mini_dir):
    import_dataset(mini_dir)
    again = import_dataset(mini_dir)
    assert (again.landmarks_added, again.images_added, again.images_skipped) == (0, 0, 179)
    assert Image.objects.count() == 179 and Landmark.objects.count() == 34


def test_bad_images_are_reported_by_name_and_the_rest_imported(tmp_path, mini_dir):
    root = make_folders_layout(tmp_path / "data")
    bridge = root / "london_bridge"
    truncated_jpeg(mini_dir / "images" / "233e2de188985424.jpg", bridge / "cut.jpg")
    text_as_jpeg(bridge / "fake.jpg")
    png_header_bomb(bridge / "bomb.png")
    lines = []
    result = import_dataset(root, note=lines.append)
    assert result.images_added == 179
    assert len(result.bad_files) == 3
    report = "\n".join(lines)
    assert "cut.jpg (id cut): corrupt or truncated" in report
    assert "fake.jpg (id fake): not an image" in report
    assert "bomb.png (id bomb): too many pixels" in report
    assert not Image.objects.filter(external_id__in=["cut", "fake", "bomb"]).exists()


def test_copy_puts_files_in_media_storage(tmp_path, mini_dir):
    root = make_gldv2_clean_layout(tmp_path / "data")
    import_dataset(root, copy=True)
    im = Image.objects.get(external_id="233e2de188985424")
    assert im.file.name == "images/233e2de188985424.jpg"
    assert default_storage.exists(im.file.name)
    shutil.rmtree(root)  # the copy no longer needs the original
    with im.open() as f:
        assert f.read(2) == b"\xff\xd8"


def test_batches_commit_separately(mini_dir):
    result = import_dataset(mini_dir, batch_size=50)
    assert result.images_added == 179


def test_split_override_and_unknown_split(mini_dir, tmp_path):
    import_dataset(mini_dir, split="index")
    assert set(Image.objects.values_list("split", flat=True)) == {"index"}
    (tmp_path / "landmarks.csv").write_text("landmark_id,name\n1,bridge\n")
    (tmp_path / "images.csv").write_text("id,landmark_id,split\nnewone1,1,validation\n")
    (tmp_path / "images").mkdir()
    shutil.copyfile(mini_dir / "images" / "233e2de188985424.jpg", tmp_path / "images" / "newone1.jpg")
    result = import_dataset(tmp_path)
    assert result.images_added == 0
    assert "unknown split 'validation'" in result.problems[-1]


def test_command_records_a_job_with_progress(mini_dir, capsys):
    call_command("import_dataset", str(mini_dir), "--no-thumbnails", "--no-index")
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    assert job.state == Job.State.SUCCEEDED
    assert (job.progress_done, job.progress_total) == (179, 179)
    assert job.result["images_added"] == 179 and job.started_at and job.finished_at
    assert f"job {job.pk} succeeded" in capsys.readouterr().out


def test_command_rejects_a_folder_that_is_no_data_set(tmp_path):
    with pytest.raises(CommandError, match="no known data set layout"):
        call_command("import_dataset", str(tmp_path))
    assert not Job.objects.exists()


def test_command_fails_the_job_on_malformed_csv(tmp_path):
    (tmp_path / "landmarks.csv").write_text("landmark_id,name\n1,bridge\n")
    (tmp_path / "images.csv").write_text("identifier,label\nx,1\n")
    with pytest.raises(CommandError, match="missing column"):
        call_command("import_dataset", str(tmp_path))
    job = Job.objects.get()
    assert job.state == Job.State.FAILED and "images.csv: missing column(s) id, landmark_id" in job.error
    assert Image.objects.count() == 0


def test_thumbnail_job_makes_each_thumbnail_once(imported_mini):
    call_command("generate_thumbnails")
    im = Image.objects.get(external_id="233e2de188985424")
    assert im.thumbnail and default_storage.exists(im.thumbnail)
    assert Image.objects.filter(thumbnail="").count() == 0
    call_command("generate_thumbnails")
    assert Job.objects.filter(kind=Job.Kind.THUMBNAILS).first().result == {"thumbnails": 0, "failed": 0}


def _only_bad_files(root):
    """A folder-per-landmark data set whose every file is bad."""
    text_as_jpeg((root / "ghost_tower").mkdir(parents=True) or root / "ghost_tower" / "fake.jpg")
    png_header_bomb(root / "ghost_tower" / "bomb.png")
    return root


def test_rows_all_rejected_leave_no_empty_landmark(tmp_path):
    result = import_dataset(_only_bad_files(tmp_path / "data"))
    assert (result.images_added, result.rejected, result.landmarks_added) == (0, 2, 0)
    assert not Landmark.objects.exists()


def test_an_import_that_imports_nothing_fails_naming_the_problem(tmp_path):
    with pytest.raises(CommandError, match="nothing imported"):
        call_command("import_dataset", str(_only_bad_files(tmp_path / "data")), "--no-thumbnails", "--no-index")
    job = Job.objects.get()
    assert job.state == Job.State.FAILED
    assert job.message.startswith("nothing imported: all 2 row(s) were rejected; first: bad image ")
    assert "\n" not in job.message and "(id bomb): too many pixels" in job.message + job.log
    assert not Landmark.objects.exists() and not Job.objects.exclude(pk=job.pk).exists()  # nothing queued


def test_an_import_with_some_rows_rejected_succeeds_with_a_warning(tmp_path, mini_dir):
    root = make_folders_layout(tmp_path / "data")
    text_as_jpeg(root / "london_bridge" / "fake.jpg")
    call_command("import_dataset", str(root), "--no-thumbnails", "--no-index")
    job = Job.objects.get()
    assert job.state == Job.State.SUCCEEDED and job.result["images_added"] == 179
    assert job.warning == job.result["warning"] == job.message == \
        "1 row(s) rejected (1 bad file(s), 0 bad row(s)); see the log"
    assert "fake.jpg (id fake): not an image" in job.log


def test_a_second_import_that_adds_nothing_is_no_failure(mini_dir):
    call_command("import_dataset", str(mini_dir), "--no-thumbnails", "--no-index")
    call_command("import_dataset", str(mini_dir), "--no-thumbnails", "--no-index")
    second = Job.objects.first()
    assert second.state == Job.State.SUCCEEDED and second.result["images_skipped"] == 179 and not second.warning
