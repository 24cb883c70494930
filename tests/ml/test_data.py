"""Manifests, aspect-grouped batches, augmentations and tar-shard streaming, on real landmarks-mini photos."""

import csv
import itertools
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ml.data import (
    AUGMENTATIONS,
    TEMPLATES,
    GroupedBatchSampler,
    ManifestDataset,
    TarShardDataset,
    TrainingManifest,
    aspect_group,
    aspect_groups,
    augment,
    epoch_order,
    group_batches,
    list_shards,
    random_crop_then_scale,
    template_sizes,
    write_tar_shards,
)
from ml.datasets import DatasetError

MINI = Path(os.environ.get("LANDMARKS_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) \
    / "landmarks-mini"

torch.set_num_threads(1)


def _mini_rows(n_landmarks: int = 4, per_landmark: int = 3) -> list[dict]:
    """A few real photos: ``per_landmark`` of each of the first ``n_landmarks`` landmarks."""
    rows, taken = [], {}
    with (MINI / "images.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            lid = row["landmark_id"]
            if len(taken) < n_landmarks or lid in taken:
                if taken.get(lid, 0) < per_landmark:
                    taken[lid] = taken.get(lid, 0) + 1
                    rows.append({"image_id": row["id"], "path": MINI / "images" / f"{row['id']}.jpg",
                                 "landmark_id": lid, "width": int(row["width"]), "height": int(row["height"])})
    return rows


# --- templates, groups, batches --------------------------------------------------------------------

def test_aspect_groups_follow_bisect_right_on_reference_bins():
    # Five groups: bins 0.67, 0.77, 1.33, 1.5; a value on a bin edge goes to the group above it.
    assert [aspect_group(a, 5) for a in (0.5, 0.67, 0.7, 0.77, 1.0, 1.33, 1.4, 1.5, 2.0)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [aspect_group(a, 3) for a in (0.5, 0.77, 1.0, 1.33, 2.0)] == [0, 1, 1, 2, 2]
    assert aspect_groups([0.5, 1.0, 2.0], 3).tolist() == [0, 1, 2]


def test_templates_as_listed_in_the_reference():
    assert TEMPLATES["SS2"] == ((480, 320), (480, 352), (384, 384), (352, 480), (320, 480))
    assert TEMPLATES["M2"][2] == (704, 704) and TEMPLATES["L2"][2] == (800, 800)
    assert TEMPLATES["S"] == ((512, 384), (448, 448), (384, 512))
    assert TEMPLATES["SS"] == ((384, 256), (256, 256), (256, 384))
    for name, sizes in TEMPLATES.items():
        assert len(sizes) == (5 if "2" in name else 3)
        # Group 0 is the widest (aspect h/w smallest), the last the tallest.
        aspects = [h / w for w, h in sizes]
        assert aspects == sorted(aspects)
    small = template_sizes("SS2", max_side=64)
    assert max(max(s) for s in small) == 64 and small[2][0] == small[2][1]
    with pytest.raises(ValueError, match="unknown template"):
        template_sizes("XL9")


def _maskrcnn_grouped_batches(sampled_ids, group_ids, batch_size, drop_uneven):
    """maskrcnn-benchmark's GroupedBatchSampler._prepare_batches, transcribed, as an independent check."""
    sampled_ids = torch.as_tensor(sampled_ids)
    group_ids = torch.as_tensor(group_ids)
    order = torch.full((len(group_ids),), -1, dtype=torch.int64)
    order[sampled_ids] = torch.arange(len(sampled_ids))
    mask = order >= 0
    clusters = [(group_ids == i) & mask for i in torch.unique(group_ids).tolist()]
    relative_order = [order[c] for c in clusters]
    permutation_ids = [s[s.sort()[1]] for s in relative_order]
    permuted_clusters = [sampled_ids[idx] for idx in permutation_ids]
    splits = [c.split(batch_size) for c in permuted_clusters]
    merged = tuple(itertools.chain.from_iterable(splits))
    inv = {v: k for k, v in enumerate(sampled_ids.tolist())}
    first_index = torch.as_tensor([inv[t[0].item()] for t in merged])
    batches = [merged[i].tolist() for i in first_index.sort(0)[1].tolist()]
    return [b for b in batches if len(b) == batch_size] if drop_uneven else batches


def test_group_batches_by_hand_and_against_maskrcnn():
    groups = np.array([0, 1, 0, 1, 0, 0])
    assert group_batches([0, 1, 2, 3, 4, 5], groups, 2) == [[0, 2], [1, 3], [4, 5]]
    assert group_batches([0, 1, 2, 3, 4, 5], groups, 3) == [[0, 2, 4]]
    assert group_batches([0, 1, 2, 3, 4, 5], groups, 3, drop_uneven=False) == [[0, 2, 4], [1, 3], [5]]
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(5, 80))
        gids = rng.integers(0, 5, size=n)
        order = rng.permutation(n)
        for drop in (True, False):
            assert group_batches(order, gids, 4, drop) == _maskrcnn_grouped_batches(order, gids, 4, drop)


def test_grouped_sampler_is_reproducible_and_resumable():
    gids = np.random.default_rng(0).integers(0, 5, size=100)
    sampler = GroupedBatchSampler(100, 4, gids, seed=11)
    epoch0 = list(sampler)
    assert epoch0 == list(GroupedBatchSampler(100, 4, gids, seed=11))
    assert all(len({int(gids[i]) for i, _ in batch}) == 1 and len(batch) == 4 for batch in epoch0)
    sampler.set_epoch(0, start_batch=5)
    assert list(sampler) == epoch0[5:] and len(sampler) == len(epoch0) - 5
    sampler.set_epoch(1)
    assert [i for i, _ in list(sampler)[0]] != [i for i, _ in epoch0[0]]
    seeds = [s for batch in epoch0 for _, s in batch]
    assert len(set(seeds)) == len(seeds)  # every sample its own augmentation seed


def test_class_balanced_order():
    labels = np.array([0] * 90 + [1] * 10)
    plain = np.concatenate([epoch_order(100, 0, e, labels) for e in range(20)])
    balanced = np.concatenate([epoch_order(100, 0, e, labels, balance_power=1.0) for e in range(20)])
    assert sorted(plain[:100].tolist()) == list(range(100))  # a permutation
    assert (labels[plain] == 1).mean() == pytest.approx(0.1)
    assert (labels[balanced] == 1).mean() == pytest.approx(0.5, abs=0.05)


# --- manifests -------------------------------------------------------------------------------------

def test_manifest_from_gldv2_csvs(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train.csv").write_text("id,url,landmark_id\nabc0001,http://x,7\nabd0002,,12\nabe0003,,7\n")
    m = TrainingManifest.from_csv(tmp_path / "train.csv")
    assert m.landmark_ids == ["7", "12"]  # natural order, not "12" < "7"
    assert m.labels.tolist() == [0, 1, 0] and m.class_counts() == [2, 1]
    assert m[1] == ("abd0002", tmp_path / "train" / "a" / "b" / "d" / "abd0002.jpg", 1)
    clean = tmp_path / "clean.csv"
    clean.write_text("landmark_id,images\n7,abc0001 abe0003\n12,abd0002\n")
    m2 = TrainingManifest.from_csv(clean, image_root=tmp_path / "elsewhere", min_images_per_class=2)
    assert m2.image_ids == ["abc0001", "abe0003"] and m2.landmark_ids == ["7"]
    assert m2.path(0) == tmp_path / "elsewhere" / "a" / "b" / "c" / "abc0001.jpg"
    (tmp_path / "bad.csv").write_text("image,label\nx,1\n")
    with pytest.raises(DatasetError, match="bad.csv"):
        TrainingManifest.from_csv(tmp_path / "bad.csv")


def test_manifest_from_records_and_dataset():
    rows = _mini_rows(3, 2)
    m = TrainingManifest.from_records(rows + [{"image_id": "nolabel1", "path": None, "landmark_id": None}])
    assert len(m) == 6 and m.num_classes == 3
    assert m.aspects is not None and m.aspects[0] == pytest.approx(rows[0]["height"] / rows[0]["width"])
    assert m.label_of_landmark(rows[0]["landmark_id"]) == 0
    measured = TrainingManifest.from_records([(r["image_id"], r["path"], r["landmark_id"]) for r in rows])
    assert measured.aspects is None
    assert np.allclose(measured.measure_aspects(), m.aspects, atol=0.01)
    full = TrainingManifest.from_dataset(MINI)
    assert len(full) == 179 and full.num_classes == 34
    assert len(TrainingManifest.from_dataset(MINI, splits=["query"])) == 34


# --- transforms ------------------------------------------------------------------------------------

def test_augmentation_is_seeded_and_keeps_size():
    x = torch.rand(3, 40, 64, generator=torch.Generator().manual_seed(0))
    a = augment(x, AUGMENTATIONS["middle"], torch.Generator().manual_seed(5))
    b = augment(x, AUGMENTATIONS["middle"], torch.Generator().manual_seed(5))
    c = augment(x, AUGMENTATIONS["middle"], torch.Generator().manual_seed(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    same = random_crop_then_scale(x, 0.0, torch.Generator().manual_seed(1))
    assert torch.allclose(same, x, atol=1e-5)  # zero limit: the crop is the whole image


def test_manifest_dataset_sizes_follow_aspect_groups():
    rows = _mini_rows(4, 2)
    m = TrainingManifest.from_records(rows)
    sizes = template_sizes("SS2", max_side=64)
    ds = ManifestDataset(m, sizes, "soft")
    for i in range(len(m)):
        x, label = ds[(i, 123)]
        w, h = sizes[aspect_group(m.aspects[i], 5)]
        assert x.shape == (3, h, w) and label == int(m.labels[i])
    x1, _ = ds[(0, 123)]
    assert torch.equal(x1, ds[(0, 123)][0]) and not torch.equal(x1, ds[(0, 124)][0])
    plain, _ = ManifestDataset(m, sizes)[0]
    assert -1.0 <= float(plain.min()) and float(plain.max()) <= 1.0  # normalised with mean = std = 0.5


# --- tar shards ------------------------------------------------------------------------------------

def test_write_tar_shards_layouts(tmp_path):
    rows = _mini_rows(2, 3)
    shards = write_tar_shards([(r["image_id"], r["path"]) for r in rows], tmp_path / "s", images_per_shard=4)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert list_shards(tmp_path / "s") == shards
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
    iid = rows[0]["image_id"]
    assert names[0] == f"{iid[0]}/{iid[1]}/{iid[2]}/{iid}.jpg" and len(names) == 4
    flat = write_tar_shards([(r["image_id"], r["path"]) for r in rows], tmp_path / "f", 10, layout="flat")
    with tarfile.open(flat[0]) as tar:
        assert tar.getnames()[0] == f"{iid}.jpg"
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]


def _stream_ids(ds: TarShardDataset, ids_by_label: dict[int, str], **loader) -> list[str]:
    if loader:
        batches = DataLoader(ds, batch_size=2, **loader)
        return [ids_by_label[int(lbl)] for _, labels, _ in batches for lbl in labels]
    return [ids_by_label[label] for _, label, _ in ds]


def test_tar_stream_reads_every_labelled_image_once_and_resumes(tmp_path):
    rows = _mini_rows(3, 3)
    shards = write_tar_shards([(r["image_id"], r["path"]) for r in rows], tmp_path, images_per_shard=4)
    # One label per image, so labels name the images; the last image is left out (a cleaned-out one).
    label_by_image = {r["image_id"]: i for i, r in enumerate(rows[:-1])}
    ids_by_label = {i: iid for iid, i in label_by_image.items()}
    ds = TarShardDataset(shards, label_by_image, size=(48, 32), buffer_size=3, seed=1)
    first = _stream_ids(ds, ids_by_label)
    assert sorted(first) == sorted(label_by_image) and len(first) == len(rows) - 1
    assert next(iter(ds))[0].shape == (3, 32, 48)
    assert _stream_ids(ds, ids_by_label) == first  # same epoch, same order
    ds.set_epoch(1)
    second = _stream_ids(ds, ids_by_label)
    assert sorted(second) == sorted(first) and second != first
    ds.set_epoch(1, skip=3)
    assert _stream_ids(ds, ids_by_label) == second[3:]


def test_tar_stream_splits_shards_across_workers(tmp_path):
    rows = _mini_rows(2, 4)
    shards = write_tar_shards([(r["image_id"], r["path"]) for r in rows], tmp_path, images_per_shard=2,
                              layout="flat")
    label_by_image = {r["image_id"]: i for i, r in enumerate(rows)}
    ids_by_label = {i: iid for iid, i in label_by_image.items()}
    ds = TarShardDataset(shards, label_by_image, size=(32, 32), buffer_size=2)
    ids = _stream_ids(ds, ids_by_label, num_workers=2)
    assert sorted(ids) == sorted(label_by_image)  # each image once, whichever worker read it
