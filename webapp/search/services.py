"""Which model, embeddings and index the product uses now: the one place that says which models serve
search (the active index's, as it recorded them), which ones cleaning embeds with (the same), and which
one new builds start from (the active model version)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction

from ml.pipeline import PipelineConfig
from ml.regional import RegionalConfig
from webapp.catalog.models import Image
from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion

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


@dataclass
class Embedder:
    """What embeds the photos cleaning compares: the models and embedding settings (a pipeline with only
    those), the ModelVersion its embedding sets belong to, and the serving index's set (None without one)."""

    pipeline: PipelineConfig
    model_version: ModelVersion
    index_set: EmbeddingSet | None

    def describe(self) -> str:
        p = self.pipeline
        scales = f"{len(p.scales)} scales" if len(p.scales) > 1 else "one scale"
        return f"{' + '.join(p.models)} at {p.image_size} px, {scales}{', mirrored' if p.flip else ''}"


def serving_index() -> IndexVersion | None:
    """The index version every search uses."""
    return IndexVersion.objects.filter(is_active=True).select_related("embedding_set__model_version").first()


def cleaning_embedder() -> Embedder:
    """What cleaning embeds with: the serving index's models and embedding settings, as it recorded them,
    so the neighbours a curator reviews are those search finds; before any index, the active model at
    512 px, one scale."""
    iv = serving_index()
    if iv is not None and iv.params.get("config"):
        config = iv.pipeline_config()
        embed_only = replace(PipelineConfig(name="clean"), models=config.models, model_weights=config.model_weights,
                             image_size=config.image_size, scales=config.scales, flip=config.flip,
                             regional=RegionalConfig())
        return Embedder(embed_only, iv.embedding_set.model_version, iv.embedding_set)
    mv = active_model_version()
    return Embedder(PipelineConfig(name="clean", models=(model_spec(mv),)), mv, None)


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
