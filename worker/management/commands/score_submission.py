"""python manage.py score_submission SUBMISSION SOLUTION"""

import json

from django.core.management.base import BaseCommand, CommandError

from ml.submission import SubmissionError, score_submission


class Command(BaseCommand):
    help = "Score a Kaggle submission CSV against a solution CSV (GAP for recognition, mAP@100 for retrieval)."

    def add_arguments(self, parser):
        parser.add_argument("submission")
        parser.add_argument("solution")
        parser.add_argument("--json", help="Also write the scores to this file.")

    def handle(self, *args, **o):
        try:
            scores = score_submission(o["submission"], o["solution"])
        except (SubmissionError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        text = json.dumps(scores, indent=2)
        if o["json"]:
            with open(o["json"], "w") as f:
                f.write(text)
        self.stdout.write(text)
