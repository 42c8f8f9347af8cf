"""The sweep of Triton's shared-memory regions that killed stubs leave behind (pure logic,
on a temporary directory standing in for /dev/shm and a fake /proc)."""

from __future__ import annotations

import os
import time

import pytest

from whisper_ops import shm_sweep

pytestmark = pytest.mark.unit
REGION = shm_sweep.REGION_PREFIX


def _region(folder, name, age_s):
    path = folder / name
    path.write_bytes(b"\0" * 64)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def _process(proc, pid, *mapped):
    (proc / str(pid)).mkdir(parents=True)
    lines = ["7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/libc.so.6"]
    lines += [f"7f20-7f30 rw-s 00000000 00:1a 2 /dev/shm/{name}" for name in mapped]
    (proc / str(pid) / "maps").write_text("\n".join(lines) + "\n")


def test_only_old_regions_no_process_maps_are_removed(tmp_path):
    shm, proc = tmp_path / "shm", tmp_path / "proc"
    shm.mkdir()
    orphan = _region(shm, REGION + "orphan", age_s=600)
    in_use = _region(shm, REGION + "in-use", age_s=600)
    deleted_but_mapped = _region(shm, REGION + "old-mapping", age_s=600)
    fresh = _region(shm, REGION + "just-created", age_s=1)  # Triton has not mapped it yet
    other = _region(shm, "someone-elses-file", age_s=600)
    _process(proc, 100, in_use.name)
    (proc / "101").mkdir(parents=True)
    (proc / "101" / "maps").write_text(
        f"7f20-7f30 rw-s 00000000 00:1a 3 /dev/shm/{deleted_but_mapped.name} (deleted)\n")

    assert shm_sweep.mapped_files(proc) == {in_use.name, deleted_but_mapped.name}
    assert shm_sweep.sweep(shm, proc) == 1
    assert not orphan.exists()
    assert in_use.exists() and deleted_but_mapped.exists() and fresh.exists() and other.exists()
    # When the server has exited, a region it wrote a moment ago is an orphan too.
    assert shm_sweep.sweep(shm, proc, min_age_s=0.0) == 1 and not fresh.exists()


def test_regions_of_another_user_are_left_alone(tmp_path):
    _region(tmp_path, REGION + "theirs", age_s=600)
    assert shm_sweep.orphaned_regions(tmp_path, set(), time.time(), uid=os.getuid() + 1) == []


def test_no_shm_directory_sweeps_nothing(tmp_path):
    assert shm_sweep.sweep(tmp_path / "absent", tmp_path) == 0
