"""What one owner and one client address may upload: a rate of new uploads, and bytes kept on disk.

Checked at the ASGI edge (``upload.UploadGuard``) from the request's headers, before any body is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections
from django.db.models import Sum

from progress import tasks
from progress.access import owners_of_scope
from progress.keys import bearer_of_headers
from progress.limits import client_address

from . import throttle
from .conf import limits
from .models import Transcription, Upload

__all__ = ["Refusal", "owner_of", "upload_refusal"]

RATE_WINDOW = 60.0
DAY = 24 * 3600.0
STORAGE_RETRY_AFTER = 60
"""What a client over its storage is told to wait: a job that ends frees its audio."""


@dataclass(frozen=True)
class Refusal:
    """A 429 to answer: its error code, detail and Retry-After seconds."""

    code: str
    detail: str
    retry_after: int


def owner_of(owners: frozenset[str]) -> str | None:
    """The owner an upload is charged to: the user if logged in, else the anonymous session."""
    ranked = sorted(owners, key=lambda o: (not o.startswith("user:"), o))
    return ranked[0] if ranked else None


def stored_bytes(owner: str) -> int:
    """Bytes of audio ``owner`` has on disk now (uploads whose job has not finished with them)."""
    mine = [t.task_id for t in tasks.select(owners=[owner])]
    total = Transcription.objects.filter(task_id__in=mine).exclude(audio_path="").aggregate(Sum("size"))
    unfinished = Upload.objects.filter(owner=owner).aggregate(Sum("length"))  # reserved in full
    return int(total["size__sum"] or 0) + int(unfinished["length__sum"] or 0)


def upload_refusal(
    scope: Mapping[str, Any], length: int, *, new_task: bool, owner: str | None = None
) -> Refusal | None:
    """Why this upload may not start now (None: it may); counts it against the rate when it may.

    ``new_task``: it starts a task (a new upload or a reservation), so it counts against the rate;
    a reserved task's upload was counted at its reservation. Sync: reads the database.
    """
    close_old_connections()
    conf = limits()
    owner = owner or owner_of(owners_of_scope(scope))
    if owner is not None and length and stored_bytes(owner) + length > conf.max_owner_bytes:
        detail = f"this account keeps at most {conf.max_owner_bytes} bytes of audio waiting; let a job finish"
        return Refusal("storage_quota", detail, STORAGE_RETRY_AFTER)
    if new_task:
        window = throttle.Window(conf.uploads_per_minute, RATE_WINDOW)
        keys = [throttle.key("upload-address", client_address(scope))]
        if owner is not None:
            keys.append(throttle.key("upload-owner", owner))
        api_key = bearer_of_headers(scope.get("headers", ()))
        if api_key is not None and owner is not None and owner.startswith("user:"):
            keys.append(throttle.key("upload-api-key", api_key.split("_")[1]))  # its prefix
        wait = throttle.take([(k, window) for k in keys])
        if wait is not None:
            retry = max(1, math.ceil(wait))
            detail = f"at most {conf.uploads_per_minute} uploads a minute; retry in {retry} s"
            return Refusal("too_many_uploads", detail, retry)
    if owner is not None and length:
        budget = throttle.Budget(conf.max_bytes_per_day, DAY)
        wait = throttle.spend(throttle.key("upload-bytes", owner), budget, length)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            detail = f"at most {conf.max_bytes_per_day} bytes of audio a day; retry in {retry} s"
            return Refusal("daily_quota", detail, retry)
    return None
