"""The cleaned subset: current (reviewed) labels as GLDv2-clean CSV, and a manifest of every image whose
label changed or that was left out, with why and who decided."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ml import csv_cells
from ml.atomic_files import replacing
from webapp.catalog.models import Image
from webapp.curation.models import LabelChange, Verdict

MANIFEST_COLUMNS = ["id", "old_label", "new_label", "action", "reason", "decided_by"]


def export_cleaned(out: Path, split: str | None = None, drop_unreviewed: bool = True,
                   min_images: int = 1) -> dict:
    """Write ``out`` (landmark_id,images) and ``out.manifest.csv``; return counts."""
    images = Image.objects.all()
    if split:
        images = images.filter(split=split)
    rows = list(images.values_list("pk", "external_id", "landmark__external_id"))
    decided = _decisions({pk for pk, _, _ in rows})
    dropped = _unreviewed_drops({pk for pk, _, _ in rows}, set(decided)) if drop_unreviewed else {}
    by_landmark: dict[str, list[str]] = defaultdict(list)
    manifest = []
    for pk, ext, label in rows:
        if pk in dropped:
            manifest.append([ext, label or "", "", "drop", dropped[pk], "cleaning"])
        elif label:
            by_landmark[label].append(ext)
        if pk in decided:
            manifest.append([ext, *decided[pk][0:1], label or "", *decided[pk][1:]])
    small = {lid for lid, ids in by_landmark.items() if len(ids) < min_images}
    for lid in sorted(small):
        manifest += [[i, lid, "", "drop", f"landmark has fewer than {min_images} images", "export"]
                     for i in by_landmark.pop(lid)]
    _write(out, ["landmark_id", "images"], [[lid, " ".join(sorted(ids))] for lid, ids in sorted(by_landmark.items())])
    _write(Path(f"{out}.manifest.csv"), MANIFEST_COLUMNS, manifest)
    return {"landmarks": len(by_landmark), "images": sum(map(len, by_landmark.values())),
            "manifest_rows": len(manifest)}


def _decisions(pks: set[int]) -> dict[int, list[str]]:
    """image pk -> [original label, last action, its reason, who], over changes not undone."""
    out: dict[int, list[str]] = {}
    changes = (LabelChange.objects.filter(image_id__in=pks, undone_by__isnull=True).exclude(action="undo")
               .select_related("old_landmark", "decided_by").order_by("created_at", "id"))
    for ch in changes:
        first = out.get(ch.image_id, [ch.old_landmark.external_id if ch.old_landmark else ""])[0]
        who = ch.decided_by.get_username() if ch.decided_by else ""
        out[ch.image_id] = [first, ch.action, ch.reason, who]
    return out


def _unreviewed_drops(pks: set[int], reviewed: set[int]) -> dict[int, str]:
    """Images whose latest cleaning verdict is 'drop' and that no curator has decided on."""
    latest: dict[int, Verdict] = {}
    for v in Verdict.objects.filter(image_id__in=pks).order_by("run__created_at", "run_id"):
        latest[v.image_id] = v
    return {pk: f"cleaning run #{v.run_id}: drop (score {v.score:.2f})"
            for pk, v in latest.items() if v.verdict == Verdict.Kind.DROP and pk not in reviewed}


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Write a CSV atomically (a reader never sees half a file), formula-like text neutralised."""
    with replacing(path) as tmp, tmp.open("w", newline="") as f:
        w = csv_cells.writer(f)
        w.writerow(header)
        w.writerows(rows)
