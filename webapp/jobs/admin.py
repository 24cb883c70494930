from django.contrib import admin

from webapp.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "progress_done", "progress_total", "created_by", "created_at", "finished_at"]
    list_filter = ["kind", "state"]
    readonly_fields = ["created_at", "started_at", "finished_at", "heartbeat_at", "worker"]
