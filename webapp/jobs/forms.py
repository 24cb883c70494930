"""Start forms for the batch jobs (admins only). Paths must lie under IMPORT_ROOTS: a form can never
name an arbitrary file on the server."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings

from ml.clean import Thresholds
from ml.evaluate import LayoutError, read_layout
from ml.pipeline import DEFAULT_PIPELINE
from ml.pipeline import PIPELINES as PRESETS
from ml.recipes import DEFAULT_RECIPE, RECIPES
from ml.train import few_shot_settings
from webapp.catalog.models import Image
from webapp.jobs.models import Job

SPLITS = [(s, s) for s in Image.Split.values]
# Each preset with its one-line cost and quality, so the choice says what it means.
PIPELINES = [(name, f"{name}: {preset.description}") for name, preset in PRESETS.items()]


def allowed_path(value: str) -> str:
    path = Path(value).expanduser().resolve()
    roots = [Path(r).resolve() for r in settings.IMPORT_ROOTS]
    if not any(path.is_relative_to(r) for r in roots):
        raise forms.ValidationError(f"{value} is not under an allowed folder ({', '.join(map(str, roots))}); "
                                    "set IMPORT_ROOTS to allow others")
    if not path.is_dir():
        raise forms.ValidationError(f"{value} is not a folder")
    return str(path)


class ImportForm(forms.Form):
    kind = Job.Kind.IMPORT
    path = forms.CharField(help_text="A data set folder on the server.")
    copy = forms.BooleanField(required=False, help_text="Copy files into media storage.")

    def clean_path(self):
        return allowed_path(self.cleaned_data["path"])

    def params(self) -> dict:
        return {"path": self.cleaned_data["path"], "copy": self.cleaned_data["copy"]}


class TrainForm(forms.Form):
    kind = Job.Kind.TRAIN
    backbone = forms.ChoiceField(choices=[(b, b) for b in ("tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                                           "tf_efficientnet_lite2")])
    head = forms.ChoiceField(choices=[(h, h) for h in ("arcface", "cosface", "adacos", "subcenter_arcface", "softmax")])
    epochs = forms.IntegerField(min_value=1, max_value=100, initial=5)
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=32)
    image_size = forms.IntegerField(min_value=64, max_value=1024, initial=512)
    few_shot = forms.BooleanField(
        required=False, label="Few photos per landmark",
        help_text="Start from the ImageNet descriptor, imprint the class centres, freeze BatchNorm "
                  "(with AdamW; measured best at 10 epochs, 384 px, batch 16).")

    def params(self) -> dict:
        d = self.cleaned_data
        params = {"model": {"backbone": d["backbone"], "head": d["head"]},
                  "train": {"epochs": d["epochs"], "batch_size": d["batch_size"], "image_size": d["image_size"]}}
        if d["few_shot"]:
            model_extra, train_extra = few_shot_settings(d["backbone"])
            params["model"].update(model_extra)
            params["train"].update(train_extra, optimizer="adamw", lr=1e-3, warmup_steps=5)
        return params


class EmbedForm(forms.Form):
    kind = Job.Kind.EMBED
    splits = forms.MultipleChoiceField(choices=SPLITS, required=False, widget=forms.CheckboxSelectMultiple,
                                       help_text="None ticked: every image.")

    def params(self) -> dict:
        return {"splits": self.cleaned_data["splits"] or None}


class BuildIndexForm(forms.Form):
    kind = Job.Kind.BUILD_INDEX
    pipeline = forms.ChoiceField(choices=PIPELINES, initial=DEFAULT_PIPELINE)

    def params(self) -> dict:
        return {"pipeline": self.cleaned_data["pipeline"]}


class CleanForm(forms.Form):
    kind = Job.Kind.CLEAN
    verify = forms.BooleanField(required=False, initial=True, help_text="Spatial verification (slower, precise).")
    verify_thresh = forms.IntegerField(min_value=1, initial=Thresholds.verify_thresh)
    freq_thresh = forms.IntegerField(min_value=1, initial=1)

    def params(self) -> dict:
        d = self.cleaned_data
        return {"verify": d["verify"], "thresholds": {"verify_thresh": d["verify_thresh"], "freq_thresh": d["freq_thresh"]}}


class EvaluateForm(forms.Form):
    kind = Job.Kind.EVALUATE
    path = forms.CharField(help_text="A folder in the evaluation layout (images/, gnd.json).")
    pipeline = forms.ChoiceField(choices=PIPELINES, initial=DEFAULT_PIPELINE)
    use_labels = forms.BooleanField(required=False, initial=True)

    def clean_path(self):
        return allowed_path(self.cleaned_data["path"])

    def params(self) -> dict:
        d = self.cleaned_data
        return {"path": d["path"], "pipeline": d["pipeline"], "use_labels": d["use_labels"]}


def evaluation_set(value: str) -> str:
    """A folder under IMPORT_ROOTS in the evaluation layout (images/, gnd.json), as a resolved path."""
    path = allowed_path(value)
    try:
        read_layout(path)
    except LayoutError as exc:
        raise forms.ValidationError(str(exc)) from exc
    return path


class LoopForm(forms.Form):
    """Retrain -> rebuild the index -> evaluate (``webapp/search/loop.py``)."""

    recipe = forms.ChoiceField(choices=[(name, f"{name}: {r.description}") for name, r in RECIPES.items()],
                               initial=DEFAULT_RECIPE)
    evaluation_set = forms.CharField(help_text="A folder in the evaluation layout (images/, gnd.json), e.g. "
                                               "../shared/data/landmarks-dev/eval.")
    pipeline = forms.ChoiceField(choices=PIPELINES, initial=DEFAULT_PIPELINE, label="Index pipeline")
    max_steps = forms.IntegerField(required=False, min_value=1, label="Training steps",
                                   help_text="Empty: the recipe's epochs.")
    image_size = forms.IntegerField(required=False, min_value=32, max_value=1024, label="Training image size",
                                    help_text="Empty: the recipe's.")
    batch_size = forms.IntegerField(required=False, min_value=1, max_value=1024, label="Training batch size",
                                    help_text="Empty: the recipe's.")

    def clean_evaluation_set(self):
        return evaluation_set(self.cleaned_data["evaluation_set"])

    def loop_params(self) -> dict:
        d = self.cleaned_data
        train = {k: d[k] for k in ("max_steps", "image_size", "batch_size") if d[k]}
        return {"recipe": d["recipe"], "evaluation_set": d["evaluation_set"], "pipeline": d["pipeline"],
                "train": train}


FORMS = {f.kind: f for f in (ImportForm, TrainForm, EmbedForm, BuildIndexForm, CleanForm, EvaluateForm)}
