from django.contrib import admin

from webapp.search.models import EmbeddingSet, IndexVersion, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "backbone", "head", "embedding_dim", "created_at"]
    search_fields = ["name"]


@admin.register(EmbeddingSet)
class EmbeddingSetAdmin(admin.ModelAdmin):
    list_display = ["id", "model_version", "dim", "image_count", "created_at"]


@admin.register(IndexVersion)
class IndexVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "embedding_set", "kind", "size", "is_active", "published_at"]
    list_filter = ["kind", "is_active"]
