// The node's page: the HTTP API of the control socket, on 127.0.0.1, with the token the
// state directory holds (`meshsync open` puts it after the #). Names and paths come from
// peers: they are only ever set as text, never as HTML.
"use strict";

const SAMPLES = 150;  // rate samples kept: 5 minutes, one each 2 s
const CHANGES = 50;   // recent changes listed
const COLOURS = ["#3a7", "#37a", "#a73", "#a37", "#7a3", "#73a"];

const token = (() => {
  const found = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (found) {
    sessionStorage.setItem("meshsync-token", found[1]);
    history.replaceState(null, "", location.pathname);  // out of the address bar and history
  }
  return sessionStorage.getItem("meshsync-token") || "";
})();
const rates = new Map();  // folder -> [{in, out}], oldest first
let names = new Map();    // node ID -> name

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function fill(table, rows) {
  const body = document.querySelector(`#${table} tbody`);
  body.replaceChildren(...rows);
}

// The short form of an ID, as everywhere else: its first 8 characters, file-name safe.
function short(id) {
  return id ? id.replace(/^SHA256:/, "").slice(0, 8).replace(/\//g, "_") : "?";
}

function size(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function ago(when) {
  if (when === null || when === undefined) return "never";
  const s = Math.max(0, Date.now() / 1000 - when);
  if (s < 1) return "now";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

function problem(text) {
  const p = document.getElementById("problem");
  p.hidden = !text;
  p.textContent = text || "";
}

async function api(method, path, body) {
  const init = {method, headers: {"X-Meshsync-Token": token}};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let answer;
  try {
    answer = await fetch(path, init);
  } catch (e) {
    throw new Error("the node does not answer: is it running?");
  }
  const found = await answer.json().catch(() => ({error: `the node answered ${answer.status}`}));
  if (!answer.ok) throw new Error(found.error || `the node answered ${answer.status}`);
  return found;
}

function showFolders(status, sample) {
  document.getElementById("node").textContent =
    `node ${short(status.id)} (${status.name}); ` + (status.coordinator
      ? `coordinator ${names.get(status.coordinator) || short(status.coordinator)}, term ${status.term}`
      : `electing (term ${status.term})`);
  const boxes = [];
  for (const f of status.folders) {
    const box = el("div", null, "folder");
    box.dataset.folder = f.id;
    const head = el("p");
    head.append(el("strong", f.id), ` ${f.path} — `, el("span", f.state, "state"));
    if (f.need_files) head.append(`, ${f.need_files} files (${size(f.need_bytes)}) to write`);
    if (f.conflicts) head.append(`, ${f.conflicts} conflict${f.conflicts === 1 ? "" : "s"}`);
    if (f.rate.in || f.rate.out) head.append(`, ↓ ${size(f.rate.in)}/s ↑ ${size(f.rate.out)}/s`);
    box.append(head);
    if (f.scan) {
      box.append(el("p", `scanning: ${f.scan.entries_done} of ${f.scan.entries_found} entries,`
        + ` ${size(f.scan.bytes_done)} of ${size(f.scan.bytes_found)}`));
    }
    const members = el("ul");
    for (const c of f.completion) {
      const li = el("li", `${c.name} (${short(c.id)}) `);
      const bar = el("span", null, "bar");
      const done = el("span");
      done.style.width = `${c.percent === null ? 0 : c.percent}%`;
      bar.append(done);
      li.append(bar, c.percent === null ? " not said yet" : ` ${c.percent}%`
        + (c.need_files ? `, needs ${c.need_files} files` : ""));
      members.append(li);
    }
    if (!f.completion.length) members.append(el("li", "no member online shares it"));
    box.append(members);
    for (const t of f.transfers) box.append(el("p", `writing ${t.path}: ${size(t.done)} of ${size(t.size)}`));
    if (f.mode !== "send-receive") box.append(el("p", f.mode === "send-only"
      ? "send-only: what the mesh changes is not written here"
      : "receive-only: what changes here is not sent"));
    if (f.share_with) {
      box.append(el("p", "shared only with "
        + f.share_with.map(i => `${names.get(i) || "?"} (${short(i)})`).join(", ")));
    }
    if (f.held_back_count) {
      box.append(el("p", `held back: ${f.held_back_count}`));
      const held = el("ul");
      for (const h of f.held_back) held.append(el("li", `${h.path}: ${h.reason}`, "held"));
      box.append(held);
      const action = {"send-only": "override", "receive-only": "revert"}[f.mode];
      if (action && f.held_back.some(h => h.cause === `${f.mode} folder`)) {
        box.append(settle(action, f.id));
      }
    }
    boxes.push(box);
    if (sample) {
      const samples = rates.get(f.id) || [];
      samples.push({in: f.rate.in, out: f.rate.out});
      rates.set(f.id, samples.slice(-SAMPLES));
    }
  }
  document.getElementById("folders").replaceChildren(...boxes);
  plot();
}

function plot() {
  const canvas = document.getElementById("rate");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  let top = 1024;
  for (const samples of rates.values()) for (const s of samples) top = Math.max(top, s.in, s.out);
  const legend = [];
  let colour = 0;
  for (const [folder, samples] of rates) {
    for (const [side, dash] of [["in", []], ["out", [4, 3]]]) {
      g.strokeStyle = COLOURS[colour % COLOURS.length];
      g.setLineDash(dash);
      g.beginPath();
      samples.forEach((s, i) => {
        const x = canvas.width * (i + SAMPLES - samples.length) / (SAMPLES - 1);
        const y = canvas.height - 4 - (canvas.height - 8) * s[side] / top;
        if (i) g.lineTo(x, y); else g.moveTo(x, y);
      });
      g.stroke();
    }
    const key = el("span", `■ ${folder}`);
    key.style.color = COLOURS[colour % COLOURS.length];
    legend.push(key, " ");
    colour += 1;
  }
  document.getElementById("legend").replaceChildren(
    ...legend, `solid: received, dashed: sent; the top is ${size(top)}/s`);
}

function showPeers(peers) {
  names = new Map(peers.map(p => [p.id, p.name]));
  fill("peers", peers.map(p => {
    const state = el("span", p.state, p.state);
    const trust = p.self ? "this node" : p.state === "untrusted" ? `not trusted: ${p.trust_command}`
      : p.via_introducer ? `via introducer ${short(p.via_introducer)}` : "trusted";
    const name = p.name_verified === false ? `${p.name} (unverified)` : p.name;
    const tr = row([short(p.id), name, p.address || "-", p.role, state, trust, ago(p.last_seen)]);
    tr.dataset.peer = p.name;
    return tr;
  }));
}

function showConflicts(conflicts) {
  const side = v => v ? `${v.node ? v.node.name : v.origin} ${v.time}` : "(deleted)";
  fill("conflicts", conflicts.map(c => row([c.folder, el("span", c.path, "path"), side(c.copy), side(c.current)])));
}

// The button that settles a one-way folder with the mesh: `override` (a send-only folder's
// versions win) or `revert` (the mesh's versions replace a receive-only folder's changes).
function settle(action, folder) {
  const button = el("button", action === "override"
    ? "override: make this node's versions win" : "revert: put the mesh's versions back", action);
  button.dataset.folder = folder;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const done = await api("POST", `/v1/${action}`, {id: folder});
      const count = done.overridden ?? done.reverted;
      const paths = `${count} path${count === 1 ? "" : "s"}`;
      document.getElementById("done").textContent = action === "override"
        ? `folder ${folder}: this node's versions of ${paths} announced`
        : `folder ${folder}: the mesh's versions of ${paths} are being put back`;
      problem("");
    } catch (e) {
      problem(e.message);
      button.disabled = false;
    }
  });
  return button;
}

async function showVersions(status) {
  const found = [];
  for (const f of status.folders) {
    const kept = await api("GET", `/v1/versions?path=${encodeURIComponent(f.path)}`);
    for (const v of kept) found.push({...v, root: f.path});
  }
  found.sort((a, b) => (a.time < b.time ? 1 : -1));
  fill("versions", found.slice(0, 100).map(v => {
    const button = el("button", "restore", "restore");
    button.dataset.path = v.path;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const done = await api("POST", "/v1/restore", {path: `${v.root}/${v.path}`, at: v.time});
        document.getElementById("done").textContent =
          `restored ${done.restored.path} as kept at ${done.restored.time}; it syncs like an edit`;
        versionsRead = 0;  // what it replaced is kept now: list again
        problem("");
      } catch (e) {
        problem(e.message);
        button.disabled = false;
      }
    });
    return row([v.folder, el("span", v.path, "path"), v.time, size(v.size), button]);
  }));
}

function told(event) {
  const list = document.getElementById("changes");
  let text;
  const when = new Date(event.time * 1000).toLocaleTimeString();
  if (event.type === "changed") {
    const by = event.origin === null ? "here" : `by ${event.origin_name || short(event.origin)}`;
    const more = event.count > event.paths.length ? ` and ${event.count - event.paths.length} more` : "";
    text = `${when} ${event.folder}: ${event.paths.slice(0, 5).join(", ")}${event.count > 5 && !more ? " …" : ""}${more} (${by})`;
  } else if (event.type === "conflict") {
    text = `${when} ${event.folder}: conflict on ${event.path}; the other version kept as ${event.copy}`;
  } else if (event.type === "peer") {
    text = `${when} peer ${event.name || short(event.peer)} ${event.state}${event.reason ? ` (${event.reason})` : ""}`;
  } else if (event.type === "warning") {
    text = `${when} warning: ${event.message}`;
  } else {
    return;
  }
  list.prepend(el("li", text, event.type));
  while (list.children.length > CHANGES) list.lastChild.remove();
}

let looking = false;
let versionsRead = 0;  // when the versions were last listed (a folder may keep thousands)
let soon = null;       // a look asked for by events, at most one a second
async function look(withVersions, sample) {
  if (looking) return;
  looking = true;
  withVersions = withVersions && Date.now() - versionsRead > 10000;
  if (withVersions) versionsRead = Date.now();
  try {
    const [status, peers, conflicts] = await Promise.all([
      api("GET", "/v1/status"), api("GET", "/v1/peers"), api("GET", "/v1/conflicts")]);
    showPeers(peers);
    showFolders(status, sample);
    showConflicts(conflicts);
    if (withVersions) await showVersions(status);
    problem("");
  } catch (e) {
    problem(e.message);
  } finally {
    looking = false;
  }
}

function follow() {
  // From the first kept: the page opens on the latest changes, not an empty list.
  const stream = new EventSource(`/v1/events?after=0&token=${encodeURIComponent(token)}`);
  for (const kind of ["changed", "conflict", "peer", "warning", "coordinator"]) {
    stream.addEventListener(kind, message => {
      told(JSON.parse(message.data));
      if (soon === null) {
        soon = setTimeout(() => { soon = null; look(true, false); }, 1000);
      }
    });
  }
}

if (!token) {
  problem("no token: open this page with `meshsync open`");
} else {
  look(true, true);
  follow();
  setInterval(() => look(false, true), 2000);
  setInterval(() => look(true, false), 15000);
}
