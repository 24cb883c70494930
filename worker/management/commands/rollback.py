"""python manage.py rollback --index N | --model N | --latest-model | --list"""

from django.core.management.base import BaseCommand, CommandError

from webapp.search.models import IndexVersion, ModelVersion
from webapp.search.services import activate_index, activate_model, active_model_version


class Command(BaseCommand):
    help = "Switch searches back (or forward) to another index version, or pin another model version."

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--index", type=int, help="IndexVersion id to make active.")
        group.add_argument("--model", type=int, help="ModelVersion id to pin as the active model.")
        group.add_argument("--latest-model", action="store_true", help="Unpin: the latest trained model is active.")
        group.add_argument("--list", action="store_true", help="List index and model versions.")

    def handle(self, *args, **o):
        if o["list"]:
            for iv in IndexVersion.objects.select_related("embedding_set__model_version"):
                mark = "*" if iv.is_active else " "
                self.stdout.write(f"{mark} index #{iv.pk} {iv.kind} {iv.size} images, {iv.recall_summary}, "
                                  f"{iv.params.get('pipeline')}, "
                                  f"model {iv.embedding_set.model_version}, {iv.published_at:%Y-%m-%d %H:%M}")
            active = active_model_version()
            for mv in ModelVersion.objects.all():
                self.stdout.write(f"{'*' if mv == active else ' '} model #{mv.pk} {mv.name}")
            return
        try:
            if o["index"] is not None:
                activate_index(IndexVersion.objects.get(pk=o["index"]))
                self.stdout.write(self.style.SUCCESS(f"index #{o['index']} is active"))
            elif o["model"] is not None:
                activate_model(ModelVersion.objects.get(pk=o["model"]))
                self.stdout.write(self.style.SUCCESS(f"model #{o['model']} is pinned as active "
                                                     "(rebuild the index to search with it)"))
            else:
                activate_model(None)
                self.stdout.write(self.style.SUCCESS(f"active model: {active_model_version()}"))
        except (IndexVersion.DoesNotExist, ModelVersion.DoesNotExist) as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
