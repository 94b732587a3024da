"""The operations' tests run with the compiled kernel loaded, as a worker that has had a
window big enough for it: ``zonal_stats`` then computes every moment with the kernel, so
the tests that compare it with exactextract test the kernel, whatever ran before them.
The moments of small work, through exactextract, are tested in ``test_small_work.py``."""

from h3pipe.operations import coverage  # noqa: F401
