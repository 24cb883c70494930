"""python manage.py train [--recipe NAME] [--backbone B] [--head H] [--epochs N | --max-steps N] ... [--queue]"""

from django.core.management.base import CommandError

from ml.recipes import RECIPES, recipe_params
from ml.train import few_shot_settings
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand

# Each option's place in the job's parameters: (section, field). Options left out keep the recipe's setting,
# or, without a recipe, the default of ml.models.ModelConfig / ml.train.TrainConfig (the defaults shown).
FIELDS = {
    "backbone": ("model", "backbone"), "head": ("model", "head"), "embedding_dim": ("model", "embedding_dim"),
    "margin": ("model", "m"), "scale": ("model", "s"), "pretrained": ("model", "pretrained"),
    "epochs": ("train", "epochs"), "max_steps": ("train", "max_steps"), "batch_size": ("train", "batch_size"),
    "grad_accum": ("train", "grad_accum_steps"), "lr": ("train", "lr"), "optimizer": ("train", "optimizer"),
    "warmup_steps": ("train", "warmup_steps"), "image_size": ("train", "image_size"),
    "template": ("train", "template"), "augmentation": ("train", "augmentation"), "amp": ("train", "amp"),
    "checkpoint_every": ("train", "checkpoint_every"), "resume": ("train", "resume_from"),
    "freeze_bn_last_epoch": ("train", "freeze_bn_last_epoch"), "seed": ("train", "seed"),
    "device": ("train", "device"), "num_workers": ("train", "num_workers"),
    "backbone_lr_mult": ("train", "backbone_lr_mult"), "freeze_blocks": ("train", "freeze_blocks"),
    "distill_weight": ("train", "distill_weight"), "threads": ("train", "threads"),
}


class Command(JobCommand):
    help = ("Fine-tune a backbone with a margin head on the labelled images (ArcFace, lite0 by default, or a "
            "named --recipe) and record it as a ModelVersion with its loss/accuracy/lr curves.")
    job_kind = Job.Kind.TRAIN

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--recipe", help="Start from a named recipe (ml/recipes.py: "
                            + "; ".join(f"{name}: {r.description}" for name, r in RECIPES.items())
                            + "); the options given override its settings.")
        parser.add_argument("--name", help="Name of the new model version (default: backbone-head-job).")
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values, help="Train on these splits only.")
        parser.add_argument("--backbone", help="default tf_efficientnet_lite0")
        parser.add_argument("--head", choices=["softmax", "arcface", "cosface", "adacos", "subcenter_arcface"],
                            help="default arcface")
        parser.add_argument("--embedding-dim", type=int, help="default 512")
        parser.add_argument("--few-shot", action="store_true",
                            help="For a few photos per landmark: identity neck (the descriptor starts as the "
                                 "ImageNet one), ArcFace centres imprinted from class means, BatchNorm frozen. "
                                 "Measured with --optimizer adamw --lr 1e-3 --epochs 10 --image-size 384 "
                                 "--warmup-steps 5 --batch-size 16 (docs/benchmarks.md).")
        parser.add_argument("--backbone-lr-mult", type=float,
                            help="The backbone's lr as a fraction of --lr (0 = train the neck and head only; "
                                 "default 1).")
        parser.add_argument("--freeze-blocks", type=int,
                            help="Keep the backbone's stem and first N blocks at their pretrained weights (default 0).")
        parser.add_argument("--distill-weight", type=float,
                            help="Weight of the loss keeping the descriptor close to the one training started from "
                                 "(the packaged ImageNet one with an identity neck); default 0 = off.")
        parser.add_argument("--margin", type=float, help="default 0.3")
        parser.add_argument("--scale", type=float, help="default 30")
        parser.add_argument("--pretrained",
                            help="'packaged' (local ImageNet weights, the default), a checkpoint path, or 'hub' "
                                 "when online.")
        parser.add_argument("--epochs", type=int, help="default 5")
        parser.add_argument("--max-steps", type=int)
        parser.add_argument("--batch-size", type=int, help="default 32")
        parser.add_argument("--grad-accum", type=int, help="default 1")
        parser.add_argument("--lr", type=float, help="default 1e-3")
        parser.add_argument("--optimizer", choices=["sgd", "adamw"], help="default sgd")
        parser.add_argument("--warmup-steps", type=int, help="default 0")
        parser.add_argument("--image-size", type=int, help="default 512")
        parser.add_argument("--template", help="Aspect-grouped sizes, e.g. S2, SS2, M2 (ml-reference A.4).")
        parser.add_argument("--augmentation", choices=["none", "soft", "middle"], help="default soft")
        parser.add_argument("--amp", choices=["bf16", "fp16"], help="Mixed precision (CUDA only).")
        parser.add_argument("--checkpoint-every", type=int, help="default 0")
        parser.add_argument("--resume", help="Resume exactly from this checkpoint.")
        parser.add_argument("--freeze-bn-last-epoch", action="store_true", default=None)
        parser.add_argument("--seed", type=int, help="default 123456789")
        parser.add_argument("--device", help="default auto")
        parser.add_argument("--num-workers", type=int, help="default 0")
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")

    def handle(self, *args, **o):
        given = {"model": {}, "train": {}}
        for option, (section, key) in FIELDS.items():
            if o.get(option) is not None:
                given[section][key] = o[option]
        if o["recipe"]:
            try:
                params = recipe_params(o["recipe"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        else:
            params = {"model": {}, "train": {}}
        if o["few_shot"]:
            backbone = given["model"].get("backbone") or params["model"].get("backbone") or "tf_efficientnet_lite0"
            model_extra, train_extra = few_shot_settings(backbone)
            params["model"].update(model_extra)
            params["train"].update(train_extra)
        params["model"].update(given["model"])
        params["train"].update(given["train"])
        self.run_job({**params, "name": o["name"], "splits": o["splits"]}, o)
