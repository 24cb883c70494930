from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "webapp.catalog"
    verbose_name = "Catalog"
