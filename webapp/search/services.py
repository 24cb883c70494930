"""Which model, embeddings and index the product uses now."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction

from webapp.catalog.models import Image
from webapp.search.models import IndexVersion, ModelVersion

DEFAULT_BACKBONE = "tf_efficientnet_lite0"


def packaged_model_version(backbone: str = DEFAULT_BACKBONE) -> ModelVersion:
    """Packaged ImageNet weights (``a+b`` = an ensemble) as a ModelVersion row, made on first use."""
    backbone = "+".join(b.removeprefix("packaged:") for b in backbone.split("+"))
    mv, _ = ModelVersion.objects.get_or_create(
        name=f"{backbone}-imagenet",
        defaults={"backbone": backbone, "head": "", "embedding_dim": 0, "checkpoint": "",
                  "params": {"pretrained": "packaged", "note": "ImageNet weights, GeM p=3, no training"}},
    )
    return mv


def default_model_version() -> ModelVersion:
    """The default backbone's packaged ImageNet weights: the model before any training."""
    return packaged_model_version(DEFAULT_BACKBONE)


def active_model_version() -> ModelVersion:
    """The pinned model (after a rollback), else the latest trained model that finished, else the
    packaged default."""
    pinned = ModelVersion.objects.filter(pinned=True).first()
    if pinned:
        return pinned
    trained = ModelVersion.objects.exclude(checkpoint="").filter(params__finished=True).first()
    return trained or default_model_version()


def activate_model(mv: ModelVersion | None) -> None:
    """Pin ``mv`` as the active model (None: back to 'the latest trained')."""
    with transaction.atomic():
        ModelVersion.objects.filter(pinned=True).update(pinned=False)
        if mv is not None:
            ModelVersion.objects.filter(pk=mv.pk).update(pinned=True)


def activate_index(iv: IndexVersion) -> None:
    """Make ``iv`` the index every search uses; web processes switch on their next query."""
    if not iv.path or not (Path(iv.path) / "meta.json").is_file():
        raise ValueError(f"index #{iv.pk} has no complete files at {iv.path}; it cannot be activated")
    with transaction.atomic():
        IndexVersion.objects.filter(is_active=True).exclude(pk=iv.pk).update(is_active=False)
        IndexVersion.objects.filter(pk=iv.pk).update(is_active=True)


def model_spec(mv: ModelVersion) -> str:
    """What ``ml.weights.load_model`` takes for this version."""
    return mv.checkpoint or f"packaged:{mv.backbone}"



def image_file_path(image: Image) -> str:
    """A local path the ml/ code can open: the referenced file, or the copy in (filesystem) storage."""
    if image.file:
        try:
            return default_storage.path(image.file.name)
        except NotImplementedError as exc:
            raise RuntimeError(f"image {image.external_id} is in remote storage; workers need a local "
                               "copy (use FileSystemStorage, or import without --copy)") from exc
    return image.path


def feature_dir() -> Path:
    """Where build_index and cleaning jobs cache per-image features (one folder per setting)."""
    return Path(settings.ARTIFACTS_ROOT) / "local-features"
