from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "webapp.search"
    verbose_name = "Models, embeddings and indexes"
