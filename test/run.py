"""Run every test, several at once, and print the closing line `N passed, N failed`.

Usage: python3 test/run.py [-j N] [--c BINARY]... [--py FILE]... [--wire SERVER[:FILE,FILE...]]...
                           [FILE...]
  -j N         run N test programs at once (default: $IMAPMEM_TEST_JOBS, else the number of
               CPUs, at least 4: most of a wire test's time is spent waiting)
  --c BINARY   a C test program; it prints its own `N passed, N failed` line
               (valgrind:BINARY runs it under valgrind, and a leak or error fails it)
  --py FILE    a Python test module that needs no server (test/check_*.py), run once
  --wire SRV   run the Python wire tests (test/test_*.py, or the files after ':')
               against the server binary SRV
  FILE...      with no --wire: run these wire test files against $IMAPMEM_BIN or ./imapmem

Each C program, each --py module and each wire test file against each server is one job: a
process of its own (a wire file runs as `run.py --one FILE` with IMAPMEM_BIN=SERVER), so a
file that crashes or hangs (killed after 15 minutes) fails alone, counted as one failure.
The longest jobs start first (the times of the last run are kept in build/test-times.json).
A job's output is printed whole when it ends, so outputs never interleave; the last line
counts every test of every job.
"""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TIMES = os.path.join(ROOT, "build", "test-times.json")
JOB_TIMEOUT = 900
RESULT = re.compile(r"^(\d+) passed, (\d+) failed", re.M)

VALGRIND = ["valgrind", "--quiet", "--leak-check=full", "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99"]


def run_one(path):
    """The child side: run the unittest module at path, print `N passed, N failed`."""
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)
    if directory != HERE:
        sys.path.insert(1, HERE)
    name = os.path.splitext(os.path.basename(path))[0]
    suite = unittest.defaultTestLoader.loadTestsFromName(name)
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    sys.stdout.flush()
    # a test counts once, whether it failed, erred or both (an error in a cleanup after a
    # failure); an error in setUpClass or a class cleanup counts as one more failure
    failed = [t for t, _ in result.failures + result.errors] + result.unexpectedSuccesses
    bad = {t.id(): isinstance(t, unittest.TestCase) for t in failed}
    ran_bad = sum(bad.values())
    print("%d passed, %d failed" % (result.testsRun - ran_bad - len(result.skipped), len(bad)))
    return 1 if bad else 0


class Job:
    def __init__(self, name, argv, env=None, guess=1.0):
        self.name, self.argv, self.env, self.guess = name, argv, env, guess
        self.passed = self.failed = 0
        self.output = ""
        self.seconds = 0.0
        self.proc = None

    def kill(self):
        """End the job and what it started (they are a session of their own)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self):
        t0 = time.monotonic()
        p = self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=JOB_TIMEOUT)
            note = None if p.returncode == 0 else "exited with status %d" % p.returncode
        except subprocess.TimeoutExpired:
            self.kill()                           # the job and the servers it started
            out, _ = p.communicate()
            note = "killed after %d s" % JOB_TIMEOUT
        finally:
            self.kill()
            p.wait()
        self.seconds = time.monotonic() - t0
        self.output = out.decode("utf-8", "replace")
        m = RESULT.findall(self.output)
        self.passed, self.failed = (int(m[-1][0]), int(m[-1][1])) if m else (0, 0)
        if note and self.failed == 0:
            self.output += "!! %s %s\n" % (self.name, note)
            self.failed = 1
        return self


def wire_files(names):
    if names:
        return [os.path.join(HERE, os.path.basename(n)) for n in names]
    return sorted(os.path.join(HERE, f) for f in os.listdir(HERE)
                  if f.startswith("test_") and f.endswith(".py"))


def jobs_of(cbins, pys, wires):
    me = [sys.executable, os.path.abspath(__file__), "--one"]
    jobs = []
    for b in cbins:
        cmd = VALGRIND + [b[len("valgrind:"):]] if b.startswith("valgrind:") else [b]
        jobs.append(Job(b, cmd, guess=5.0))
    for f in pys:
        jobs.append(Job(f, me + [f], guess=1.0))
    for w in wires:
        server, _, names = w.partition(":")
        env = dict(os.environ, IMAPMEM_BIN=os.path.abspath(server))
        slow = 2.0 if "asan" in server or "tsan" in server else 1.0
        for f in wire_files([n for n in names.split(",") if n]):
            jobs.append(Job("%s against %s" % (os.path.basename(f), server), me + [f], env,
                            guess=slow * os.path.getsize(f) / 10000.0))
    return jobs


def main(argv):
    if argv[:1] == ["--one"]:
        return run_one(argv[1])
    cbins, pys, wires, files = [], [], [], []
    workers = int(os.environ.get("IMAPMEM_TEST_JOBS", "0")) or max(4, os.cpu_count() or 1)
    i = 0
    while i < len(argv):
        if argv[i] in ("--c", "--py", "--wire", "-j") and i + 1 < len(argv):
            if argv[i] == "-j":
                workers = int(argv[i + 1])
            else:
                {"--c": cbins, "--py": pys, "--wire": wires}[argv[i]].append(argv[i + 1])
            i += 2
        else:
            files.append(argv[i])
            i += 1
    if not wires and not cbins and not pys:
        server = os.environ.get("IMAPMEM_BIN", os.path.join(ROOT, "imapmem"))
        wires = ["%s:%s" % (server, ",".join(files))]
    jobs = jobs_of(cbins, pys, wires)
    try:
        with open(TIMES) as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = {}
    jobs.sort(key=lambda j: -last.get(j.name, j.guess))
    t0 = time.monotonic()
    passed = failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(j.run) for j in jobs]
        try:
            for job in concurrent.futures.as_completed(futures):
                job = job.result()
                sys.stdout.write("== %s (%.1f s)\n%s" % (job.name, job.seconds, job.output))
                if job.output and not job.output.endswith("\n"):
                    sys.stdout.write("\n")
                sys.stdout.flush()
                passed, failed = passed + job.passed, failed + job.failed
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            for j in jobs:
                j.kill()
            raise
    if os.path.isdir(os.path.dirname(TIMES)):
        last.update({j.name: round(j.seconds, 2) for j in jobs})
        try:
            with open(TIMES, "w") as f:
                json.dump(last, f, indent=0, sort_keys=True)
        except OSError:
            pass
    print("== %d jobs, %d at once, in %.1f s" % (len(jobs), workers, time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
