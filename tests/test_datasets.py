"""ml.datasets: layout detection and listing for the three layouts, and clear errors for bad CSVs."""

import pytest

from ml.datasets import DatasetError, detect_layout, read_dataset
from tests.conftest import MINI
from tests.layouts import make_folders_layout, make_gldv2_clean_layout, make_gldv2_layout


def test_landmarks_mini_layout():
    listing = read_dataset(MINI)
    assert listing.layout == "landmarks-mini"
    assert len(listing.landmarks) == 34 and len(listing.images) == 179
    assert {im.split for im in listing.images} == {"query", "index"}
    assert listing.problems == []


def test_gldv2_train_csv_layout(tmp_path):
    root = make_gldv2_layout(tmp_path / "gld", under_train=True)
    listing = read_dataset(root)
    assert listing.layout == "gldv2"
    assert len(listing.images) == 179 and len(listing.landmarks) == 34
    first = listing.images[0]
    assert first.path == root / "train" / first.image_id[0] / first.image_id[1] / first.image_id[2] / f"{first.image_id}.jpg"
    assert first.path.exists()


def test_gldv2_clean_layout_without_train_folder(tmp_path):
    root = make_gldv2_clean_layout(tmp_path / "clean")
    listing = read_dataset(root)
    assert listing.layout == "gldv2-clean"
    assert len(listing.images) == 179
    assert all(im.path.exists() for im in listing.images)


def test_folders_layout_uses_folder_names(tmp_path):
    root = make_folders_layout(tmp_path / "folders")
    listing = read_dataset(root)
    assert listing.layout == "folders"
    names = {lm.name for lm in listing.landmarks}
    assert "london_bridge" in names and len(names) == 34
    assert len(listing.images) == 179


def test_wrong_columns_name_the_file_and_columns(tmp_path):
    (tmp_path / "train.csv").write_text("image,label\nabc,1\n")
    with pytest.raises(DatasetError, match=r"train.csv: unknown columns \['image', 'label'\]"):
        detect_layout(tmp_path)


def test_missing_column_in_mini_layout(tmp_path):
    (tmp_path / "images.csv").write_text("id,split\nabc,index\n")
    (tmp_path / "landmarks.csv").write_text("landmark_id,name\n1,x\n")
    with pytest.raises(DatasetError, match="images.csv: missing column"):
        read_dataset(tmp_path)


def test_unrecognised_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no known data set layout"):
        detect_layout(tmp_path)


def test_bad_ids_unknown_landmarks_and_duplicates_are_reported_by_row(tmp_path):
    (tmp_path / "landmarks.csv").write_text("landmark_id,name\n1,bridge\n")
    (tmp_path / "images.csv").write_text(
        "id,landmark_id,split\n"
        "aaa111,1,index\n"
        "../../etc/passwd,1,index\n"
        "bbb222,99,index\n"
        "aaa111,1,query\n"
    )
    listing = read_dataset(tmp_path)
    assert [im.image_id for im in listing.images] == ["aaa111"]
    text = "\n".join(listing.problems)
    assert "row 2: id: '../../etc/passwd' is not a valid id" in text
    assert "row 3: image bbb222 has unknown landmark_id '99'" in text
    assert "duplicate image id aaa111" in text


def test_non_utf8_csv_is_a_clear_error(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"id,url,landmark_id\n\xff\xfe\x00bad,,1\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(tmp_path)
