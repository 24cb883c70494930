"""python manage.py export_submission --task retrieval|recognition --queries SPLIT --out PATH"""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ml.images import load_rgb
from ml.submission import write_recognition_submission, write_retrieval_submission
from webapp.catalog.models import Image
from webapp.search.engine import NoIndexError, search_photo
from webapp.search.services import image_file_path


class Command(BaseCommand):
    help = ("Write a Kaggle submission for the images of a split with the product's default retrieval pipeline "
            "(the active index): retrieval 'id,images' (up to 100 index ids) or recognition 'id,landmarks'.")

    def add_arguments(self, parser):
        parser.add_argument("--task", choices=["retrieval", "recognition"], required=True)
        parser.add_argument("--queries", choices=Image.Split.values, required=True, help="The split to predict for.")
        parser.add_argument("--out", required=True)

    def handle(self, *args, **o):
        queries = list(Image.objects.filter(split=o["queries"]).order_by("external_id"))
        if not queries:
            raise CommandError(f"no images in split {o['queries']!r}")
        predictions: dict = {}
        try:
            for image in tqdm(queries, desc="queries", unit="image"):
                outcome = search_photo(load_rgb(image_file_path(image)), top_k=100)
                if o["task"] == "retrieval":
                    predictions[image.external_id] = [h.image_id for h in outcome.hits][:100]
                else:
                    predictions[image.external_id] = ((outcome.landmark_id, outcome.confidence)
                                                      if outcome.landmark_id is not None else None)
        except NoIndexError as exc:
            raise CommandError(str(exc)) from exc
        writer = write_retrieval_submission if o["task"] == "retrieval" else write_recognition_submission
        path = writer(o["out"], predictions)
        self.stdout.write(self.style.SUCCESS(f"wrote {path} ({len(predictions)} queries)"))
