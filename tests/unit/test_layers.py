"""Imports point down: the core is pure, adapters own one library each and ignore one another."""

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import meshsync

ROOT = Path(meshsync.__file__).parent
STDLIB = frozenset(sys.stdlib_module_names)
ADAPTERS = ("crypto", "net", "control", "store", "fs")

# Layer -> third-party distributions and meshsync packages it may import, besides the stdlib.
# `meshsync` alone means the top-level package (its constants), not its subpackages.
ALLOWED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "core": (frozenset(), frozenset({"meshsync", "meshsync.core"})),
    "crypto": (frozenset({"cryptography", "nacl"}),
               frozenset({"meshsync.crypto", "meshsync.core"})),
    "net": (
        frozenset({"aiohttp", "zeroconf", "ifaddr", "yarl", "multidict"}),
        frozenset({"meshsync", "meshsync.net", "meshsync.core"}),
    ),
    # The node's side speaks HTTP (aiohttp); the CLI's side is the stdlib's, to start fast.
    "control": (frozenset({"aiohttp"}), frozenset({"meshsync.control", "meshsync.core"})),
    # Not written yet; the rule is ready for them (sqlite3 is stdlib).
    "store": (frozenset(), frozenset({"meshsync.store", "meshsync.core"})),
    "fs": (frozenset({"pathspec", "watchfiles"}), frozenset({"meshsync.fs", "meshsync.core"})),
}
ANYTHING_BUT_CLI = "node"
ANYTHING = ("cli",)
KNOWN_LAYERS = {*ALLOWED, ANYTHING_BUT_CLI, *ANYTHING}


@dataclass(frozen=True)
class Import:
    module: str  # importing module, e.g. meshsync.net.server
    target: str  # imported module, absolute, e.g. meshsync.core.wire
    line: int
    file: str = ""  # as shown in failures, e.g. meshsync/net/server.py

    def __str__(self) -> str:
        return f"{self.file or self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether `name` is a module or package inside meshsync (on disk)."""
    base = ROOT.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[Import]:
    """Every import in a file, anywhere in it, resolved to absolute module names."""
    module = module_name(path)
    file = path.relative_to(ROOT.parent).as_posix()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno, file) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base == "__future__":
                continue
            for alias in node.names:
                # `from meshsync.core import election` imports the module meshsync.core.election.
                sub = f"{base}.{alias.name}"
                target = sub if base.startswith("meshsync") and is_module(sub) else base
                found.append(Import(module, target, node.lineno, file))
    return found


def layer_of(module: str) -> str | None:
    """The subpackage a module belongs to; None for meshsync/__init__.py and __main__.py."""
    parts = module.split(".")
    if len(parts) < 2 or (len(parts) == 2 and (ROOT / f"{parts[1]}.py").is_file()):
        return None
    return parts[1]


def all_imports() -> list[Import]:
    return [imp for path in sorted(ROOT.rglob("*.py")) for imp in imports_of(path)]


def within(target: str, package: str) -> bool:
    if package == "meshsync":
        return target == "meshsync"
    return target == package or target.startswith(package + ".")


def violation(imp: Import) -> str | None:
    """Why this import breaks the layering, or None if it is allowed."""
    layer = layer_of(imp.module)
    top = imp.target.split(".")[0]
    if layer is None or layer in ANYTHING:
        return None
    if layer == ANYTHING_BUT_CLI:
        if within(imp.target, "meshsync.cli"):
            return "the node may not import the CLI"
        if top not in STDLIB and top != "meshsync":
            return "the node reaches libraries only through the adapter that owns each"
        return None
    if layer not in ALLOWED:
        return f"{layer} has no layer rule in tests/unit/test_layers.py"
    if top in STDLIB:
        return None
    libraries, packages = ALLOWED[layer]
    if top == "meshsync":
        if any(within(imp.target, p) for p in packages):
            return None
        return f"{layer} may import only {', '.join(sorted(packages))} of meshsync"
    if top in libraries:
        return None
    allowed = ", ".join(sorted(libraries)) or "no third-party library"
    return f"{layer} may import only the stdlib and {allowed}"


def test_import_collection_sees_imports_inside_functions() -> None:
    source = ROOT / "net" / "server.py"
    found = {imp.target for imp in imports_of(source)}
    assert {"aiohttp", "meshsync.core.wire", "meshsync.net.auth"} <= found
    main = {imp.target for imp in imports_of(ROOT / "cli" / "main.py")}
    assert "meshsync.cli.start" in main  # imported inside main()


def test_relative_imports_resolve_to_absolute_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pkg = tmp_path / "meshsync" / "core"
    pkg.mkdir(parents=True)
    (tmp_path / "meshsync" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "ids.py").write_text("")
    (pkg / "x.py").write_text(
        "from . import ids\nfrom .ids import NodeId\nfrom .. import net\n"
        "def f():\n    from ..crypto import keys\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "meshsync")
    targets = [imp.target for imp in imports_of(pkg / "x.py")]
    assert targets == ["meshsync.core.ids", "meshsync.core.ids", "meshsync", "meshsync.crypto"]
    assert violation(Import("meshsync.core.x", "meshsync.crypto", 5)) is not None


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("meshsync.core.wire", "aiohttp"),
        ("meshsync.core.ids", "cryptography.hazmat"),
        ("meshsync.core.plan", "meshsync.store.index"),
        ("meshsync.core.election", "meshsync.node.clock"),
        ("meshsync.crypto.keys", "meshsync.net.client"),
        ("meshsync.crypto.keys", "meshsync"),
        ("meshsync.net.server", "cryptography"),
        ("meshsync.net.client", "meshsync.crypto.sshsig"),
        ("meshsync.net.client", "meshsync.control.protocol"),
        ("meshsync.control.server", "zeroconf"),
        ("meshsync.control.server", "meshsync.net"),
        ("meshsync.store.index", "meshsync.fs.scan"),
        ("meshsync.fs.watch", "meshsync.store"),
        ("meshsync.node.node", "meshsync.cli.render"),
        ("meshsync.node.node", "aiohttp"),
        ("meshsync.node.node", "zeroconf"),
    ],
)
def test_rule_refuses_an_upward_or_sideways_import(module: str, target: str) -> None:
    assert violation(Import(module, target, 1)) is not None


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("meshsync.core.wire", "json"),
        ("meshsync.core.wire", "meshsync"),
        ("meshsync.core.membership", "meshsync.core.ids"),
        ("meshsync.crypto.keys", "cryptography.hazmat.primitives"),
        ("meshsync.crypto.trust", "meshsync.core.ids"),
        ("meshsync.net.discovery", "zeroconf.asyncio"),
        ("meshsync.net.discovery", "meshsync"),
        ("meshsync.control.client", "meshsync.core.errors"),
        ("meshsync.node.node", "meshsync.net.server"),
        ("meshsync.cli.main", "meshsync.node.config"),
        ("meshsync.__main__", "meshsync.cli.main"),
    ],
)
def test_rule_allows_a_downward_import(module: str, target: str) -> None:
    assert violation(Import(module, target, 1)) is None


def test_every_module_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    unknown = packages - KNOWN_LAYERS
    assert not unknown, f"add a layer rule to tests/unit/test_layers.py for {sorted(unknown)}"
    loose = {p.name for p in ROOT.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside any layer: {sorted(loose)}"


def test_imports_point_down() -> None:
    broken = [f"{imp}: {why}" for imp in all_imports() if (why := violation(imp))]
    assert not broken, "layering broken:\n" + "\n".join(broken)


def test_adapters_never_import_each_other() -> None:
    broken = []
    for imp in all_imports():
        layer = layer_of(imp.module)
        if layer not in ADAPTERS:
            continue
        for other in ADAPTERS:
            if other != layer and within(imp.target, f"meshsync.{other}"):
                broken.append(f"{imp}: adapter {layer} may not use adapter {other}")
    assert not broken, "\n".join(broken)


def test_top_level_package_imports_no_layer() -> None:
    # Every layer loads meshsync/__init__.py; it must not drag the others in with it.
    found = [imp for imp in imports_of(ROOT / "__init__.py") if imp.target.startswith("meshsync")]
    assert not found, "\n".join(map(str, found))


def test_cli_starts_without_loading_aiohttp_or_zeroconf() -> None:
    heavy = ("aiohttp", "zeroconf")
    probe = (
        "import sys, meshsync.cli.main\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"importing meshsync.cli.main loaded: {done.stdout}"
