"""How the CLI tests start cqat: directly, or under valgrind.

CQAT_TEST_VALGRIND=1 (meson test --setup valgrindcli) runs every cqat command under
memcheck, following the re-exec cqat does of itself (--trace-children), with each
process's report in a log file of its own. The reports are checked after every command:
an error or a definite/indirect leak fails the test that ran it, whatever the exit status
(the bad-input tests expect failures, so valgrind's exit status alone would hide one).
"""
import glob
import os
import tempfile

VALGRIND = os.environ.get("CQAT_TEST_VALGRIND") == "1"
_LOGS = tempfile.mkdtemp(prefix="cqat-vg-") if VALGRIND else None


def command(cqat, *args):
    """The argv that runs `cqat args...`."""
    if not VALGRIND:
        return [cqat, *args]
    return ["valgrind", "-q", "--trace-children=yes", "--leak-check=full",
            "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
            "--log-file=" + os.path.join(_LOGS, "vg.%p.log"), cqat, *args]


def check(args):
    """Raises AssertionError if valgrind reported anything for the commands run so far."""
    if not VALGRIND:
        return
    reports = []
    for path in sorted(glob.glob(os.path.join(_LOGS, "vg.*.log"))):
        with open(path) as f:
            text = f.read().strip()
        os.unlink(path)
        if text:
            reports.append(text)
    assert not reports, "valgrind, cqat %s:\n%s" % (" ".join(args), "\n".join(reports))


def timeout(seconds):
    """A per-command timeout, longer under valgrind (20-50x slower)."""
    return seconds * 30 if VALGRIND else seconds
