"""Tables and lines for people; `--json` prints the same data unrendered."""

from __future__ import annotations

import time
from typing import Any

from meshsync.core.ids import short_of
from meshsync.core.throttle import shown

WIDE = 4096  # characters of a path or reason shown: all of any real one


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def ago(when: float | None, now: float | None = None) -> str:
    """`now`, `5s ago`, `3m ago`, `2h ago`, or `never`."""
    if when is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - when)
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def peers(rows: list[dict[str, Any]]) -> str:
    """The `meshsync peers` table, with the trust command under it for untrusted peers and
    the introducer of those trusted on an introducer's word."""
    body = [
        [
            short_of(row["id"])
            + ("*" if row["self"] else "+" if row.get("via_introducer") else ""),
            row["name"] + ("" if row.get("name_verified", True) else " (unverified)"),
            row["address"] or "-",
            row["role"],
            row["state"],
            ago(row["last_seen"]),
        ]
        for row in rows
    ]
    text = table(["ID", "NAME", "ADDRESS", "ROLE", "STATE", "LAST SEEN"], body) + "\n* this node"
    names = {row["id"]: row["name"] for row in rows}
    introduced = [f"  {short_of(row['id'])}: via introducer "
                  f"{row['via_introducer']} ({shown(names.get(row['via_introducer'], '?'))})"
                  for row in rows if row.get("via_introducer")]
    if introduced:
        text += "\n+ trusted on an introducer's word:\n" + "\n".join(introduced)
    hints = [f"  {row['trust_command']}" for row in rows if row.get("trust_command")]
    if hints:
        text += "\nto trust an untrusted peer, run:\n" + "\n".join(hints)
    fixes = [f"  {short_of(row['id'])}: {row['fix']}"
             for row in rows if row.get("fix")]
    if fixes:
        text += "\nrefused for their clocks:\n" + "\n".join(fixes)
    return text


def election(result: dict[str, Any]) -> str:
    """The coordinator, named as `peers` names it, and the term."""
    if result["coordinator"] is None:
        return f"no coordinator yet (term {result['term']}, election open)"
    return (f"coordinator {node(result['coordinator'], result.get('coordinator_name'))}"
            f" (term {result['term']})")


def node(node_id: str, name: str | None) -> str:
    """A node as every table and line names it: its name and short ID."""
    return f"{shown(name or '?', 40)} ({short_of(node_id)})"


WAITING_SHOWN = 3  # held-back paths listed per folder; `--json` has up to 100


def folder_settings(folder: dict[str, Any]) -> str:
    """What `set` says: the folder's settings, all of them."""
    return "\n".join([f"folder {folder['id']}:", *settings(folder, every=True)])


def settings(folder: dict[str, Any], every: bool = False) -> list[str]:
    """A folder's settings, a line each: those that differ from the defaults, or `every` one."""
    lines = []
    if folder.get("mode") == "send-only":
        lines.append(f"  send-only: what the mesh changes is not written here (`meshsync"
                     f" override {folder['id']}` makes this node's versions win)")
    elif folder.get("mode") == "receive-only":
        lines.append(f"  receive-only: changes made here are not sent (`meshsync revert"
                     f" {folder['id']}` puts the mesh's versions back)")
    elif every:
        lines.append("  send-receive: changes go out and come in")
    if (share := folder.get("share_with")) is not None:
        shorts = ", ".join(short_of(i) for i in share)
        lines.append(f"  shared only with {shorts}")
    elif every:
        lines.append("  shared with every trusted node that has it")
    if keep := folder.get("keep"):
        lines.append(f"  keeps what sync replaces {keep['days']:g} days, at most"
                     f" {size(keep['bytes'])}")
    return lines


def status(result: dict[str, Any]) -> str:
    """Per folder: its state, what it still needs, the online members sharing it, the scan
    under way, transfers and their rate, and the first paths held back, with why."""
    lines = [f"node {node(result['id'], result['name'])}; {election(result)}"]
    for folder in result["folders"]:
        lines.append(folder_line(folder))
        lines += settings(folder)
        lines += [f"  {shown(t['path'], WIDE)}  {size(t['done'])} of {size(t['size'])}"
                  for t in folder["transfers"]]
        held = folder.get("held_back_count", folder.get("waiting_count", 0))
        listed = folder.get("held_back", folder.get("waiting", []))[:WAITING_SHOWN]
        lines += [f"  held back: {shown(w['path'], WIDE)}: {shown(w['reason'], WIDE)}"
                  + (f" (next try {later(w['retry_in'])})" if "retry_in" in w else "")
                  for w in listed]
        if held > len(listed):
            lines.append(f"  held back: {held - len(listed)} more (see --json)")
    return "\n".join(lines)


def folder_line(folder: dict[str, Any]) -> str:
    """One folder's state, what it needs, held back, conflicts, rate and members, in a line."""
    members = len(folder["members"])
    state = folder["state"]
    if scan := folder.get("scan"):
        state += (f" ({scan['entries_done']:,} of {scan['entries_found']:,} entries, "
                  f"{size(scan['bytes_done'])} of {size(scan['bytes_found'])}"
                  f"{', still finding more' if scan['walking'] else ''})")
    if folder["need_files"]:
        state += f", needs {folder['need_files']} files ({size(folder['need_bytes'])})"
    held = folder.get("held_back_count", folder.get("waiting_count", 0))
    if held and state == "held back":
        state += f": {held} file{'' if held == 1 else 's'}"
    elif held:
        state += f", {held} held back"
    if folder["conflicts"]:
        state += f", {folder['conflicts']} conflict{'' if folder['conflicts'] == 1 else 's'}"
    rate = folder.get("rate") or {}
    if rate.get("in") or rate.get("out"):
        state += f", receiving {size(rate['in'])}/s, sending {size(rate['out'])}/s"
    done = ", ".join(f"{shown(c['name'], 40)} {c['percent']}%"
                     for c in folder.get("completion", []) if c["percent"] is not None)
    return (f"{folder['id']}  {folder['path']}  {state}; shared with {members} online "
            f"member{'' if members == 1 else 's'}" + (f" ({done})" if done else ""))


def event(e: dict[str, Any]) -> str | None:
    """An event of the node's stream as a line; None for one not shown."""
    def named(key: str, name: str) -> str:
        node_id = e.get(key)
        return node(node_id, e.get(name)) if isinstance(node_id, str) else "?"

    match e.get("type"):
        case "peer":
            reason = f" ({shown(e['reason'], None)})" if e.get("reason") else ""
            return f"peer {named('peer', 'name')} {e.get('state')}{reason}"
        case "coordinator":
            return f"coordinator {named('coordinator', 'name')}, term {e.get('term')}"
        case "changed":
            paths = e.get("paths") or []
            more = (e.get("count") or 0) - min(3, len(paths))
            by = "here" if e.get("origin") is None else f"from {named('origin', 'origin_name')}"
            return (f"{e.get('folder')}: {e.get('count')} changed {by}: "
                    + ", ".join(shown(p, 80) for p in paths[:3])
                    + (f" and {more} more" if more > 0 else ""))
        case "conflict":
            return (f"{e.get('folder')}: conflict on {shown(e.get('path', ''), WIDE)}: the other"
                    f" version kept as {shown(e.get('copy', ''), WIDE)}")
        case "warning":
            return f"warning: {shown(e.get('message', ''), WIDE)}"
        case "missed":
            return f"({e.get('count')} events missed)"
    return None


def later(seconds: float) -> str:
    """`now`, `in 40s`, `in 4m 10s`."""
    if seconds < 1:
        return "now"
    minutes, rest = divmod(int(seconds), 60)
    return f"in {minutes}m {rest}s" if minutes else f"in {rest}s"


def conflicts(rows: list[dict[str, Any]]) -> str:
    """The conflict copies, each with the node and time of its version and of the file's."""
    if not rows:
        return "no conflicts"

    def side(version: dict[str, Any] | None) -> str:
        if version is None:
            return "(deleted)"
        node = version.get("node")
        return f"{node['name'] if node else version['origin']} {version['time']}"

    body = [[r["folder"], r["path"], side(r["copy"]), side(r["current"])] for r in rows]
    return (table(["FOLDER", "CONFLICT COPY", "ITS VERSION", "CURRENT VERSION"], body)
            + "\nkeep the copy you want under the original name and delete the other")


def log(rows: list[dict[str, Any]]) -> str:
    """The latest changes, newest first: when (the file's time), by which node, what."""
    if not rows:
        return "no changes"

    def what(row: dict[str, Any]) -> str:
        return f"file {size(row['size'])}" if row["change"] == "file" else row["change"]

    body = [[r["time"], r["node"]["name"] if r["node"] else "?", what(r), r["folder"],
             shown(r["path"], WIDE)] for r in rows]
    return table(["TIME (UTC)", "BY", "CHANGE", "FOLDER", "PATH"], body)


def versions(rows: list[dict[str, Any]]) -> str:
    """Kept versions, oldest first, with what `restore --at` takes."""
    if not rows:
        return "no versions kept"
    body = [[r["path"], r["time"], size(r["size"]), r["kept"]] for r in rows]
    return (table(["PATH", "KEPT AT (UTC)", "SIZE", "AS"], body)
            + "\nto bring one back: meshsync restore PATH --at TIME")


def restored(result: dict[str, Any]) -> str:
    """What `meshsync restore` put back."""
    version = result["restored"]
    return f"restored {version['path']} as kept at {version['time']}; it syncs like an edit"


def size(count: int) -> str:
    """Bytes for people: `512 B`, `1.5 MiB`."""
    if count < 1024:
        return f"{count} B"
    value, unit = count / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def trusted(result: dict[str, Any]) -> str:
    """What `meshsync trust` changed."""
    mark = (" as introducer: the members it trusts are trusted here too"
            if result.get("introducer") else "")
    lines = [f"trusted {i}{mark}" for i in result["added"]]
    lines += [f"already trusted {i}{mark}" for i in result["already"]]
    return "\n".join(lines)
