"""python manage.py clean [--splits ...] [--no-verify] [--verify-thresh N (15)] [--freq-thresh N] [--report PATH]
[--chunk-pairs N]"""

from pathlib import Path

from ml.clean import Thresholds
from webapp.catalog.models import Image
from webapp.jobs.models import Job
from worker.management.jobcommand import JobCommand


class Command(JobCommand):
    help = ("Find noisy labels: kNN neighbours by embedding, confirmed by spatial verification; a verdict per "
            "labelled image (keep / suspect / drop) with evidence and a suggested label, and noise clusters "
            "for review. Evidence is cached, so re-running with other thresholds is cheap.")
    job_kind = Job.Kind.CLEAN

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--splits", nargs="+", choices=Image.Split.values, help="Only these splits.")
        parser.add_argument("--no-verify", action="store_true", help="Skip spatial verification (descriptors only).")
        parser.add_argument("--k", type=int, default=30, help="Neighbours per image in the kNN graph.")
        parser.add_argument("--verify-thresh", type=int, default=Thresholds.verify_thresh, help="Inliers for a pair to be the same place.")
        parser.add_argument("--freq-thresh", type=int, default=1, help="Verified label-mates to confirm a label.")
        parser.add_argument("--report", type=Path, help="Also write the verdicts as CSV.")
        parser.add_argument("--chunk-pairs", type=int, help="Pairs verified per chunk (one task each on the "
                            "workers; default CLEAN_CHUNK_PAIRS).")

    def handle(self, *args, **o):
        self.run_job({"splits": o["splits"], "verify": not o["no_verify"], "evidence": {"k": o["k"]},
                      "thresholds": {"verify_thresh": o["verify_thresh"], "freq_thresh": o["freq_thresh"]},
                      "report": str(o["report"].resolve()) if o["report"] else None,
                      "chunk_pairs": o["chunk_pairs"]}, o)
