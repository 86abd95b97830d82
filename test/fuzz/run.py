"""Build and run the libFuzzer targets of test/fuzz/ and report what they found.

Usage: python3 test/fuzz/run.py [--smoke] [--seconds N] [--parallel N] [TARGET...]

  (default)     each target fuzzes for FUZZ_SECONDS (default 60) seconds, starting from
                its seed corpus (test/fuzz/corpus/TARGET) and its working corpus
                (build/fuzz/corpus-TARGET, kept between runs, not committed), with the
                dictionary test/fuzz/imap.dict; the targets run side by side, as many at a
                time as there are CPUs (--parallel N to choose)
  --smoke       make test's short run: every regression input in test/fuzz/regress/TARGET/
                once, then the seed corpus and a fixed number of mutations (FUZZ_SMOKE_RUNS,
                default 2000, times a per-target factor), with a fixed seed and a throwaway
                working corpus; ends with `N passed, N failed`, one test per target, failed
                if a regression input still fails or the run found anything (which it only
                reports: the input stays in build/fuzz/artifacts/)
  TARGET...     only these (session, mbox, mime, args; default all)

Each target is built first (build/fuzz/fuzz_TARGET) if its sources changed, with
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11
        -pthread -I. test/fuzz/fuzz_TARGET.c -o build/fuzz/fuzz_TARGET
(CC=... to use another clang). One line per target: executions, exec/s, coverage (cov and
ft from libFuzzer's final status line), crashes, regression inputs passed. A crash,
sanitizer report, leak, timeout or broken promise (a check of the harness) is copied into
test/fuzz/regress/TARGET/ with a name that says what it is, and its report is printed; the
full log is in build/fuzz/logs/. IMAPMEM_FUZZ_KNOWN (see test/fuzz/fuzz_util.h) is passed
to the fuzzing runs, never to the regression inputs. A timeout in a long run is checked by
running its input alone: if it finishes there, the machine was too busy (a niced fuzzer can
wait seconds for a CPU), so it is counted as a machine timeout, not kept, and the target
fuzzes on for the rest of its time.
Exit status: 0 if nothing was found, 1 otherwise, 2 if the targets cannot be built.
"""
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build", "fuzz")

# name: (-max_len, -timeout seconds, smoke mutations per FUZZ_SMOKE_RUNS unit)
TARGETS = {
    "session": (60000, 25, 1),
    "mbox": (65536, 10, 1),
    "mime": (65536, 10, 1),
    "args": (4096, 10, 5),
}
CFLAGS = ["-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
          "-std=c11", "-pthread"]


def clang():
    return os.environ.get("CC_FUZZ") or (os.environ["CC"] if "clang" in os.environ.get("CC", "")
                                         else "clang")


def libfuzzer_works(cc):
    """Can cc link a libFuzzer target? (clang without compiler-rt cannot.)"""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <stddef.h>\n#include <stdint.h>\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) "
                    "{ (void)d; (void)n; return 0; }\n")
        try:
            p = subprocess.run([cc, "-fsanitize=fuzzer,address,undefined", src, "-o",
                                os.path.join(tmp, "t")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        except OSError:
            return False
        return p.returncode == 0


def build(target, cc):
    """Build build/fuzz/fuzz_TARGET if a source is newer; returns (path, error text)."""
    src = os.path.join(HERE, "fuzz_%s.c" % target)
    out = os.path.join(BUILD, "fuzz_%s" % target)
    deps = [src, os.path.join(HERE, "fuzz_util.h"), os.path.join(ROOT, "imapmem.c"),
            os.path.join(ROOT, "imapmem.h")]
    if os.path.exists(out) and all(os.path.getmtime(d) <= os.path.getmtime(out) for d in deps):
        return out, None
    tmp = out + ".tmp"
    p = subprocess.run([cc] + CFLAGS + ["-I" + ROOT, src, "-o", tmp], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, cwd=ROOT)
    if p.returncode != 0:
        return None, p.stdout.decode("utf-8", "replace")
    os.replace(tmp, out)
    return out, None


# ---------------------------------------------------------------------------------------
def first_frame(log, skip=("fuzzer::", "__sanitizer", "__asan", "__interceptor", "__lsan",
                           "__ubsan", "abort", "raise", "pthread_kill", "fz_fail", "fz_verdict",
                           "malloc", "calloc", "realloc", "strtou", "__libc", "libc.so")):
    """The function of the first stack frame that is imapmem's or the harness's."""
    for m in re.finditer(r"^\s+#\d+ 0x[0-9a-f]+ in (\S+) (\S+)", log, re.M):
        fn, where = m.group(1), m.group(2)
        if not any(fn.startswith(s) or s in where for s in skip):
            return fn
    return None


def classify(log):
    """A short name for what the log reports (for the regression file) and its report."""
    def slug(text):
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
    m = re.search(r"BROKEN PROMISE: (.*)", log)
    if m:
        kind = "promise-" + slug(" ".join(m.group(1).split()[:8]))
    elif re.search(r"ERROR: libFuzzer: timeout", log):
        kind = "timeout"
    elif re.search(r"ERROR: LeakSanitizer", log):
        kind = "leak"
    elif re.search(r"ERROR: libFuzzer: out-of-memory", log):
        kind = "oom"
    else:
        m = (re.search(r"SUMMARY: AddressSanitizer: (\S+)", log) or
             re.search(r"SUMMARY: UndefinedBehaviorSanitizer: (\S+)", log) or
             re.search(r"runtime error: (\w+(?: \w+)?)", log) or
             re.search(r"ERROR: libFuzzer: (\S+)", log))
        kind = slug(m.group(1)) if m else "crash"
    fn = first_frame(log)
    if fn and not kind.startswith("promise"):
        kind += "-in-" + slug(fn)
    start = min([i for i in (log.find("==imapmem-fuzz=="), log.find("==ERROR"),
                             log.find("ALARM:"), log.find("runtime error")) if i >= 0] or [0])
    report = log[start:]
    cut = report.find("\nSUMMARY:")
    if cut >= 0:
        end = report.find("\n", cut + 1)
        report = report[:end if end >= 0 else len(report)]
    noise = ("fuzzer::", "libc_start", " in _start", " in main ", "__sanitizer_print_stack_trace",
             "libc.so", "pthread_kill", " in raise ", " in abort ", "NOTE: libFuzzer has",
             "Combine libFuzzer with")
    lines = [l for l in report.splitlines() if l.strip() and not any(n in l for n in noise)]
    return kind, "\n".join(lines[:60])


def save_regression(target, artifact, kind):
    """Copy a crashing input into test/fuzz/regress/TARGET/ (once); returns its path."""
    data = open(artifact, "rb").read()
    d = os.path.join(HERE, "regress", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if open(os.path.join(d, f), "rb").read() == data:
            return os.path.join(d, f)
    path = os.path.join(d, "%s-%s" % (kind, hashlib.sha1(data).hexdigest()[:8]))
    with open(path, "wb") as f:
        f.write(data)
    return path


def stats(log):
    s = {}
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    s["execs"] = int(m.group(1)) if m else 0
    m = re.search(r"stat::average_exec_per_sec:\s*(\d+)", log)
    s["rate"] = int(m.group(1)) if m else 0
    last = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?", log, re.M)
    s["cov"], s["ft"], s["corp"] = (int(last[-1][0]), int(last[-1][1]),
                                    int(last[-1][2] or 0)) if last else (0, 0, 0)
    return s


def run_regressions(target, binary):
    """Each file of test/fuzz/regress/TARGET once; returns [(file, kind, report)] that fail."""
    d = os.path.join(HERE, "regress", target)
    failed = []
    if not os.path.isdir(d):
        return 0, failed
    files = sorted(os.listdir(d))
    timeout = TARGETS[target][1]
    env = dict(os.environ)
    env.pop("IMAPMEM_FUZZ_KNOWN", None)      # a regression input fails until it is fixed
    for f in files:
        path = os.path.join(d, f)
        try:
            p = subprocess.run([binary, "-timeout=%d" % timeout, "-rss_limit_mb=2560", path],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                               timeout=timeout * 3 + 30, env=env)
            log, rc = p.stdout.decode("utf-8", "replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            log, rc = (e.stdout or b"").decode("utf-8", "replace") + "\nERROR: libFuzzer: timeout", 1
        if rc != 0:
            kind, report = classify(log)
            failed.append((f, kind, report))
    return len(files), failed


def timeout_repeats(binary, artifact, timeout):
    """Does the input still time out when it runs alone?"""
    try:
        p = subprocess.run([binary, "-timeout=%d" % timeout, "-rss_limit_mb=2560", artifact],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                           timeout=timeout * 3 + 30)
        return p.returncode != 0
    except subprocess.TimeoutExpired:
        return True


def fuzz(target, binary, seconds, smoke, runs):
    """One libFuzzer run (for a long run: segments, see timeout_repeats); returns a result
    dict."""
    max_len, timeout, _ = TARGETS[target]
    logs = os.path.join(BUILD, "logs")
    arts = os.path.join(BUILD, "artifacts", target)
    os.makedirs(logs, exist_ok=True)
    os.makedirs(arts, exist_ok=True)
    scratch = None
    if smoke:
        scratch = tempfile.mkdtemp(prefix="imapmem-fuzz-%s-" % target)
        work = scratch
    else:
        work = os.path.join(BUILD, "corpus-%s" % target)
        os.makedirs(work, exist_ok=True)
    cmd = [binary, "-dict=" + os.path.join(HERE, "imap.dict"), "-max_len=%d" % max_len,
           "-timeout=%d" % timeout, "-rss_limit_mb=2560", "-print_final_stats=1",
           "-artifact_prefix=" + arts + "/"]
    if smoke:
        cmd += ["-runs=%d" % runs, "-seed=1"]
    t0 = time.time()
    log_path = os.path.join(logs, "%s%s.log" % (target, "-smoke" if smoke else ""))
    r = {"execs": 0, "machine_timeouts": 0}
    open(log_path, "wb").close()
    while True:                      # one segment; another after a machine timeout
        left = int(t0 + seconds - time.time())
        seg = cmd + ([] if smoke else ["-max_total_time=%d" % max(1, left)])
        seg += [work, os.path.join(HERE, "corpus", target)]
        with open(log_path, "ab") as logf:
            start = logf.tell()
            p = subprocess.run(seg, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
        with open(log_path, "rb") as logf:
            logf.seek(start)
            log = logf.read().decode("utf-8", "replace")
        s = stats(log)
        r.update(cov=s["cov"] or r.get("cov", 0), ft=s["ft"] or r.get("ft", 0),
                 corp=s["corp"] or r.get("corp", 0))
        r["execs"] += s["execs"]
        written = [f for f in re.findall(r"Test unit written to (\S+)", log)   # not slow-unit-*
                   if not os.path.basename(f).startswith("slow-unit-")]
        artifact = written[-1] if written and os.path.exists(written[-1]) else None
        if (not smoke and p.returncode != 0 and classify(log)[0].startswith("timeout") and
                artifact and not timeout_repeats(binary, artifact, timeout)):
            r["machine_timeouts"] += 1
            if t0 + seconds - time.time() > 30:
                continue
            p = subprocess.CompletedProcess(p.args, 0)
        break
    elapsed = time.time() - t0
    r.update(target=target, seconds=elapsed, rc=p.returncode, found=None,
             rate=int(r["execs"] / elapsed) if elapsed > 0 else 0)
    if p.returncode != 0:
        kind, report = classify(log)
        # a smoke run (make test) only reports: the input stays in build/fuzz/artifacts/
        saved = artifact if smoke else save_regression(target, artifact, kind) if artifact \
            else None
        r["found"] = (kind, report, saved, log_path)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return r


def main(argv):
    smoke = "--smoke" in argv
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    parallel = os.cpu_count() or 1
    names = []
    i = 0
    args = [a for a in argv if a != "--smoke"]
    while i < len(args):
        if args[i] == "--seconds" and i + 1 < len(args):
            seconds = int(args[i + 1])
            i += 2
        elif args[i] == "--parallel" and i + 1 < len(args):
            parallel = max(1, int(args[i + 1]))
            i += 2
        elif args[i].replace("fuzz_", "") in TARGETS:
            names.append(args[i].replace("fuzz_", ""))
            i += 1
        else:
            print(__doc__)
            return 2
    names = names or list(TARGETS)
    cc = clang()
    if not libfuzzer_works(cc):
        print("fuzz: %s cannot build libFuzzer targets (clang with compiler-rt is needed)" % cc)
        if smoke:
            print("0 passed, 0 failed")
            return 0
        return 2
    os.makedirs(BUILD, exist_ok=True)
    binaries = {}
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        for name, (path, err) in zip(names, pool.map(lambda n: build(n, cc), names)):
            if err:
                print("fuzz: building fuzz_%s failed:\n%s" % (name, err))
                if smoke:
                    print("0 passed, %d failed" % len(names))
                return 2 if not smoke else 1
            binaries[name] = path
    smoke_runs = int(os.environ.get("FUZZ_SMOKE_RUNS", "2000"))
    regress = {}
    if smoke or os.path.isdir(os.path.join(HERE, "regress")):
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            for name, res in zip(names, pool.map(lambda n: run_regressions(n, binaries[n]), names)):
                regress[name] = res
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda n: fuzz(n, binaries[n], seconds, smoke,
                                               smoke_runs * TARGETS[n][2]), names))
    passed = failed = 0
    total = 0
    print("%-12s %12s %9s %7s %7s %8s %8s %8s" % ("target", "executions", "exec/s", "cov", "ft",
                                                   "crashes", "regress", "machine"))
    for r in results:
        name = r["target"]
        nreg, regfail = regress.get(name, (0, []))
        crashes = 1 if r["found"] else 0
        total += r["execs"]
        print("%-12s %12d %9d %7d %7d %8d %8s %8d" % (
            "fuzz_" + name, r["execs"], r["rate"], r["cov"], r["ft"], crashes,
            "%d/%d" % (nreg - len(regfail), nreg), r["machine_timeouts"]))
        if r["found"]:
            kind, report, saved, log_path = r["found"]
            print("!! fuzz_%s found %s%s (log: %s)" % (
                name, kind, "; the input is %s" % os.path.relpath(saved, ROOT) if saved else "",
                os.path.relpath(log_path, ROOT)))
            print("   " + report.replace("\n", "\n   "))
        for f, kind, report in regfail:
            print("!! fuzz_%s regression input %s still fails: %s" % (name, f, kind))
            if smoke:
                print("   " + report.replace("\n", "\n   "))
        if r["found"] or regfail:
            failed += 1
        else:
            passed += 1
    print("%-12s %12d" % ("total", total))
    if any(r["machine_timeouts"] for r in results):
        print("machine: timeouts whose input finished when run alone (the machine was busy), "
              "not kept; the target fuzzed on")
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
