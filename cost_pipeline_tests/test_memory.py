"""glibc's malloc as ``cost_pipeline`` tunes it: freed blocks reused within ``reusing_freed_memory``
(no page faults for the same buffers again), and handed back to the kernel when it ends; Polars' read-ahead."""

import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from cost_pipeline.lib import memory

glibc = pytest.mark.skipif(memory.LIBC is None, reason="glibc's malloc only (or the operator's MALLOC_* settings)")
BLOCK = 8 << 20  # a tags-map hashing buffer's size: above the mapping threshold outside the block


def faults_of(rounds: int) -> int:
    """Minor page faults of allocating, filling and freeing one block ``rounds`` times (this thread's:
    threads an earlier test left in the process, e.g. a server's, fault pages of their own meanwhile)."""
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    before = resource.getrusage(who).ru_minflt
    for _ in range(rounds):
        np.ones(BLOCK // 8)
    return resource.getrusage(who).ru_minflt - before


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


FAULTS = """
import sys
sys.path.insert(0, sys.argv[1])
from cost_pipeline.lib import memory
from cost_pipeline_tests.test_memory import faults_of
outside = faults_of(10)
with memory.reusing_freed_memory():
    faults_of(1)
    within = faults_of(10)
print(outside, within, faults_of(10))
"""


@glibc
def test_freed_blocks_are_reused_within_and_mapped_afresh_outside():
    # in a process of its own: malloc's settings are process-wide, and a thread an earlier test left
    # inside ``reusing_freed_memory`` (or its blocks) changed what this thread's allocations fault in
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", FAULTS, root], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    outside, within, after = map(int, out.stdout.split())
    assert outside >= 10  # each block mapped and faulted in again (in huge pages or small)
    assert within < outside / 5  # the same pages again
    assert after > outside / 2  # the threshold as before


@glibc
def test_memory_freed_within_is_handed_back_at_the_end():
    start = resident()
    with memory.reusing_freed_memory():
        blocks = [np.ones(BLOCK // 8) for _ in range(30)]  # 240 MiB at once
        assert resident() > start + 200 * 2**20
        del blocks
        kept = resident()
    assert kept > start + 200 * 2**20  # freed but kept for reuse while within
    assert resident() < start + 40 * 2**20


READ_AHEAD = """
import os, subprocess, sys
import cost_pipeline
from cost_pipeline.lib.memory import row_groups_ahead
seen = [os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE")]
with row_groups_ahead(2):
    seen.append(os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE"))
seen.append(os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE"))
if len(sys.argv) == 1:  # and in a process started from this one (a run worker, a step process)
    seen.append(subprocess.run([sys.executable, "-c", CODE, "child"], capture_output=True, text=True).stdout.strip())
print(",".join(seen))
"""


@pytest.mark.parametrize(("operator", "seen"), [(None, "1,2,1,1,2,1"), ("3", "3,3,3,3,3,3")])
def test_scans_read_one_row_group_ahead_two_for_nested_records_and_the_operators_setting_wins(operator, seen):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLARS_ROW_GROUP_PREFETCH_SIZE", "COST_PIPELINE_PREFETCH"))}
    env |= {"POLARS_ROW_GROUP_PREFETCH_SIZE": operator} if operator else {}
    code = f"CODE = {READ_AHEAD!r}\n" + READ_AHEAD
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == seen


OVERLAPPING = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from cost_pipeline.lib import memory
from cost_pipeline_tests.test_memory import faults_of
entered, leave = threading.Event(), threading.Event()

def other_day():
    with memory.reusing_freed_memory():
        entered.set()
        leave.wait(60)

other = threading.Thread(target=other_day)
with memory.reusing_freed_memory():
    other.start()
    entered.wait(60)
    faults_of(1)
while_other = faults_of(10)  # this block left first: the other thread's still holds the settings
leave.set()
other.join()
print(while_other, faults_of(10))
"""


@glibc
def test_freed_blocks_stay_reused_until_the_last_of_two_days_side_by_side_ends():
    # two days ingested at once (lib/overlap) each hash their tags maps within reusing_freed_memory
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", OVERLAPPING, root], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    while_other, after = map(int, out.stdout.split())
    assert after >= 10  # mapped and faulted in afresh once both ended
    assert while_other < after / 5


INTERLEAVED = """
import os
import cost_pipeline
from cost_pipeline.lib.memory import row_groups_ahead
seen = []
first, second = row_groups_ahead(3), row_groups_ahead(2)  # two days' passes on two threads
first.__enter__()
second.__enter__()
seen.append(os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE"))
first.__exit__(None, None, None)  # the first ends while the second still runs
seen.append(os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE"))
second.__exit__(None, None, None)
seen.append(os.environ.get("POLARS_ROW_GROUP_PREFETCH_SIZE"))
print(",".join(seen))
"""


def test_read_ahead_of_passes_side_by_side_is_the_largest_until_the_last_ends():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLARS_ROW_GROUP_PREFETCH_SIZE", "COST_PIPELINE_PREFETCH"))}
    out = subprocess.run([sys.executable, "-c", INTERLEAVED], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "3,2,1"
