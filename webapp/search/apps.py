from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "webapp.search"
    verbose_name = "Models, embeddings and indexes"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from webapp.catalog.models import Image
        from webapp.search.access import delete_photo
        from webapp.search.models import SearchQuery

        post_delete.connect(_forget_deleted_image, sender=Image, dispatch_uid="features-of-deleted-image")
        post_delete.connect(delete_photo, sender=SearchQuery, dispatch_uid="photo-of-deleted-search")


def _forget_deleted_image(instance, **_kwargs) -> None:
    """A deleted image's cached features go once the deletion commits (not if it is rolled back): its id
    may be imported again for another photo, which must not be verified with the old one's features."""
    from django.db import transaction

    from webapp.search.pruning import forget_features

    image_id = instance.external_id
    transaction.on_commit(lambda: forget_features([image_id]), robust=True)  # never fails the deletion
