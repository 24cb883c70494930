"""python manage.py train [--backbone B] [--head H] [--epochs N | --max-steps N] ... [--queue]"""

from ml.train import few_shot_settings
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Fine-tune a backbone with a margin head on the labelled images (ArcFace, lite0 by default) and "
            "record it as a ModelVersion with its loss/accuracy/lr curves.")
    job_kind = Job.Kind.TRAIN

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--name", help="Name of the new model version (default: backbone-head-job).")
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values, help="Train on these splits only.")
        parser.add_argument("--backbone", default="tf_efficientnet_lite0")
        parser.add_argument("--head", default="arcface",
                            choices=["softmax", "arcface", "cosface", "adacos", "subcenter_arcface"])
        parser.add_argument("--embedding-dim", type=int, default=512)
        parser.add_argument("--few-shot", action="store_true",
                            help="For a few photos per landmark: identity neck (the descriptor starts as the "
                                 "ImageNet one), ArcFace centres imprinted from class means, BatchNorm frozen. "
                                 "Measured with --optimizer adamw --lr 1e-3 --epochs 10 --image-size 384 "
                                 "--warmup-steps 5 --batch-size 16 (docs/benchmarks.md).")
        parser.add_argument("--backbone-lr-mult", type=float, default=1.0,
                            help="The backbone's lr as a fraction of --lr (0 = train the neck and head only).")
        parser.add_argument("--margin", type=float, default=0.3)
        parser.add_argument("--scale", type=float, default=30.0)
        parser.add_argument("--pretrained", default="packaged",
                            help="'packaged' (local ImageNet weights), a checkpoint path, or 'hub' when online.")
        parser.add_argument("--epochs", type=int, default=5)
        parser.add_argument("--max-steps", type=int)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--grad-accum", type=int, default=1)
        parser.add_argument("--lr", type=float, default=1e-3)
        parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
        parser.add_argument("--warmup-steps", type=int, default=0)
        parser.add_argument("--image-size", type=int, default=512)
        parser.add_argument("--template", help="Aspect-grouped sizes, e.g. S2, SS2, M2 (ml-reference A.4).")
        parser.add_argument("--augmentation", choices=["none", "soft", "middle"], default="soft")
        parser.add_argument("--amp", choices=["bf16", "fp16"], help="Mixed precision (CUDA only).")
        parser.add_argument("--checkpoint-every", type=int, default=0)
        parser.add_argument("--resume", help="Resume exactly from this checkpoint.")
        parser.add_argument("--freeze-bn-last-epoch", action="store_true")
        parser.add_argument("--seed", type=int, default=123456789)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--num-workers", type=int, default=0)

    def handle(self, *args, **o):
        params = {
            "name": o["name"], "splits": o["splits"],
            "model": {"backbone": o["backbone"], "head": o["head"], "embedding_dim": o["embedding_dim"],
                      "m": o["margin"], "s": o["scale"], "pretrained": o["pretrained"]},
            "train": {"epochs": o["epochs"], "max_steps": o["max_steps"], "batch_size": o["batch_size"],
                      "grad_accum_steps": o["grad_accum"], "lr": o["lr"], "optimizer": o["optimizer"],
                      "warmup_steps": o["warmup_steps"], "image_size": o["image_size"], "template": o["template"],
                      "augmentation": o["augmentation"], "amp": o["amp"], "checkpoint_every": o["checkpoint_every"],
                      "resume_from": o["resume"], "freeze_bn_last_epoch": o["freeze_bn_last_epoch"],
                      "seed": o["seed"], "device": o["device"], "num_workers": o["num_workers"],
                      "backbone_lr_mult": o["backbone_lr_mult"]},
        }
        if o["few_shot"]:
            model_extra, train_extra = few_shot_settings(o["backbone"])
            params["model"].update(model_extra)
            params["train"].update(train_extra)
        self.run_job(params, o)
