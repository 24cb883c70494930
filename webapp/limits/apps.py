from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "webapp.limits"
    verbose_name = "Rate limits"
