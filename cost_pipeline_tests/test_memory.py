"""glibc's malloc as ``cost_pipeline`` tunes it: freed blocks reused within ``reusing_freed_memory``
(no page faults for the same buffers again), and handed back to the kernel when it ends."""

import resource

import numpy as np
import pytest

from cost_pipeline.lib import memory

pytestmark = pytest.mark.skipif(memory.LIBC is None, reason="glibc's malloc only (or the operator's MALLOC_* settings)")
BLOCK = 8 << 20  # a tags-map hashing buffer's size: above the mapping threshold outside the block


def faults_of(rounds: int) -> int:
    """Minor page faults of allocating, filling and freeing one block ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        np.ones(BLOCK // 8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_freed_blocks_are_reused_within_and_mapped_afresh_outside():
    outside = faults_of(10)  # each block mapped and faulted in again (in huge pages or small)
    assert outside >= 10
    with memory.reusing_freed_memory():
        faults_of(1)
        assert faults_of(10) < outside / 5  # the same pages again
    assert faults_of(10) > outside / 2  # the threshold as before


def test_memory_freed_within_is_handed_back_at_the_end():
    start = resident()
    with memory.reusing_freed_memory():
        blocks = [np.ones(BLOCK // 8) for _ in range(30)]  # 240 MiB at once
        assert resident() > start + 200 * 2**20
        del blocks
        kept = resident()
    assert kept > start + 200 * 2**20  # freed but kept for reuse while within
    assert resident() < start + 40 * 2**20
