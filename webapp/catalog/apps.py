from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "webapp.catalog"
    verbose_name = "Catalog"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from webapp.catalog.models import CatalogRevision, Image

        # A deleted image must leave search results at once: searches reload when the revision moves.
        post_delete.connect(lambda **kw: CatalogRevision.bump(), sender=Image, weak=False,
                            dispatch_uid="catalog-revision-on-delete")
