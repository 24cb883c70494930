from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "webapp.curation"
    verbose_name = "Curation"
