"""Run every test and print the closing line `N passed, N failed`.

Usage: python3 test/run.py [--c BINARY]... [--py FILE]... [--wire SERVER[:FILE,FILE...]]...
                           [FILE...]
  --c BINARY   a C test program; it prints its own `N passed, N failed` line
               (valgrind:BINARY runs it under valgrind, and a leak or error fails it)
  --py FILE    a Python test module that needs no server (test/check_*.py), run once
  --wire SRV   run the Python wire tests (test/test_*.py, or the files after ':')
               against the server binary SRV
  FILE...      with no --wire: run these wire test files against ./imapmem
"""
import os
import re
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import imapserver  # noqa: E402


VALGRIND = ["valgrind", "--quiet", "--leak-check=full", "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99"]


def run_c(binary):
    """Run a C test; "valgrind:PATH" runs it under valgrind's memcheck."""
    print("== %s" % binary, flush=True)
    cmd = [binary]
    if binary.startswith("valgrind:"):
        cmd = VALGRIND + [binary[len("valgrind:"):]]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    out = p.stdout.decode("utf-8", "replace")
    sys.stdout.write(out)
    m = re.findall(r"^(\d+) passed, (\d+) failed", out, re.M)
    passed, failed = (int(m[-1][0]), int(m[-1][1])) if m else (0, 0)
    if p.returncode != 0 and failed == 0:
        print("!! %s exited with status %d" % (binary, p.returncode))
        failed = 1
    return passed, failed


def run_py(path):
    print("== %s" % path, flush=True)
    name = os.path.splitext(os.path.basename(path))[0]
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    bad = len(result.failures) + len(result.errors)
    return result.testsRun - bad - len(result.skipped), bad


def run_wire(server, files):
    imapserver.BIN = os.path.abspath(server)
    loader = unittest.defaultTestLoader
    if files:
        suite = unittest.TestSuite(
            loader.loadTestsFromName(os.path.splitext(os.path.basename(f))[0]) for f in files)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    print("== wire tests against %s" % server, flush=True)
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    bad = len(result.failures) + len(result.errors)
    return result.testsRun - bad - len(result.skipped), bad


def main(argv):
    passed = failed = 0
    cbins, pys, wires, files = [], [], [], []
    i = 0
    while i < len(argv):
        if argv[i] in ("--c", "--py", "--wire") and i + 1 < len(argv):
            {"--c": cbins, "--py": pys, "--wire": wires}[argv[i]].append(argv[i + 1])
            i += 2
        else:
            files.append(argv[i])
            i += 1
    if not wires and not cbins and not pys:
        wires = ["%s:%s" % (imapserver.BIN, ",".join(files))]
    for b in cbins:
        p, f = run_c(b)
        passed, failed = passed + p, failed + f
    for m in pys:
        p, f = run_py(m)
        passed, failed = passed + p, failed + f
    for w in wires:
        server, _, names = w.partition(":")
        p, f = run_wire(server, [n for n in names.split(",") if n])
        passed, failed = passed + p, failed + f
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
