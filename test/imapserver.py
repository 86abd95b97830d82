"""Test harness: start the real imapmem program and talk IMAP to it.

Every wire test uses this module.  The binary is $IMAPMEM_BIN (make test sets it to
the sanitizer build) or ./imapmem.  A Server is started on port 0 and reads the one
ready line `imapmem: listening on ADDR:PORT` from stdout, exactly as a user's test
suite would.
"""
import imaplib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("IMAPMEM_BIN", os.path.join(ROOT, "imapmem"))
FIXTURES = os.path.join(ROOT, "fixtures")
READY = re.compile(rb"^imapmem: listening on (\[[^\]]+\]|[^:]+):(\d+)\n$")


def fixture(*parts):
    return os.path.join(FIXTURES, *parts)


class Server:
    """A running imapmem process.  Use as a context manager or call stop()."""

    def __init__(self, *args, uidvalidity=1, timeout=10):
        cmd = [BIN, "-p", "0"]  # BIN is looked up now: test/run.py sets it per run
        if uidvalidity is not None:
            cmd += ["--uidvalidity", str(uidvalidity)]
        cmd += list(args)
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        m = READY.match(line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("no ready line: %r; stderr: %s" % (line, self.stderr()))
        self.host = m.group(1).decode().strip("[]")
        self.port = int(m.group(2))
        self.ready_line = line

    def stderr(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def imap(self, user="test", password="test", login=True):
        """An imaplib client, logged in unless login=False."""
        c = imaplib.IMAP4(self.host, self.port, timeout=10)
        if login:
            c.login(user, password)
        return c

    def raw(self, login=None):
        """A raw connection (see Raw).  login=(user, password) logs in first."""
        r = Raw(self.host, self.port)
        if login:
            r.ok("LOGIN %s %s" % login)
        return r

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Send sig and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("imapmem did not exit on signal %d" % sig)
        self.proc.stdout.close()
        err = self.stderr()
        for marker in ("Sanitizer", "runtime error:"):
            if marker in err:   # ASan, UBSan, TSan and LSan reports fail the test
                raise AssertionError("sanitizer report from imapmem:\n" + err[-4000:])
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.stderr_file.close()


class Raw:
    """A raw IMAP connection for tests where exact bytes matter.

    cmd("NOOP") sends "<tag> NOOP\\r\\n" with a fresh tag and returns
    (untagged, tagged): untagged is the bytes of everything before the tagged line
    (literals included, as sent), tagged is the tagged line without the tag and CRLF,
    e.g. b"OK NOOP completed".
    """

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.n = 0
        self.greeting = self.readline()

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed; have %r" % self.buf[:200])
        self.buf += chunk

    def readline(self):
        """One line including CRLF (a literal's bytes are not followed)."""
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response_line(self):
        """One logical response line: follows {n} literals to the real end."""
        out = b""
        while True:
            line = self.readline()
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if not m:
                return out
            out += self.read_exact(int(m.group(1)))

    def tag(self):
        self.n += 1
        return "t%d" % self.n

    def cmd(self, command, tag=None):
        tag = tag or self.tag()
        self.send("%s %s\r\n" % (tag, command) if isinstance(command, str)
                  else tag.encode() + b" " + command + b"\r\n")
        return self.until_tagged(tag)

    def until_tagged(self, tag):
        untagged = b""
        t = tag.encode() + b" "
        while True:
            line = self.read_response_line()
            if line.startswith(t):
                return untagged, line[len(t):-2]
            untagged += line

    def ok(self, command):
        """cmd() that must end in OK; returns the untagged bytes."""
        untagged, tagged = self.cmd(command)
        if not tagged.startswith(b"OK"):
            raise AssertionError("%s -> %r (untagged %r)" % (command, tagged, untagged))
        return untagged

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ServerCase(unittest.TestCase):
    """A TestCase that starts servers and raw clients, and stops them after the test.

    A server must exit with status 0 when stopped (stop() also fails on sanitizer reports).
    """

    def start(self, *args, **kw):
        s = Server(*args, **kw)
        self.addCleanup(self._stop, s)
        return s

    def _stop(self, s):
        if s.proc.poll() is None or not s.stderr_file.closed:
            rc = s.stop()
            err = s.stderr()
            s.stderr_file.close()
            self.assertEqual(rc, 0, "imapmem exit status %r; stderr:\n%s" % (rc, err[-3000:]))

    def raw(self, s, login=("test", "test")):
        r = s.raw(login=login)
        self.addCleanup(r.close)
        return r


def run(args, timeout=10, stdin=subprocess.DEVNULL):
    """Run imapmem to completion (for option errors); returns CompletedProcess."""
    return subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=stdin, timeout=timeout)


def write_mbox(directory, name, text):
    """Write text (str or bytes) to directory/name and return the path."""
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return path
