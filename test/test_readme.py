"""The README's examples, run as they are written, so that they cannot go stale.

* every ```python block runs (with ./imapmem replaced by the server under test);
* the ```c block compiles against imapmem.c and runs;
* the annotated ```imap transcript is replayed against the server, line for line;
* the ```py example of a wire test passes;
* every `--fault '...'` and `--capability` example starts the server.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import wire
from wire import ROOT, ServerCase, fixture

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def blocks(lang):
    return re.findall(r"^```%s\n(.*?)^```" % lang, README, re.M | re.S)


class ReadmeExamples(ServerCase):
    def test_python_examples_run(self):
        code = blocks("python")
        self.assertGreaterEqual(len(code), 2)
        for src in code:
            src = src.replace("./imapmem", wire.BIN)
            p = subprocess.run([sys.executable, "-c", src], cwd=ROOT, timeout=60,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.assertEqual(p.returncode, 0, "README example failed:\n%s\n%s" % (src, p.stderr.decode()))
            self.assertNoSanitizerReport(p.stderr.decode("utf-8", "replace"))

    def test_c_example_builds_and_runs(self):
        (src,) = blocks("c")
        with tempfile.TemporaryDirectory() as d:
            c = os.path.join(d, "example.c")
            exe = os.path.join(d, "example")
            with open(c, "w") as f:
                f.write(src)
            cc = os.environ.get("CC", "cc")
            p = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-I", ROOT,
                                c, os.path.join(ROOT, "imapmem.c"), "-o", exe],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            p = subprocess.run([exe], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertIn(b"flags of UID 8: \\Seen", p.stdout)

    @unittest.skipUnless(shutil.which(os.environ.get("CXX", "c++")), "no C++ compiler")
    def test_c_example_builds_as_cpp(self):
        """imapmem.h from C++ (extern "C"): the README's example compiled as C++ and linked
        with imapmem.c compiled as C."""
        (src,) = blocks("c")
        with tempfile.TemporaryDirectory() as d:
            cpp, obj, exe = (os.path.join(d, n) for n in ("example.cpp", "imapmem.o", "example"))
            with open(cpp, "w") as f:
                f.write(src)
            cc, cxx = os.environ.get("CC", "cc"), os.environ.get("CXX", "c++")
            p = subprocess.run([cc, "-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-c",
                                os.path.join(ROOT, "imapmem.c"), "-o", obj],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            # C++20 for the example's designated initialisers; g++ 12 also warns of the
            # fields they leave out, which C does not (and the example means to)
            p = subprocess.run([cxx, "-std=c++20", "-pedantic", "-Wall", "-Wextra", "-Werror",
                                "-Wno-missing-field-initializers",
                                "-pthread", "-I", ROOT, cpp, obj, "-o", exe],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout.decode())
            p = subprocess.run([exe], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertIn(b"flags of UID 8: \\Seen", p.stdout)

    def test_annotated_transcript_is_what_the_server_says(self):
        (text,) = blocks("imap")
        lines = text.rstrip("\n").split("\n")
        greeting, lines = lines[0], lines[1:]
        # group: each C: line, then the S: lines up to the next C:
        steps = []
        for line in lines:
            if line.startswith("C: "):
                steps.append((line[3:], []))
            else:
                self.assertTrue(line.startswith("S:"), line)
                steps[-1][1].append(line[3:] if line.startswith("S: ") else "")
        r = self.raw(self.start(fixture("basic.mbox")), login=None)
        said = r.greeting.decode()
        if wire.has_tls():    # the transcript is the default build's: no STARTTLS
            said = said.replace(" STARTTLS]", "]")
        self.assertEqual(said, greeting[3:] + "\r\n")
        for command, expected in steps:
            tag, rest = command.split(" ", 1)
            untagged, tagged = r.cmd(rest, tag=tag)
            got = (untagged + tag.encode() + b" " + tagged + b"\r\n").decode()
            self.assertEqual(got, "".join(e + "\r\n" for e in expected), command)

    def test_fault_and_capability_examples_start(self):
        specs = re.findall(r"--fault '([^']+)'", README)
        self.assertGreaterEqual(len(specs), 10)
        for spec in specs + ["--capability"]:
            args = ["--capability", "-MOVE"] if spec == "--capability" else ["--fault", spec]
            srv = self.start(*args, fixture("basic.mbox"))
            self.assertTrue(srv.ready_line.startswith(b"imapmem: listening on"), spec)
            srv.finish()

    def test_wire_test_example_runs(self):
        """The README's example of a wire test, as a file of its own, passes."""
        (src,) = blocks("py")
        d = self.tempdir()
        with open(os.path.join(d, "test_readme_example.py"), "w") as f:
            f.write(src)
        env = dict(os.environ, IMAPMEM_BIN=wire.BIN,
                   PYTHONPATH=os.path.dirname(os.path.abspath(wire.__file__)))
        p = subprocess.run([sys.executable, "-m", "unittest", "test_readme_example"], cwd=d,
                           env=env, timeout=60, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        self.assertIn(b"Ran 1 test", p.stdout)

    def test_readme_names_the_test_command(self):
        self.assertIn("\n    make test\n", README)


if __name__ == "__main__":
    unittest.main()
