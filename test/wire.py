"""The one library of the wire tests: start the real imapmem, talk IMAP to it, read answers.

Every test/test_*.py imports this module (fixture files are read by imapref.py, the data
side).  What it has:

  the program   BIN, ROOT, fixture(), run(), Server, Proc, READY, SANITIZER_MARKERS,
                sanitizer_report(), write_mbox(), has_tls(), OVER_TLS
  the test case ServerCase: start() a server on port 0 (stopped after the test; a
                sanitizer report on its stderr or an exit status other than 0 fails the
                test; start_or_fail() fails it when the server does not start), or with
                SHARED = True one for the whole class (start_shared(), raw_shared()),
                raw() clients, spawn() other processes (--stdio), tempdir(),
                assertOK/NO/BAD/Refused/Code/NoSanitizerReport, and the queries flags(),
                uids(), status(), count(), list(), still_serving()
  the client    Raw (a socket) and PipeClient (a process's stdin and stdout): cmd(), ok(),
                command() with literals, lit_command() with Lit literals (LITERAL+ and
                literal8 ones too) counting the `+` continuations, append(), poll(),
                read_until(), pending(), read_to_eof(); Lit, LOGIN, quote()
  the parser    parse(), parse_line(), split_units(), unit_end(), tokens(), status_parts();
                Atom, Quoted, Literal, Literal8, ParseError
  its helpers   responses(), codes(), fetch_list(), fetches(), fetch_each(), uid_of(),
                flags_of(), exists(), numbers(), search_of(), search_modseq(), ESearch,
                esearches(), vanished(), enabled(), capabilities(), flagset(), lower(),
                name_of(), upper(), to_text(), expand_set(), imap_date_time(), View,
                read_line(), wait_until()

The binary is $IMAPMEM_BIN (test/run.py sets it, one test file per process) or ./imapmem.
A Server is started with `-p 0` and reads the one ready line `imapmem: listening on
ADDR:PORT` (with --imaps-port, `..., imaps ADDR:TLSPORT`: Server.imaps_port) from stdout,
exactly as a user's test suite would.

A wire test, whole:

    from wire import ServerCase, fixture, exists

    class Hello(ServerCase):
        def test_select(self):
            r = self.raw(self.start(fixture("basic.mbox")))
            self.assertEqual(exists(r.ok("SELECT INBOX")), 6)
"""
import calendar
import imaplib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("IMAPMEM_BIN", os.path.join(ROOT, "imapmem"))
FIXTURES = os.path.join(ROOT, "fixtures")
READY = re.compile(rb"^imapmem: listening on (\[[^\]]+\]|[^:]+):(\d+)"
                   rb"(?:, imaps (?:\[[^\]]+\]|[^:]+):(\d+))?\n$")   # --imaps-port (TLS build)
LOGIN = ("test", "test")
# "Sanitizer" is in every report of AddressSanitizer, LeakSanitizer, ThreadSanitizer and
# UndefinedBehaviorSanitizer's summary; "runtime error:" is in each UBSan report.
SANITIZER_MARKERS = ("Sanitizer", "runtime error:")


def fixture(*parts):
    return os.path.join(FIXTURES, *parts)


def sanitizer_report(text):
    """The first sanitizer marker in text (a process's stderr), or None."""
    for marker in SANITIZER_MARKERS:
        if marker in text:
            return marker
    return None


def check_stderr(text, who="imapmem"):
    if sanitizer_report(text):
        raise AssertionError("sanitizer report from %s:\n%s" % (who, text[-4000:]))


def run(args, timeout=10, stdin=subprocess.DEVNULL):
    """Run imapmem to completion (for option errors); returns CompletedProcess.  A sanitizer
    report on its stderr raises AssertionError."""
    p = subprocess.run([BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=stdin, timeout=timeout)
    check_stderr(p.stderr.decode("utf-8", "replace"))
    return p


_HAS_TLS = []


def has_tls():
    """Whether BIN was built with TLS (make TLS=openssl): its --version says "(TLS: ...)"."""
    if not _HAS_TLS:
        out = subprocess.run([BIN, "--version"], stdout=subprocess.PIPE, timeout=10).stdout
        _HAS_TLS.append(b"(TLS:" in out)
    return _HAS_TLS[0]


def write_mbox(directory, name, text):
    """Write text (str or bytes) to directory/name and return the path."""
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return path


def wait_until(pred, timeout=5.0, step=0.02):
    """pred()'s first true value, or its last value when timeout seconds pass first."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def read_line(fd, buf, timeout=5.0):
    """One line ("...\\n") from the pipe fd, using and updating the bytearray buf (bytes read
    earlier but not used); b"" if no whole line arrives within timeout seconds."""
    deadline = time.time() + timeout
    while b"\n" not in buf:
        left = deadline - time.time()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        buf += chunk
    i = buf.index(b"\n") + 1
    line = bytes(buf[:i])
    del buf[:i]
    return line


# ---------------------------------------------------------------------------------------
# Processes

class Proc(subprocess.Popen):
    """A process with stdout a pipe and stderr a file (read with err()).  finish() ends it
    (killing it if it still runs), closes its pipes and raises AssertionError on a sanitizer
    report in its stderr."""

    def __init__(self, argv, stdin=subprocess.PIPE):
        self.errfile = tempfile.TemporaryFile()
        super().__init__(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=self.errfile)

    def err(self):
        # pread: the file's offset is shared with the process, which writes at it; moving
        # it back to 0 here would let its next line overwrite what it wrote before
        fd = self.errfile.fileno()
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        return data.decode("utf-8", "replace")

    def close_pipes(self):
        for f in (self.stdin, self.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def finish(self):
        if self.errfile.closed:
            return
        if self.poll() is None:
            self.kill()
        self.wait()
        self.close_pipes()
        err = self.err()
        self.errfile.close()
        check_stderr(err)


# True (test_over_tls.py sets it, in a TLS build): every Server also listens for implicit
# TLS, and its raw() and imap() clients speak TLS, verifying its --tls-cert-out certificate.
OVER_TLS = False


class Server:
    """A running imapmem on port 0.  stop() sends a signal and returns the exit status;
    finish() (ServerCase calls it after the test; `with Server(...)` at the end of the
    block) also requires status 0.  Both fail on a sanitizer report on its stderr."""

    def __init__(self, *args, uidvalidity=1):
        cmd = [BIN, "-p", "0"]  # BIN is looked up now
        if uidvalidity is not None:
            cmd += ["--uidvalidity", str(uidvalidity)]
        self.tls = None
        if OVER_TLS:
            self.cadir = tempfile.mkdtemp(prefix="imapmem-test-")
            ca = os.path.join(self.cadir, "trust.pem")
            cmd += ["--imaps-port", "0", "--tls-cert-out", ca]
        cmd += list(args)
        self.proc = Proc(cmd, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        m = READY.match(line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            err = self.stderr()
            self.proc.close_pipes()
            self.proc.errfile.close()
            raise RuntimeError("no ready line: %r; stderr: %s" % (line, err))
        self.host = m.group(1).decode().strip("[]")
        self.port = int(m.group(2))
        self.imaps_port = int(m.group(3)) if m.group(3) else None
        self.ready_line = line
        if OVER_TLS:          # --tls-cert-out is written before the ready line
            self.tls = ssl.create_default_context(cafile=ca)

    def stderr(self):
        return self.proc.err()

    def imap(self, user="test", password="test", login=True):
        """An imaplib client, logged in unless login=False."""
        if self.tls:
            c = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.tls, timeout=10)
        else:
            c = imaplib.IMAP4(self.host, self.port, timeout=10)
        if login:
            c.login(user, password)
        return c

    def raw(self, login=None):
        """A raw connection (see Raw).  login=(user, password) logs in first."""
        if self.tls:
            r = Raw(self.host, self.imaps_port, ssl_context=self.tls)
        else:
            r = Raw(self.host, self.port)
        if login:
            r.ok("LOGIN %s %s" % login)
        return r

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Send sig (if it still runs) and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("imapmem did not exit on signal %d" % sig)
        if not self.proc.errfile.closed:
            self.proc.stdout.close()
            check_stderr(self.stderr())
        return self.proc.returncode

    def finish(self):
        """stop(), then require exit status 0; once."""
        if self.proc.errfile.closed:
            return
        if self.tls:
            shutil.rmtree(self.cadir, True)
        try:
            rc = self.stop()
            err = self.stderr()
        finally:
            self.proc.errfile.close()
        if rc != 0:
            raise AssertionError("imapmem exit status %r; stderr:\n%s" % (rc, err[-3000:]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.finish()


# ---------------------------------------------------------------------------------------
# Clients

def quote(s):
    """s as an IMAP quoted string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Lit:
    """A literal to send in a command (Raw.lit_command()): {n}, a synchronizing literal (the
    client waits for the server's `+`); {n+} with plus=True (LITERAL+, RFC 7888); ~{n} or
    ~{n+} with eight=True (literal8, RFC 3516 4.4, RFC 4466 2.7).  data is bytes, or str
    sent as UTF-8.  (A literal the server sends is parsed into a Literal or Literal8.)"""

    def __init__(self, data, plus=False, eight=False):
        self.data = data.encode() if isinstance(data, str) else data
        self.plus = plus
        self.eight = eight

    def head(self):
        """What announces the literal: b"{5}\\r\\n", b"~{5+}\\r\\n", ..."""
        return b"%s{%d%s}\r\n" % (b"~" if self.eight else b"", len(self.data),
                                  b"+" if self.plus else b"")


class Raw:
    """A raw IMAP connection for tests where exact bytes matter.

    cmd("NOOP") sends "<tag> NOOP\\r\\n" with a fresh tag and returns (untagged, tagged):
    untagged is the bytes of everything before the tagged line (literals included, as
    sent), tagged is the tagged line without the tag and CRLF, e.g. b"OK NOOP completed".
    Reading never loses a partial response: what is not yet complete stays in buf.
    """

    def __init__(self, host, port, timeout=10, ssl_context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context:       # implicit TLS (RFC 8314), the host name verified
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        self.n = 0
        self.greeting = self.readline()

    def close(self):
        self.sock.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _recv(self, timeout):
        if timeout is None:
            return self.sock.recv(65536)
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        finally:
            self.sock.settimeout(old)

    def _fill(self, timeout=None):
        """Add what arrives to buf; TimeoutError (socket.timeout) when nothing comes within
        timeout seconds (default: the connection's), EOFError when the peer closed."""
        chunk = self._recv(timeout)
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
        while True:
            end = unit_end(self.buf)
            if end:
                line, self.buf = self.buf[:end], self.buf[end:]
                return line
            self._fill()

    def poll(self, timeout):
        """One logical response line, or None when timeout seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            end = unit_end(self.buf)
            if end:
                line, self.buf = self.buf[:end], self.buf[end:]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._fill(left)
            except TimeoutError:
                return None

    def read_until(self, pred, timeout):
        """Read response lines until pred(line); returns (lines, seconds).  Raises
        AssertionError when timeout passes first."""
        start = time.monotonic()
        lines = []
        while True:
            line = self.poll(timeout - (time.monotonic() - start))
            if line is None:
                raise AssertionError("nothing matching within %.1fs; got %r" % (timeout, lines))
            lines.append(line)
            if pred(line):
                return lines, time.monotonic() - start

    def pending(self, wait):
        """Whatever the server sends within wait seconds without a command (kept in buf)."""
        try:
            self._fill(wait)
        except (TimeoutError, BlockingIOError):
            pass
        return self.buf

    def read_to_eof(self, limit=5.0):
        """Everything still received until the server closes (or limit seconds pass).
        Returns (data, closed)."""
        data, self.buf = self.buf, b""
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return data, False
            try:
                chunk = self._recv(left)
            except (ConnectionResetError, BrokenPipeError):
                return data, True
            except TimeoutError:
                return data, False
            if not chunk:
                return data, True
            data += chunk

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

    def ok(self, command, tag=None):
        """cmd() that must end in OK; returns the untagged bytes."""
        untagged, tagged = self.cmd(command, tag)
        if not tagged.startswith(b"OK"):
            raise AssertionError("%s -> %r (untagged %r)" % (command, tagged, untagged))
        return untagged

    def command(self, pieces, nonsync=False):
        """Send one command made of pieces: bytes or str are sent as they are, a 1-tuple
        (data,) as a literal: {n}, waiting for the `+` continuation (if the server answers
        the command instead, the rest is not sent), or {n+} when nonsync (and then no `+`
        may come); a Lit is sent in its own form.  Returns (untagged, tagged) like cmd()."""
        pieces = [Lit(p[0], plus=nonsync) if isinstance(p, tuple) else p for p in pieces]
        untagged, tagged, _ = self._command(self.tag(), pieces)
        if nonsync and re.search(rb"(^|\r\n)\+", untagged):
            raise AssertionError("continuation sent for a LITERAL+ literal: %r" % untagged)
        return untagged, tagged

    def lit_command(self, *pieces, tag=None):
        """Send one command made of pieces: bytes or str as they are, each Lit literal in
        its own form (a tagged answer instead of the `+` a synchronizing one waits for ends
        the command there: RFC 3501 7.5, the rest is not sent).  Returns (untagged, tagged,
        conts): conts is the number of `+` continuation requests received, those the
        literals waited for and any other (none is left in untagged).  A connection the
        server closes fails the test (AssertionError)."""
        try:
            untagged, tagged, conts = self._command(tag or self.tag(), pieces)
        except (EOFError, ConnectionError) as e:
            head = pieces[0] if pieces and not isinstance(pieces[0], Lit) else pieces
            raise AssertionError("the server closed the connection during %r...: %s" % (head, e))
        rest = b""
        for line in split_units(untagged):
            if line.startswith(b"+"):
                conts += 1
            else:
                rest += line
        return rest, tagged, conts

    def _command(self, tag, pieces):
        """command() and lit_command(): send pieces (str, bytes, Lit) as command tag.
        Returns (untagged, tagged, conts): conts the `+` the synchronizing literals waited
        for; untagged everything else before the tagged line (a `+` after the last
        literal included)."""
        t = tag.encode() + b" "
        out, untagged, conts = t, b"", 0
        for p in pieces:
            if not isinstance(p, Lit):
                out += p.encode() if isinstance(p, str) else p
                continue
            if p.plus:
                out += p.head() + p.data
                continue
            self.send(out + p.head())
            while True:
                line = self.read_response_line()
                if line.startswith(b"+"):
                    conts += 1
                    break
                if line.startswith(t):
                    return untagged, line[len(t):-2], conts
                untagged += line
            out = p.data
        self.send(out + b"\r\n")
        u, tagged = self.until_tagged(tag)
        return untagged + u, tagged, conts

    def append(self, mailbox, message, opts="", plus=False):
        """APPEND message to mailbox (quoted) with opts (flags, date) in a synchronizing
        literal, or plus=True a LITERAL+ one; returns (untagged, tagged)."""
        return self.command(["APPEND %s%s " % (quote(mailbox), " " + opts if opts else ""),
                             (message,)], nonsync=plus)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PipeClient(Raw):
    """Raw on a process's stdin/stdout pipes (imapmem --stdio) instead of a socket.  The
    caller reads the greeting (there is no ready line: it comes first)."""

    def __init__(self, proc, timeout=10):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.timeout = timeout
        self.n = 0

    def _recv(self, timeout):
        ready, _, _ = select.select([self.fd], [], [], self.timeout if timeout is None else timeout)
        if not ready:
            raise TimeoutError("no data from imapmem; have %r" % self.buf[:200])
        return os.read(self.fd, 65536)

    def close(self):
        self.proc.close_pipes()

    def send(self, data):
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def tag(self):
        self.n += 1
        return "p%d" % self.n


# ---------------------------------------------------------------------------------------
# The test case

class ServerCase(unittest.TestCase):
    """A TestCase that starts servers, clients and processes and ends them after the test.

    Every server must exit with status 0 when stopped, and a sanitizer report on the
    stderr of anything it started fails the test.  ARGS is the fixture start() and
    start_shared() use when given none; with SHARED = True the class has one server,
    self.srv, for all its tests (which then must not depend on each other's changes).
    """
    ARGS = ()
    SHARED = False      # True: one server (self.srv) for the whole class, started with ARGS
    srv = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.SHARED:
            cls.srv = cls.start_shared()

    # -- servers, clients, processes --------------------------------------------------------
    def start(self, *args, **kw):
        s = Server(*(args or self.ARGS), **kw)
        self.addCleanup(s.finish)
        return s

    def start_or_fail(self, *args, **kw):
        """start(), but a server that does not start fails the test instead of erroring: a
        test of an option the server does not have yet fails."""
        try:
            return self.start(*args, **kw)
        except RuntimeError as e:
            why = str(e)
        self.fail("imapmem did not start with %s: %s" % (" ".join(map(str, args)), why))

    @classmethod
    def start_shared(cls, *args, **kw):
        """A server for the whole class (setUpClass); the tests must not depend on each
        other's changes."""
        s = Server(*(args or cls.ARGS), **kw)
        cls.addClassCleanup(s.finish)
        return s

    def raw(self, s=None, login=LOGIN, select=None, examine=None):
        """A Raw client of s (default: self.srv), logged in as login (None: not), with
        mailbox select or examine selected; closed after the test."""
        r = (s or self.srv).raw(login=login)
        self.addCleanup(r.close)
        if select:
            r.ok("SELECT " + quote(select))
        if examine:
            r.ok("EXAMINE " + quote(examine))
        return r

    @classmethod
    def raw_shared(cls):
        """A logged-in Raw client of the class's server (self.srv) for all its tests
        (setUpClass); closed after the last."""
        r = cls.srv.raw(login=LOGIN)
        cls.addClassCleanup(r.close)
        return r

    def spawn(self, *args, argv=None, stdin=subprocess.PIPE):
        """imapmem with args (or the command argv) as a Proc, stdout a pipe; it is ended
        after the test, and a sanitizer report on its stderr fails the test."""
        p = Proc(argv or [BIN] + list(args), stdin=stdin)
        self.addCleanup(p.finish)
        return p

    def tempdir(self):
        d = tempfile.mkdtemp(prefix="imapmem-test-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    # -- assertions -------------------------------------------------------------------------
    def assertOK(self, tagged, msg=None):
        self.assertTrue(tagged.startswith(b"OK"), "%r (%s)" % (tagged, msg))

    def assertNO(self, tagged, msg=None):
        self.assertTrue(tagged.startswith(b"NO"), "%r (%s)" % (tagged, msg))

    def assertBAD(self, tagged, msg=None):
        self.assertTrue(tagged.startswith(b"BAD"), "%r (%s)" % (tagged, msg))

    def assertRefused(self, tagged, msg=None):
        self.assertTrue(tagged.startswith(b"NO") or tagged.startswith(b"BAD"),
                        "%r (%s)" % (tagged, msg))

    def assertCode(self, tagged, code, msg=None):
        """The response code of tagged is [code ...]; returns its arguments."""
        c = status_parts(tagged)[1]
        self.assertTrue(c and c[0].upper() == code, "%r: want [%s] (%s)" % (tagged, code, msg))
        return c[1:]

    def assertNoSanitizerReport(self, text):
        self.assertIsNone(sanitizer_report(text), "sanitizer report from imapmem:\n" + text[-4000:])

    # -- queries ----------------------------------------------------------------------------
    def flags(self, r, seqset="1:*"):
        """{seq: lower-case flags} of the selected mailbox."""
        u, t = r.cmd("FETCH %s (FLAGS)" % seqset)
        self.assertOK(t)
        return {seq: flagset(d["FLAGS"]) for seq, d in fetches(u).items()}

    def uids(self, r):
        """[uid of seq 1, uid of seq 2, ...] of the selected mailbox."""
        u, t = r.cmd("UID FETCH 1:* (UID)")
        self.assertOK(t)
        f = fetches(u)
        self.assertEqual(sorted(f), list(range(1, len(f) + 1)))
        return [f[k]["UID"] for k in sorted(f)]

    def status(self, r, box="INBOX", items="MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN"):
        """{ITEM: number} from STATUS box (items)."""
        u, t = r.cmd("STATUS %s (%s)" % (quote(box), items))
        self.assertOK(t, "STATUS " + box)
        st = responses(u, "STATUS")
        self.assertEqual(len(st), 1, u)
        got = name_of(st[0][1])
        if box.upper() == "INBOX":
            self.assertEqual(got.upper(), "INBOX")
        else:
            self.assertEqual(got, box)
        d = st[0][2]
        return dict(zip([k.upper() for k in d[0::2]], d[1::2]))

    def count(self, r, box="INBOX"):
        """The number of messages in box (STATUS)."""
        return self.status(r, box, "MESSAGES")["MESSAGES"]

    def list(self, r, ref, pat, cmd="LIST"):
        """{name: set of lower-case attributes} from LIST/LSUB; checks the delimiter."""
        u, t = r.cmd("%s %s %s" % (cmd, quote(ref), quote(pat)))
        self.assertOK(t, "%s %r %r" % (cmd, ref, pat))
        out = {}
        for resp in responses(u, cmd):
            self.assertEqual(len(resp), 4, resp)
            _, attrs, delim, name = resp
            self.assertEqual(delim, b"/", resp)
            n = name_of(name)
            self.assertNotIn(n, out, "listed twice: %r" % n)
            out[n] = {a.lower() for a in attrs} - {"\\marked", "\\unmarked"}
        return out

    def still_serving(self, r=None, s=None):
        """The connection (if given) and the server both still work."""
        s = s or self.srv
        if r is not None:
            u, t = r.cmd("NOOP")
            self.assertOK(t, "NOOP on the same connection")
        self.assertIsNone(s.proc.poll(), "imapmem died: " + s.stderr()[-2000:])
        c = s.imap()
        typ, data = c.select("INBOX")
        self.assertEqual(typ, "OK")
        c.logout()


# ---------------------------------------------------------------------------------------
# The response parser (RFC 3501 section 9), strict: what it accepts is what the grammar
# allows a server to send.
#
# Values: NIL -> None, a number -> int, an atom (a flag, a keyword) -> Atom (a str), a
# quoted string -> Quoted (bytes), a literal -> Literal (bytes), a literal8 `~{n}` (RFC 3516
# 7, BINARY) -> Literal8 (bytes), a parenthesized list -> list.  Quoted, Literal and Literal8
# compare equal to plain bytes; the class tells how it was sent.
# An atom may hold a bracketed section with spaces (a FETCH item name such as
# BODY[HEADER.FIELDS (DATE FROM)]<0>); it is kept as sent.
#
# A response (parse_line) is a list:
#   `* OK [CODE args] text`  -> ["OK", ["CODE", args...] or None, "text"] (NO BAD BYE PREAUTH)
#   `* 3 FETCH (UID 7 ...)`  -> [3, "FETCH", ["UID", 7, ...]]
#   `* 7 UIDFETCH (...)`     -> [7, "UIDFETCH", [...]] (RFC 9586 3.3: the number is a UID)
#   `+ text`                 -> ["+", "text"]
#   any other `* ...`        -> its values: [6, "EXISTS"], ["LIST", [...], b"/", b"INBOX"]

class ParseError(ValueError):
    pass


class Atom(str):
    pass


class Quoted(bytes):
    pass


class Literal(bytes):
    pass


class Literal8(bytes):
    pass


STATUS_WORDS = ("OK", "NO", "BAD", "BYE", "PREAUTH")
_ATOM = re.compile(rb'(?:[^ ()\[\r\n\x00-\x1f\x7f{"]|\[[^\]\r\n]*\]|\[)+')
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_QUOTED_PAIR = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"\{(\d+)\}\r\n")
_LITERAL8 = re.compile(rb"~\{(\d+)\}\r\n")
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")


def unit_end(data, start=0):
    """The end of the first complete logical line of data[start:] (a line ending in CRLF,
    with the {n} or ~{n} literals it announces and the rest of the line after them), or 0
    when it is not complete yet."""
    pos = start
    while True:
        i = data.find(b"\r\n", pos)
        if i < 0:
            return 0
        m = _LITERAL_AT_END.search(data, pos, i)
        if not m:
            return i + 2
        pos = i + 2 + int(m.group(1))
        if pos > len(data):
            return 0


def split_units(data):
    """Response bytes -> their logical lines (each with its literals and its CRLF)."""
    units, pos = [], 0
    while pos < len(data):
        end = unit_end(data, pos)
        if not end:
            raise ParseError("no complete line at %r" % data[pos:pos + 80])
        units.append(data[pos:end])
        pos = end
    return units


class _Parser:
    def __init__(self, data, i=0):
        self.d = data
        self.i = i

    def error(self, what):
        raise ParseError("%s at offset %d: %r" % (what, self.i, self.d[self.i:self.i + 60]))

    def at_end(self):
        return self.i >= len(self.d) or self.d.startswith(b"\r\n", self.i)

    def expect(self, s):
        if not self.d.startswith(s, self.i):
            self.error("expected %r" % s)
        self.i += len(s)

    def value(self):
        c = self.d[self.i:self.i + 1]
        if c == b"(":
            return self.list_()
        if c == b'"':
            m = _QUOTED.match(self.d, self.i)
            if not m:
                self.error("bad quoted string")
            self.i = m.end()
            return Quoted(_QUOTED_PAIR.sub(rb"\1", m.group(1)))
        if c == b"{" or self.d.startswith(b"~{", self.i):
            m = (_LITERAL if c == b"{" else _LITERAL8).match(self.d, self.i)
            if not m:
                self.error("bad literal")
            start = m.end()
            self.i = start + int(m.group(1))
            if self.i > len(self.d):
                self.error("short literal")
            return (Literal if c == b"{" else Literal8)(self.d[start:self.i])
        a = self.atom()
        if a.upper() == "NIL":
            return None
        if a.isdigit():
            return int(a)
        return a

    def atom(self):
        m = _ATOM.match(self.d, self.i)
        if not m:
            self.error("expected a value")
        try:
            a = Atom(m.group(0).decode("ascii"))
        except UnicodeDecodeError:
            self.error("8-bit atom")
        self.i = m.end()
        return a

    def list_(self):
        self.expect(b"(")
        out = []
        while True:
            if self.d.startswith(b")", self.i):
                self.i += 1
                return out
            # RFC 3501 9 puts no SP between adjacent lists in `"(" 1*address ")"` and
            # `1*body SP media-subtype`; everywhere else elements are SP-separated.
            if out and not (isinstance(out[-1], list) and self.d.startswith(b"(", self.i)):
                self.expect(b" ")
            out.append(self.value())

    def values(self):
        """SP-separated values up to CRLF or the end."""
        out = []
        while not self.at_end():
            if out:
                self.expect(b" ")
            out.append(self.value())
        return out

    def fetch_items(self):
        """`(name SP value *(SP name SP value))` -> [name, value, ...], names kept as sent."""
        self.expect(b"(")
        out = []
        while not self.d.startswith(b")", self.i):
            if out:
                self.expect(b" ")
            out.append(self.atom())
            self.expect(b" ")
            out.append(self.value())
        self.i += 1
        return out


def tokens(line):
    """All values of one line (or of a response code's text)."""
    return _Parser(line).values()


def status_parts(text):
    """b'OK [UIDNEXT 7] text' -> ('OK', ['UIDNEXT', 7], 'text'); code None when absent."""
    text = text.rstrip(b"\r\n")
    word, _, rest = text.partition(b" ")
    code = None
    if rest.startswith(b"["):
        j = rest.find(b"]")
        code = tokens(rest[1:j]) if j > 0 else None
        rest = rest[j + 1:].lstrip(b" ")
    return word.decode().upper(), code, rest.decode("latin-1")


def parse_line(unit):
    """One untagged or continuation response (a logical line) -> its list (see above)."""
    if unit.startswith(b"+"):
        return ["+", unit[1:].strip().decode("latin-1")]
    if not unit.startswith(b"* "):
        raise ParseError("not an untagged response: %r" % unit[:100])
    body = unit[2:]
    word, _, rest = body.partition(b" ")
    word = word.rstrip(b"\r\n").upper()
    if word.decode("latin-1") in STATUS_WORDS:
        return list(status_parts(body))
    kind, sp, _ = rest.partition(b" ")
    kind = kind.upper()
    if word.isdigit() and kind in (b"FETCH", b"UIDFETCH") and sp:
        p = _Parser(body, len(word) + len(kind) + 2)
        items = p.fetch_items()
        if not p.at_end():
            p.error("text after the %s items" % kind.decode())
        return [int(word), kind.decode(), items]
    return _Parser(body).values()


def parse(data):
    """Untagged and continuation bytes (what Raw.cmd() returns) -> a list of responses."""
    return [parse_line(u) for u in split_units(data)]


# ---------------------------------------------------------------------------------------
# What the responses say

def upper(v):
    return v.upper() if isinstance(v, str) else v


def name_of(v):
    """A mailbox name value (atom, quoted, literal or number) as str."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def responses(data, keyword):
    """Untagged data responses named keyword (`* LIST ...`, `* 3 EXISTS`, `* 2 FETCH ...`)."""
    kw = keyword.upper()
    out = []
    for r in parse(data):
        if r and upper(r[0]) == kw:
            out.append(r)
        elif len(r) > 1 and isinstance(r[0], int) and upper(r[1]) == kw:
            out.append(r)
    return out


def codes(data):
    """{CODE: args} from every untagged OK/NO/BAD/BYE response code in data."""
    out = {}
    for r in parse(data):
        if r and r[0] in STATUS_WORDS and r[1]:
            out[upper(r[1][0])] = r[1][1:]
    return out


def numbers(data, word):
    """The n of every `* n WORD` (EXISTS, EXPUNGE, RECENT) in data, in order."""
    word = word.decode() if isinstance(word, bytes) else word
    return [r[0] for r in responses(data, word) if len(r) == 2]


def exists(data):
    """The last EXISTS number in data, or None."""
    n = numbers(data, "EXISTS")
    return n[-1] if n else None


def search_of(data):
    """The numbers of the one `* SEARCH` response in data, ascending (each only once)."""
    found = responses(data, "SEARCH")
    assert len(found) == 1, "expected exactly one * SEARCH response: %r" % data
    nums = found[0][1:]
    assert all(isinstance(x, int) for x in nums), "malformed SEARCH response %r" % (found[0],)
    assert len(nums) == len(set(nums)), "duplicates in %r" % (found[0],)
    return sorted(nums)


def search_modseq(data):
    """(numbers, modseq) of the one `* SEARCH` response in data after a search with MODSEQ
    (RFC 7162 3.1.5): its numbers ascending (each only once), and n of the `(MODSEQ n)` after
    them, or None when there is none (3.1.6: nothing found)."""
    found = responses(data, "SEARCH")
    assert len(found) == 1, "expected exactly one * SEARCH response: %r" % data
    nums, modseq = found[0][1:], None
    if nums and isinstance(nums[-1], list):
        m, nums = nums[-1], nums[:-1]
        assert len(m) == 2 and upper(m[0]) == "MODSEQ" and isinstance(m[1], int), (
            "malformed (MODSEQ n) in %r" % (found[0],))
        modseq = m[1]
    assert all(isinstance(x, int) for x in nums), "malformed SEARCH response %r" % (found[0],)
    assert len(nums) == len(set(nums)), "duplicates in %r" % (found[0],)
    return sorted(nums), modseq


class ESearch:
    """One `* ESEARCH` response (RFC 4466 2.6.2 esearch-response; RFC 4731, 5267, 9394),
    from its values after the word ESEARCH (a parsed response's [1:]) and its bytes (line):

      tag    the search correlator's tag-string as str, None without `(TAG "...")`
      uid    whether the UID indicator is there
      items  [(NAME, value)]: its search-return-data in the order sent, names upper-case
             (a list, not a dict: RFC 5267 4.3 lets ADDTO and REMOVEFROM come more than
             once); values as parse() gives them: MIN 2 -> 2, ALL 2,10:11 -> "2,10:11"
             (expand_set()), PARTIAL (1:2 7,9) -> ["1:2", "7,9"]
      get(NAME) the value of the one item NAME, None when absent; names() the set of NAMEs

    `* ESEARCH (TAG "x") UID MIN 1 ALL 1:3` -> tag "x", uid True, items [("MIN", 1),
    ("ALL", "1:3")].  A response that is not an esearch-response raises AssertionError."""

    def __init__(self, values, line=b""):
        self.line = line
        self.tag = None
        self.uid = False
        self.items = []
        i = 0
        if i < len(values) and isinstance(values[i], list):
            corr = values[i]
            assert len(corr) == 2 and upper(corr[0]) == "TAG", "bad search-correlator %r" % line
            assert isinstance(corr[1], bytes), "tag-string must be a string: %r" % line
            self.tag = corr[1].decode()
            i += 1
        if i < len(values) and upper(values[i]) == "UID":
            self.uid = True
            i += 1
        rest = values[i:]
        assert len(rest) % 2 == 0, "odd search-return-data in %r" % line
        for k in range(0, len(rest), 2):
            assert isinstance(rest[k], str), "bad return item name in %r" % line
            self.items.append((rest[k].upper(), rest[k + 1]))

    def get(self, name):
        vals = [v for k, v in self.items if k == name]
        assert len(vals) <= 1, "%s twice in %r" % (name, self.line)
        return vals[0] if vals else None

    def names(self):
        return {k for k, _ in self.items}

    def __repr__(self):
        return "ESearch(%r)" % self.line


def esearches(data):
    """[ESearch] of every `* ESEARCH` response in data, in order."""
    out = []
    for unit in split_units(data):
        r = parse_line(unit)
        if r and upper(r[0]) == "ESEARCH":
            out.append(ESearch(r[1:], unit))
    return out


def sort_of(data):
    """The numbers of the one `* SORT` response in data (RFC 5256 4), in the order sent; a
    trailing `(MODSEQ n)` (RFC 7162 3.1.6) is left out."""
    found = responses(data, "SORT")
    assert len(found) == 1, "expected exactly one * SORT response: %r" % data
    nums = found[0][1:]
    if nums and isinstance(nums[-1], list):
        nums = nums[:-1]
    assert all(isinstance(x, int) for x in nums), "malformed SORT response %r" % (found[0],)
    return nums


def thread_of(data):
    """The threads of the one `* THREAD` response in data (RFC 5256 4) as nested lists:
    `* THREAD (2)(3 6 (4 23)(44 7 96))` -> [[2], [3, 6, [4, 23], [44, 7, 96]]]."""
    found = [u for u in split_units(data) if re.match(rb"\* THREAD(\r\n| )", u, re.I)]
    assert len(found) == 1, "expected exactly one * THREAD response: %r" % data
    body = found[0][len(b"* THREAD"):].rstrip(b"\r\n")
    p = _Parser(body)
    out = []
    if body:
        p.expect(b" ")
    while not p.at_end():    # thread-lists follow each other with no SP between them
        out.append(p.list_())
    return out


def vanished(data):
    """[(earlier, [uid, ...])] of every `* VANISHED uid-set` and `* VANISHED (EARLIER)
    uid-set` in data (RFC 7162 3.2.10), in order; earlier tells which.  Any other VANISHED
    raises AssertionError."""
    out = []
    for r in parse(data):
        if not (r and upper(r[0]) == "VANISHED"):
            continue
        earlier = len(r) == 3 and isinstance(r[1], list)
        form = len(r) == 2 or (earlier and [upper(x) for x in r[1]] == ["EARLIER"])
        assert form and not isinstance(r[-1], list), "malformed VANISHED response %r" % (r,)
        out.append((earlier, expand_set(r[-1])))
    return out


def capabilities(data):
    """The capability names (upper-case) of the one `* CAPABILITY` response in data."""
    found = responses(data, "CAPABILITY")
    assert len(found) == 1, "expected exactly one * CAPABILITY response: %r" % data
    return {str(x).upper() for x in found[0][1:]}


def enabled(data):
    """The capability names (upper-case) of the one `* ENABLED` response in data (RFC 5161
    3.1: a successful ENABLE sends exactly one; it may name nothing)."""
    found = responses(data, "ENABLED")
    assert len(found) == 1, "expected exactly one * ENABLED response (RFC 5161 3.1): %r" % data
    return {str(x).upper() for x in found[0][1:]}


def fetch_list(data, keyword="FETCH"):
    """[(seq, {ITEM: value})] for every untagged FETCH, in order; item names as sent.
    keyword="UIDFETCH": the `* uid UIDFETCH (...)` responses of RFC 9586 3.3, by UID."""
    out = []
    for r in responses(data, keyword):
        items = r[2]
        out.append((r[0], dict(zip(items[0::2], items[1::2]))))
    return out


def fetches(data, keyword="FETCH"):
    """{seq: {ITEM: value}}, several FETCH responses for one message merged (keyword as in
    fetch_list())."""
    out = {}
    for seq, d in fetch_list(data, keyword):
        out.setdefault(seq, {}).update(d)
    return out


def fetch_each(data, keyword="FETCH"):
    """{seq: [{ITEM: value}, ...]}: each FETCH response for a message, in order (keyword as
    in fetch_list())."""
    out = {}
    for seq, d in fetch_list(data, keyword):
        out.setdefault(seq, []).append(d)
    return out


def uid_of(items):
    """The UID of one FETCH response's {ITEM: value}, or None."""
    return items.get("UID")


def flags_of(items):
    """The FLAGS of one FETCH response's {ITEM: value} as a set (as sent), or None."""
    return set(items["FLAGS"]) if "FLAGS" in items else None


def flagset(v):
    """A FLAGS value as a set of lower-case names (flags are case-insensitive)."""
    return {f.lower() for f in v}


def lower(flags):
    return {f.lower() for f in flags}


def to_text(v):
    """Recursively turn strings (bytes) into str (UTF-8, undecodable bytes escaped)."""
    if isinstance(v, (list, tuple)):
        return [to_text(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, Atom):
        return str(v)
    return v


def expand_set(s):
    """A uid-set such as '304,319:320' -> [304, 319, 320] (order kept, ranges ascending)."""
    out = []
    for part in str(s).split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def imap_date_time(s):
    """Seconds since the epoch for an IMAP date-time `dd-Mon-yyyy hh:mm:ss +zzzz`."""
    s = s.decode() if isinstance(s, bytes) else s
    m = re.match(r"^([ \d]\d)-([A-Z][a-z]{2})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$", s)
    if not m:
        raise ValueError("not an IMAP date-time: %r" % s)
    t = calendar.timegm((int(m.group(3)), MONTHS.index(m.group(2)) + 1, int(m.group(1)),
                         int(m.group(4)), int(m.group(5)), int(m.group(6)), 0, 0, 0))
    off = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return t - off if m.group(7) == "+" else t + off


class View:
    """A session's idea of its selected mailbox: the UID of each sequence number (None until
    a FETCH tells it), kept from untagged responses alone.  feed() raises AssertionError
    when one breaks RFC 3501: EXISTS shrinking the view (5.2), EXPUNGE or FETCH outside it
    (7.4.1), a number's UID changing before its EXPUNGE, UIDs not ascending (2.3.1.1)."""

    def __init__(self, uids=(), who="session"):
        self.uids = list(uids)
        self.who = who

    def feed(self, data):
        """Apply the responses in data (bytes) in order; returns self."""
        for r in parse(data):
            self.apply(r)
        return self

    def apply(self, r):
        """Apply one parsed response."""
        if r and r[0] == "BYE":
            raise AssertionError("%s: unexpected BYE %r" % (self.who, r))
        if len(r) < 2 or not isinstance(r[0], int):
            return
        n, what = r[0], upper(r[1])
        if what == "EXISTS":
            assert n >= len(self.uids), "%s: EXISTS %d shrinks a view of %d (RFC 3501 5.2)" % (
                self.who, n, len(self.uids))
            self.uids += [None] * (n - len(self.uids))
        elif what == "EXPUNGE":
            assert 1 <= n <= len(self.uids), "%s: EXPUNGE %d in a view of %d" % (
                self.who, n, len(self.uids))
            del self.uids[n - 1]
        elif what == "FETCH":
            assert 1 <= n <= len(self.uids), "%s: FETCH %d in a view of %d" % (
                self.who, n, len(self.uids))
            items = r[2]
            uid = dict(zip(items[0::2], items[1::2])).get("UID")
            if uid is None:
                return
            old = self.uids[n - 1]
            assert old in (None, uid), "%s: seq %d was UID %d, now %d" % (self.who, n, old, uid)
            self.uids[n - 1] = uid
            known = [u for u in self.uids if u is not None]
            assert known == sorted(set(known)), "%s: UIDs not ascending at seq %d: ...%r" % (
                self.who, n, known[-8:])
