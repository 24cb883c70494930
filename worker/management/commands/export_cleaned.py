"""python manage.py export_cleaned --out PATH [--split S] [--keep-unreviewed-drops] [--min-images N]"""

from pathlib import Path

from django.core.management.base import BaseCommand

from webapp.catalog.models import Image
from webapp.curation.export import export_cleaned


class Command(BaseCommand):
    help = ("Write the cleaned subset with the current (reviewed) labels as GLDv2-clean CSV "
            "(landmark_id,images), and PATH.manifest.csv listing every change or removal and why.")

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--split", choices=Image.Split.values)
        parser.add_argument("--keep-unreviewed-drops", action="store_true",
                            help="Keep images a cleaning run marked 'drop' that no curator reviewed.")
        parser.add_argument("--min-images", type=int, default=1,
                            help="Leave out landmarks with fewer images (the 2019 winners used 2).")

    def handle(self, *args, **opts):
        counts = export_cleaned(opts["out"], opts["split"], not opts["keep_unreviewed_drops"], opts["min_images"])
        self.stdout.write(self.style.SUCCESS(
            f"wrote {opts['out']} ({counts['landmarks']} landmarks, {counts['images']} images) and "
            f"{opts['out']}.manifest.csv ({counts['manifest_rows']} rows)"))
