"""python manage.py embed [--model-version ID] [--splits ...] [--scales 1 0.707 1.414] [--flip] [--regions LEVELS] [--queue]"""

from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Embed images (every image by default) with the active model (the latest trained ModelVersion, or "
            "lite0 with its packaged ImageNet weights) into fp16 .npy shards, recorded as an EmbeddingSet.")
    job_kind = Job.Kind.EMBED

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--model-version", type=int, help="ModelVersion id (default: the active model).")
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values)
        parser.add_argument("--image-size", type=int, default=512, help="Long side in pixels.")
        parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
        parser.add_argument("--flip", action="store_true", help="Average with the mirrored image.")
        parser.add_argument("--regions", type=int, default=0, metavar="LEVELS",
                            help="Also keep R-MAC region descriptors on this many levels (the default pipeline "
                                 "uses 3), from the same forward passes; build_index --embedding-set then "
                                 "takes them instead of making them again in one process. 0 = none.")
        parser.add_argument("--batch-size", type=int, help="Images per forward pass (default: each worker's "
                            "EMBED_BATCH_SIZE).")
        parser.add_argument("--num-workers", type=int, help="Decode processes; 0 = in the worker's own process "
                            "(default: each worker's EMBED_DECODE_WORKERS).")
        parser.add_argument("--chunk-size", type=int, default=512,
                            help="Images per chunk: the unit that workers share and that a resumed job skips.")

    def handle(self, *args, **o):
        self.run_job({"model_version": o["model_version"], "splits": o["splits"], "chunk_size": o["chunk_size"],
                      "regional": {"levels": o["regions"]},
                      "embed": {"image_size": o["image_size"], "scales": o["scales"], "flip": o["flip"],
                                **{k: o[k] for k in ("batch_size", "num_workers") if o[k] is not None}}}, o)
