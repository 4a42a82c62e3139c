"""What the control API and the state directory's folder list are given can be anything: the
API answers every body with a result or one JSON error line (never a crash), and a damaged
folders.json is set aside for nothing rather than trusted."""

from __future__ import annotations

import asyncio
import json
import string
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsync.control.events import Events
from meshsync.control.protocol import ControlError
from meshsync.control.server import MAX_BODY, api
from meshsync.core.ids import NodeId
from meshsync.core.wire import check_folder_id
from meshsync.node.config import FOLDERS_FILE, Folder, remembered_folders

ID = str(NodeId(bytes(32)))
SETTING = {  # a folder's settings in folders.json, sound or not
    "keep_days": st.floats() | st.integers() | st.text(max_size=3),
    "keep_size": st.integers() | st.floats(),
    "mode": st.sampled_from(["send-only", "receive", ""]) | st.integers(),
    "share_with": st.lists(st.sampled_from([ID, "SHA256:x"])) | st.text(max_size=3)}
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


async def dispatch(command: str, args: dict[str, Any]) -> Any:
    """A node's commands as the API sees them: it refuses what it cannot take, in a line."""
    if not all(isinstance(k, str) for k in args):
        raise AssertionError("the API handed on a key that is not text")
    if command == "trust" and not isinstance(args.get("keys"), list):
        raise ControlError("trust wants one or more key lines or peer IDs")
    return {"command": command, "args": args}


def post(body: bytes, endpoint: str) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with TestClient(TestServer(api(dispatch, Events()))) as client:
            answer = await client.post(endpoint, data=body)
            return answer.status, await answer.json()
    return asyncio.run(go())


def test_a_body_nested_too_deep_or_a_number_in_other_digits_is_refused_in_a_line() -> None:
    assert post(b"[" * 30_000 + b"]" * 30_000, "/v1/trust") == (
        400, {"error": "the request body is not JSON: nested too deep"})

    async def events_after(after: str) -> int:
        async with TestClient(TestServer(api(dispatch, Events()))) as client:
            answer = await client.get(f"/v1/events?after={after}", timeout=2)
            return answer.status
    assert asyncio.run(events_after("²")) == 200  # read as no number: from now on


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode())
       | st.builds(lambda n: b"x" * n, st.integers(MAX_BODY - 2, MAX_BODY + 2)),
       st.sampled_from(["/v1/trust", "/v1/restore", "/v1/pause", "/v1/nope"]))
def test_any_body_gets_a_result_or_one_json_error_line(body: bytes, endpoint: str) -> None:
    status, answer = post(body, endpoint)
    if status == 200:
        assert answer["command"] in ("trust", "restore", "pause")
        assert isinstance(answer["args"], dict)
        return
    assert status in (400, 404, 413), (status, answer)
    assert set(answer) == {"error"}
    assert "\n" not in answer["error"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
       | st.builds(lambda added, paused, settings: json.dumps(
                       {"added": added, "paused": paused, "settings": settings}).encode(),
                   st.lists(st.fixed_dictionaries({
                       "id": st.text(string.printable, max_size=10) | st.integers(),
                       "path": st.sampled_from(["/a", "rel", "/b/c", ""]) | st.integers()},
                       optional=SETTING),
                       max_size=3),
                   st.lists(st.text(max_size=5) | st.integers(), max_size=3),
                   st.dictionaries(st.sampled_from(["Sync", "../x"]),
                                   st.fixed_dictionaries({}, optional=SETTING)) | JSON))
def test_a_damaged_folder_list_gives_nothing_or_only_sound_folders(
        tmp_path_factory: Any, data: bytes) -> None:
    state = Path(tmp_path_factory.mktemp("state"))
    (state / FOLDERS_FILE).write_bytes(data)
    remembered = remembered_folders(state)
    for folder in remembered.added:
        assert check_folder_id(folder.id) == folder.id
        assert folder.path.is_absolute()
        if folder.keep is not None:
            assert 0 <= folder.keep.max_age <= 36500 * 86400
            assert 0 <= folder.keep.max_bytes < 1 << 62
    assert all(isinstance(i, str) for i in remembered.paused)
    for folder_id, saved in remembered.settings.items():  # each sound, as the node takes it
        folder = Folder(check_folder_id(folder_id), Path("/")).with_settings(saved)
        assert folder.share is None or all(isinstance(i, NodeId) for i in folder.share)
