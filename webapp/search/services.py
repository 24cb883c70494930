"""Which model, embeddings and index the product uses now."""

from __future__ import annotations

from django.core.files.storage import default_storage

from webapp.catalog.models import Image
from webapp.search.models import EmbeddingSet, ModelVersion

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
    """The latest trained model that finished (it has a checkpoint); the packaged default otherwise."""
    trained = ModelVersion.objects.exclude(checkpoint="").filter(params__finished=True).first()
    return trained or default_model_version()


def model_spec(mv: ModelVersion) -> str:
    """What ``ml.weights.load_model`` takes for this version."""
    return mv.checkpoint or f"packaged:{mv.backbone}"


def latest_embedding_set(mv: ModelVersion | None = None) -> EmbeddingSet | None:
    sets = EmbeddingSet.objects.all()
    if mv is not None:
        sets = sets.filter(model_version=mv)
    return sets.first()


def image_file_path(image: Image) -> str:
    """A local path the ml/ code can open: the referenced file, or the copy in (filesystem) storage."""
    if image.file:
        try:
            return default_storage.path(image.file.name)
        except NotImplementedError as exc:
            raise RuntimeError(f"image {image.external_id} is in remote storage; workers need a local "
                               "copy (use FileSystemStorage, or import without --copy)") from exc
    return image.path
