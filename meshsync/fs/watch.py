"""Change hints from the operating system: which paths under a folder may have changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import watchfiles

from meshsync.core.errors import WireError
from meshsync.core.paths import RelPath, check_path


async def watch(root: Path) -> AsyncIterator[set[RelPath]]:
    """Batches of paths under the absolute `root` that may have changed, until cancelled.

    Paths are hints to stat, not events; meshsync's own are left out. A path that is now a
    directory must be scanned whole: a populated tree moved in is reported as itself alone.
    """
    if not root.is_absolute():
        raise ValueError(f"watch needs an absolute folder path, not {root}")
    top = f"{root}/"

    def relevant(_change: watchfiles.Change, path: str) -> bool:
        return _relative(top, path) is not None

    changes = watchfiles.awatch(root, step=10, debounce=200, recursive=True,
                                ignore_permission_denied=True, watch_filter=relevant)
    async with aclosing(changes):
        async for batch in changes:
            paths = {rel for _, path in batch if (rel := _relative(top, path)) is not None}
            if paths:
                yield paths


def _relative(top: str, path: str) -> RelPath | None:
    if not path.startswith(top):
        return None
    try:
        return check_path(path[len(top):])  # refuses the marker tree and temporary files
    except WireError:
        return None
