"""python manage.py prune_indexes [--keep N] [--dry-run]: delete old index versions and embedding sets."""

from django.core.management.base import BaseCommand, CommandError

from webapp.search.pruning import PruneRefused, prune


class Command(BaseCommand):
    help = ("Delete the index versions other than the active one and the N most recent (what rollback can go "
            "back to), the embedding sets none of those uses beyond the N newest, the feature caches none of "
            "those reads, and cached features of photos no longer in the catalogue: rows and files.")

    def add_arguments(self, parser):
        parser.add_argument("--keep", type=int, default=2, help="Inactive index versions (and sets) to keep (default 2).")
        parser.add_argument("--dry-run", action="store_true", help="Only list what would be deleted.")

    def handle(self, *args, **o):
        try:
            out = prune(o["keep"], dry_run=o["dry_run"])
        except (PruneRefused, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        verb = "would delete" if o["dry_run"] else "deleted"
        for iv in out.indexes:
            self.stdout.write(f"{verb} index #{iv.pk} ({iv.kind}, {iv.size} images, {iv.path})")
        for es in out.sets:
            self.stdout.write(f"{verb} embedding set #{es.pk} ({es.image_count} images, {es.path})")
        for path in out.caches:
            self.stdout.write(f"{verb} feature cache {path} (no kept index reads it)")
        if out.orphans:
            self.stdout.write(f"{verb} {len(out.orphans)} cached feature files of photos no longer in the catalogue")
        for path in out.left:
            self.stdout.write(f"left in place (outside ARTIFACTS_ROOT): {path}")
        self.stdout.write(self.style.SUCCESS(
            f"{verb} {len(out.indexes)} index versions, {len(out.sets)} embedding sets and {len(out.caches)} "
            f"feature caches: {len(out.folders) + len(out.caches)} folders, {out.bytes / 2**20:.1f} MiB"))
