"""A per-install secret key for local (non-production) runs, created once and kept private."""

import os
import secrets
from pathlib import Path


def load_or_create_secret_key(path: Path) -> str:
    """Read the key at ``path``; create it (mode 600, atomically) the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50))
    try:
        os.link(tmp, path)  # atomic and refuses to overwrite: two processes starting at once share one key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
