"""A Job row for every piece of background work: what it is, who started it, how far it got."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class JobChain(models.Model):
    """Jobs that run in turn (``webapp/jobs/chains.py``): each step starts when the one before it succeeded,
    taking what that one made from its result; a step that fails or is cancelled stops the chain there."""

    title = models.CharField(max_length=200)
    steps = models.JSONField(help_text='[{"kind", "params", "takes": {param: key of the previous result}}]')
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.title} (#{self.pk})"

    def current_jobs(self) -> list:
        """The latest job of each step started so far (a retry replaces the job it retries), in step order."""
        latest: dict[int, Job] = {}
        for job in self.jobs.order_by("chain_step", "created_at", "id"):
            latest[job.chain_step] = job
        return [latest[step] for step in sorted(latest)]

    def status(self) -> tuple[str, str]:
        """(state, sentence): running, succeeded, or stopped, and why it stopped."""
        jobs = self.current_jobs()
        last = jobs[-1] if jobs else None
        if last is None:
            return "stopped", "no job was started"
        step = f"step {last.chain_step + 1} of {len(self.steps)} ({last.get_kind_display()}, job #{last.pk})"
        if last.state in (Job.State.FAILED, Job.State.CANCELLED):
            why = f": {last.error_line}" if last.error_line else ""
            return "stopped", f"stopped at {step}: {last.state}{why}"
        if last.state == Job.State.SUCCEEDED and last.chain_step == len(self.steps) - 1:
            return "succeeded", f"all {len(self.steps)} steps succeeded"
        return "running", f"at {step}: {last.state}"


class Job(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import_dataset", "Import data set"
        THUMBNAILS = "thumbnails", "Generate thumbnails"
        TRAIN = "train", "Train model"
        EMBED = "embed", "Embed images"
        BUILD_INDEX = "build_index", "Build index"
        CLEAN = "clean", "Clean labels"
        EVALUATE = "evaluate", "Evaluate"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    kind = models.CharField(max_length=30, choices=Kind.choices, db_index=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True, help_text="What the job is doing now.")
    stage = models.CharField(max_length=200, blank=True, help_text="The stage a job of several stages is in "
                             "(\"stage 3 of 5: local features\"); its progress counts that stage's items.")
    log = models.TextField(blank=True, help_text="Warnings and notes, one per line (bad files and such).")
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    queued = models.BooleanField(default=False, help_text="Run by a worker rather than in the foreground.")
    worker = models.CharField(max_length=200, blank=True, help_text="Host and process that ran it.")
    chain = models.ForeignKey(JobChain, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    chain_step = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Its step in the chain, from 0.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display()} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("job-detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED_STATES

    @property
    def warning(self) -> str:
        """What went wrong in a job that succeeded all the same (rows it rejected); empty if nothing did."""
        return self.result.get("warning", "") if self.state == self.State.SUCCEEDED else ""

    @property
    def error_line(self) -> str:
        """The error in one line, for everyone; the traceback is for admins."""
        line = self.message if self.state == self.State.FAILED and self.message else self.error
        return line.strip().splitlines()[0] if line.strip() else ""

    @property
    def can_retry(self) -> bool:
        """Only a job that did not finish its work is run again: a retry of one that did would do it twice."""
        return self.state in (self.State.FAILED, self.State.CANCELLED)

    @property
    def percent(self) -> float | None:
        if not self.progress_total:
            return 100.0 if self.state == self.State.SUCCEEDED else None
        return min(100.0, 100.0 * self.progress_done / self.progress_total)

    @property
    def duration(self):
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def eta_seconds(self) -> float | None:
        """Remaining time, extrapolated from the rate so far."""
        if self.is_finished or not self.started_at or not self.progress_total or not self.progress_done:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return elapsed * (self.progress_total - self.progress_done) / self.progress_done
