"""Descriptor extraction on real photos, PCA whitening, ensembles and shard files."""

import io
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.embed import (
    EmbedConfig,
    PCAWhitening,
    StackedRows,
    concat_ensemble,
    embed_image,
    embed_images,
    power_mean,
    read_embedding_shards,
    target_size,
    write_embedding_blocks,
    write_embedding_shards,
)
from ml.models import gem
from ml.weights import load_model

torch.set_num_threads(1)  # the test machine is shared: one thread is fastest there
SMALL = dict(image_size=128, num_workers=0, torch_threads=1)


@pytest.fixture(scope="module")
def model():
    return load_model("packaged:tf_efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(mini_dir) -> list[Path]:
    return sorted((mini_dir / "images").glob("*.jpg"))[:6]


def test_target_size_keeps_aspect_long_side_and_stride():
    assert target_size(1024, 768, 512) == (512, 384)
    assert target_size(767, 1024, 512) == (384, 512)
    assert target_size(100, 50, 128) == (128, 64)  # small images are enlarged
    assert target_size(4000, 100, 512) == (512, 32)  # never below one stride


def test_embed_images_unit_vectors_in_order_with_progress(model, photos):
    calls = []
    cfg = EmbedConfig(image_size=128, batch_size=4, num_workers=1, torch_threads=1)
    vecs = embed_images(model, photos, cfg, progress=lambda done, total: calls.append((done, total)))
    assert vecs.shape == (6, 1280) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert calls == [(4, 6), (6, 6)]
    # Batched, multi-process extraction gives what one image at a time does, in the same order.
    one_by_one = embed_images(model, photos[::-1], EmbedConfig(**SMALL))[::-1]
    assert np.allclose(vecs, one_by_one, atol=1e-5)
    assert len({tuple(np.round(v[:4], 4)) for v in vecs}) == 6  # different photos, different vectors


def test_batches_are_grouped_by_shape(photos, tmp_path):
    from ml.embed import shape_order

    # A portrait copy (EXIF-rotated landscape) between landscape photos: grouped with its real shape.
    with Image.open(photos[0]) as img:
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        img.save(tmp_path / "rotated.jpg", exif=exif)
    items = [photos[0], tmp_path / "rotated.jpg", photos[1], tmp_path / "missing.jpg", photos[2]]
    order = shape_order(items, 128)
    assert sorted(order) == list(range(len(items))) and order[0] == 3  # the unreadable file sorts first
    shapes = []
    for i in order[1:]:
        with Image.open(items[i]) as img:
            w, h = img.size
            rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        shapes.append(target_size(*((h, w) if rotated else (w, h)), 128))
    # Each shape appears in one contiguous run.
    runs = [s for n, s in enumerate(shapes) if n == 0 or shapes[n - 1] != s]
    assert len(runs) == len(set(shapes))


def test_embed_images_restores_training_mode_and_handles_empty_input(model):
    model.train()
    try:
        assert embed_images(model, [], EmbedConfig(**SMALL)).shape == (0, 1280)
    finally:
        model.eval()


def test_embed_image_matches_the_file_path_and_file_objects(model, photos):
    cfg = EmbedConfig(**SMALL)
    from_disk = embed_images(model, photos[:1], cfg)[0]
    with Image.open(photos[0]) as img:
        uploaded = embed_image(model, img, cfg)
    from_bytes = embed_images(model, [io.BytesIO(photos[0].read_bytes())], cfg)[0]
    assert uploaded.shape == (1280,)
    assert float(uploaded @ from_disk) > 0.9999
    assert np.allclose(from_bytes, from_disk, atol=1e-6)


def test_exif_rotation_is_honoured(model, photos, tmp_path):
    upright = Image.open(photos[1]).convert("RGB")
    upright.save(tmp_path / "upright.png")
    # Stored sideways with orientation 6 ("rotate 90 degrees clockwise to display"), as phones do.
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "tagged.png", exif=exif)
    sideways.save(tmp_path / "untagged.png")
    vecs = embed_images(
        model, [tmp_path / n for n in ("upright.png", "tagged.png", "untagged.png")], EmbedConfig(**SMALL)
    )
    assert float(vecs[0] @ vecs[1]) > 0.999
    assert float(vecs[0] @ vecs[2]) < 0.98  # the check above could fail: rotation does change the vector


def test_flip_tta_is_symmetric_and_changes_the_descriptor(model, photos, tmp_path):
    img = Image.open(photos[2]).convert("RGB")
    img.save(tmp_path / "a.png")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")
    flip = embed_images(model, [tmp_path / "a.png", tmp_path / "mirror.png"], EmbedConfig(flip=True, **SMALL))
    plain = embed_images(model, [tmp_path / "a.png", tmp_path / "mirror.png"], EmbedConfig(**SMALL))
    assert np.allclose(flip[0], flip[1], atol=1e-5)
    assert not np.allclose(plain[0], plain[1], atol=1e-3)
    assert np.allclose(np.linalg.norm(flip, axis=1), 1, atol=1e-5)


def test_multiscale_runs_and_differs_from_single_scale(model, photos):
    single = embed_images(model, photos[:2], EmbedConfig(**SMALL))
    multi = embed_images(model, photos[:2], EmbedConfig(scales=(1.0, 0.75, 1.25), **SMALL))
    assert multi.shape == single.shape
    assert np.allclose(np.linalg.norm(multi, axis=1), 1, atol=1e-5)
    similarity = np.sum(single * multi, axis=1)
    assert np.all(similarity > 0.8) and np.all(similarity < 0.9999)


def test_power_mean_is_gem_over_all_views_positions():
    torch.manual_seed(0)
    a, b = torch.rand(1, 4, 3, 3) + 0.1, torch.rand(1, 4, 3, 3) + 0.1
    p = 3.0
    averaged = power_mean([gem(a, p), gem(b, p)], p)
    expected = ((gem(a, p) ** p + gem(b, p) ** p) / 2) ** (1 / p)
    assert torch.allclose(averaged, expected)
    # Equal-sized maps: the same as GeM over both maps' positions together.
    assert torch.allclose(averaged, gem(torch.cat([a, b], dim=-1), p), atol=1e-6)
    assert torch.equal(power_mean([a], p), a)


def test_bad_image_names_the_file(model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        embed_images(model, [bad], EmbedConfig(**SMALL))


# ------------------------------------------------------------------------------------------- whitening


def correlated(n: int = 400, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d))
    return (rng.normal(size=(n, d)) * np.arange(1, d + 1)) @ mixing + 5.0


def test_pca_whitening_decorrelates_and_roundtrips(tmp_path):
    x = correlated()
    before = np.corrcoef(x, rowvar=False)
    white = PCAWhitening.fit(x)
    out = white.apply(x, normalize=False)
    cov = np.cov(out, rowvar=False, bias=True)
    assert np.abs(before - np.eye(6)).max() > 0.3
    assert np.allclose(cov, np.eye(6), atol=1e-4)  # unit variance, no correlation
    assert np.allclose(np.linalg.norm(white.apply(x), axis=1), 1, atol=1e-5)
    reduced = PCAWhitening.fit(x, dim=3)
    assert reduced.apply(x).shape == (400, 3)
    # The kept components are the highest-variance ones: they match the full whitening's first three.
    assert np.allclose(np.abs(reduced.apply(x, normalize=False)), np.abs(out[:, :3]), atol=1e-4)
    path = white.save(tmp_path / "white.npz")
    assert np.array_equal(PCAWhitening.load(path).apply(x), white.apply(x))


def test_pca_whitening_with_fewer_vectors_than_dims_stays_finite():
    x = correlated(n=5, d=12)
    white = PCAWhitening.fit(x)
    assert white.dim <= 4  # 5 centred vectors span at most 4 directions
    assert np.isfinite(white.apply(x)).all()
    with pytest.raises(ValueError, match="only"):
        PCAWhitening.fit(x, dim=10)


def test_concat_ensemble_weights_and_normalises():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0], [0.0, 5.0]])
    out = concat_ensemble([a, b], [1.0, 0.5])
    expected = np.array([[0.6, 0.8, 0.0, 0.5], [1.0, 0.0, 0.0, 0.5]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(out, expected)
    with pytest.raises(ValueError, match="weights"):
        concat_ensemble([a, b], [1.0])


# ---------------------------------------------------------------------------------------------- shards


def test_shards_roundtrip_in_fp16_and_publish_atomically(tmp_path):
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(5, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"img{i:02d}" for i in range(5)]
    out = write_embedding_shards(tmp_path / "set1", ids, vecs, shard_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set1"]  # no temp folder left
    assert sorted(p.name for p in out.glob("shard-*")) == [
        "shard-00000.ids.txt",
        "shard-00000.npy",
        "shard-00001.ids.txt",
        "shard-00001.npy",
        "shard-00002.ids.txt",
        "shard-00002.npy",
    ]
    got_ids, got = read_embedding_shards(out)
    assert got_ids == ids and got.dtype == np.float16 and got.shape == (5, 8)
    assert np.allclose(got, vecs, atol=1e-3)
    _, as32 = read_embedding_shards(out, mmap=False, dtype=np.float32)
    assert as32.dtype == np.float32 and np.allclose(as32, vecs, atol=1e-3)
    with pytest.raises(FileExistsError):
        write_embedding_shards(out, ids, vecs)


def test_single_shard_is_memory_mapped_and_empty_sets_work(tmp_path):
    vecs = np.eye(3, dtype=np.float32)
    out = write_embedding_shards(tmp_path / "one", ["a", "b", "c"], vecs)
    _, mapped = read_embedding_shards(out, mmap=True)
    assert isinstance(mapped, np.memmap)
    empty = write_embedding_shards(tmp_path / "empty", [], np.zeros((0, 3)))
    ids, vectors = read_embedding_shards(empty)
    assert ids == [] and vectors.shape == (0, 3)


def test_shard_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="one vector per id"):
        write_embedding_shards(tmp_path / "x", ["a"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one-line"):
        write_embedding_shards(tmp_path / "x", ["a\nb"], np.zeros((1, 3)))
    assert not (tmp_path / "x").exists()


def test_blocks_of_any_length_are_recut_into_shards_with_extra_files_published_together(tmp_path):
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(11, 4)).astype(np.float32)
    ids = [f"img{i:02d}" for i in range(11)]
    cuts = [0, 3, 4, 9, 11]  # blocks of 3, 1, 5 and 2 rows into shards of 4
    blocks = ((ids[a:b], vecs[a:b]) for a, b in itertools.pairwise(cuts))
    seen = []

    def extra(folder):
        seen.append(folder.name)
        np.save(folder / "regions.npy", np.arange(3))

    out = write_embedding_blocks(tmp_path / "set", blocks, 4, shard_size=4, extra=extra)
    assert seen[0].startswith(".set.tmp-")  # written before the folder was renamed into place
    assert np.array_equal(np.load(out / "regions.npy"), np.arange(3))
    assert [json.loads((out / "manifest.json").read_text())["shards"][i]["count"] for i in range(3)] == [4, 4, 3]
    got_ids, got = read_embedding_shards(out)
    assert got_ids == ids and np.allclose(got, vecs, atol=1e-2)


def test_lazy_reading_stacks_memory_mapped_shards_and_reads_only_the_rows_asked_for(tmp_path):
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(10, 4)).astype(np.float16)
    out = write_embedding_shards(tmp_path / "set", [f"i{n}" for n in range(10)], vecs, shard_size=4)
    ids, lazy = read_embedding_shards(out, lazy=True)
    assert isinstance(lazy, StackedRows) and lazy.shape == (10, 4) and len(lazy) == 10 and ids[9] == "i9"
    assert all(isinstance(p, np.memmap) for p in lazy.parts)  # nothing read yet
    for a, b in [(0, 10), (3, 9), (4, 8), (9, 10), (2, 3), (7, 7)]:  # within, across and at shard edges
        np.testing.assert_array_equal(lazy[a:b], vecs[a:b])
    np.testing.assert_array_equal(np.asarray(lazy, dtype=np.float32), vecs.astype(np.float32))
    np.testing.assert_array_equal(lazy[[1, 8]], vecs[[1, 8]])
    _, eager = read_embedding_shards(out)  # the default is unchanged: one array in memory
    assert isinstance(eager, np.ndarray) and not isinstance(eager, np.memmap)


def test_a_failing_block_or_extra_file_publishes_nothing(tmp_path):
    def blocks():
        yield ["a", "b"], np.zeros((2, 3))
        raise OSError("chunk-000001.npy: read error")

    with pytest.raises(OSError, match="chunk-000001"):
        write_embedding_blocks(tmp_path / "x", blocks(), 3, shard_size=1)
    with pytest.raises(ValueError, match="3-d vector"):
        write_embedding_blocks(tmp_path / "x", [(["a"], np.zeros((1, 4)))], 3)

    def extra(folder):
        raise RuntimeError("regions could not be joined")

    with pytest.raises(RuntimeError, match="joined"):
        write_embedding_shards(tmp_path / "x", ["a"], np.zeros((1, 3)), extra=extra)
    assert list(tmp_path.iterdir()) == []  # no set, no temp folder


def test_torch_threads_follow_the_process_budget(monkeypatch):
    # A web process (SEARCH_THREADS) or one of several workers on a machine sets OMP_NUM_THREADS: the
    # extraction must not take every core behind its back.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert EmbedConfig(num_workers=0).resolved_threads() == 1
    assert EmbedConfig(num_workers=0, torch_threads=3).resolved_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = len(os.sched_getaffinity(0))
    assert EmbedConfig(num_workers=0).resolved_threads() == cores
    assert EmbedConfig(num_workers=1).resolved_threads() == max(1, cores - 1)
