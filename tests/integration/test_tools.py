"""Real tools inside the folder: git, tar, rsync, sed -i and editors' save-by-rename."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from tests.integration.lan import run, same_trees, tree, wait_for
from tests.integration.test_sync import announced, mesh, write


def test_a_tar_of_the_standard_library_converges_identically_on_three_hosts(make_lan, tmp_path):
    lan = mesh(make_lan, 3)
    h1 = lan.hosts[0]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    archive = tmp_path / "stdlib.tar"
    run("tar", "-cf", str(archive), "--exclude=__pycache__", "--exclude=site-packages",
        "-C", str(stdlib.parent), stdlib.name)
    run("tar", "-xf", str(archive), "-C", str(h1.sync))
    expected = tree(h1.sync)
    assert len(expected) > 1000
    wait_for("the tree on all three hosts", lambda: same_trees(lan.hosts) == expected, 120,
             every=0.5)
    # Under that load too, what a host only received is never announced back as its change.
    assert [announced(h) for h in lan.hosts[1:]] == [0, 0]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_clone_and_checkout_round_trip(make_lan, tmp_path):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    origin = tmp_path / "origin"
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t",
           "-c", "init.defaultBranch=main"]
    run(*git, "init", "-q", str(origin))
    write(origin / "src/app.py", b"print('v1')\n")
    run(*git, "-C", str(origin), "add", "-A")
    run(*git, "-C", str(origin), "commit", "-qm", "v1")
    run(*git, "-C", str(origin), "checkout", "-qb", "feature")
    write(origin / "src/app.py", b"print('feature')\n")
    write(origin / "docs/new.md", b"# new\n")
    run(*git, "-C", str(origin), "add", "-A")
    run(*git, "-C", str(origin), "commit", "-qm", "feature")
    run(*git, "-C", str(origin), "checkout", "-q", "main")

    run(*git, "clone", "-q", str(origin), str(h1.sync / "repo"))
    wait_for("the clone on h2", lambda: same_trees(lan.hosts) and (h2.sync / "repo/.git/HEAD")
             .exists(), 20)
    repo2 = str(h2.sync / "repo")
    safe = ["-c", f"safe.directory={repo2}"]
    run(*git, *safe, "-C", repo2, "fsck", "--no-progress")
    assert run(*git, *safe, "-C", repo2, "status", "--porcelain").stdout == ""

    run(*git, *safe, "-C", repo2, "checkout", "-q", "feature")
    wait_for("the checkout to sync back to h1",
             lambda: (h1.sync / "repo/src/app.py").read_bytes() == b"print('feature')\n"
             and same_trees(lan.hosts), 20)
    repo1 = str(h1.sync / "repo")
    status = run(*git, "-c", f"safe.directory={repo1}", "-C", repo1, "status", "--porcelain")
    assert status.stdout == ""
    assert (h1.sync / "repo/docs/new.md").exists()


def test_rsync_sed_and_an_editors_save_arrive_intact(make_lan, tmp_path):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    source = tmp_path / "src"
    for i in range(50):
        write(source / f"d{i % 5}/f{i}.txt", f"line {i}\n".encode() * (i + 1))
    run("rsync", "-a", f"{source}/", str(h1.sync / "synced"))
    wait_for("rsync's tree on h2", lambda: same_trees(lan.hosts) and len(tree(h2.sync)) == 56,
             20)

    run("sed", "-i", "s/line/LINE/", str(h1.sync / "synced/d0/f0.txt"))
    wait_for("sed -i to arrive",
             lambda: (h2.sync / "synced/d0/f0.txt").read_bytes() == b"LINE 0\n", 10)

    # An editor's save: write a temporary file beside the target, then rename over it.
    note = h2.sync / "synced/d1/f1.txt"
    swap = note.with_name(".f1.txt.swp~")
    swap.write_bytes(b"saved by the editor\n")
    swap.rename(note)
    wait_for("the saved file on h1", lambda: (h1.sync / "synced/d1/f1.txt").read_bytes()
             == b"saved by the editor\n" and same_trees(lan.hosts), 10)
