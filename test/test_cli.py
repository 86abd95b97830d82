"""Wire tests for the imapmem program contract (issue 2, part 1).

What a test suite in another language relies on when it runs imapmem as a subprocess:
the one ready line on stdout, the options, the exit status 2 errors that name the file
and line, users and fixture layout, signals, and the connection limit.  Fixture facts
(flags, sizes, UIDs) are computed from the files by imapref.read_mbox; see the comment
block at the top of test_commands.py.
"""
import array
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import time
import unittest

import imapref
import imapserver  # imapserver.BIN is looked up when used: test/run.py sets it per run
from imapserver import Raw, Server, fixture, run, write_mbox

BASIC = fixture("basic.mbox")
CRLF = fixture("crlf.mbox")
UIDS = fixture("uids.mbox")
TREE = fixture("tree")
BAD = fixture("bad", "not-mbox.mbox")
READY4 = re.compile(rb"^imapmem: listening on 127\.0\.0\.1:(\d+)\n$")
READY6 = re.compile(rb"^imapmem: listening on \[::1\]:(\d+)\n$")


def have_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_to_eof(r, limit=5.0):
    """Everything the server still sends on r until it closes the connection."""
    r.sock.settimeout(limit)
    data = r.buf
    r.buf = b""
    while True:
        try:
            chunk = r.sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def exists(untagged):
    vals = [x[0] for x in imapref.responses(untagged, "EXISTS")]
    return vals[-1] if vals else None


class Base(imapserver.ServerCase):
    def count(self, r, box="INBOX"):
        u, t = r.cmd('STATUS "%s" (MESSAGES)' % box)
        self.assertTrue(t.startswith(b"OK"), (box, t))
        st = imapref.responses(u, "STATUS")
        self.assertEqual(len(st), 1, u)
        d = st[0][2]
        return dict(zip([k.upper() for k in d[0::2]], d[1::2]))["MESSAGES"]


class ReadyLine(Base):
    def test_port0_prints_real_port_and_serves_it(self):
        s = self.start(BASIC)
        m = READY4.match(s.ready_line)
        self.assertTrue(m, s.ready_line)
        port = int(m.group(1))
        self.assertTrue(0 < port < 65536)
        r = Raw("127.0.0.1", port)
        self.addCleanup(r.close)
        self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)

    def test_exactly_one_line_on_stdout(self):
        s = self.start(BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("FETCH 1:* (FLAGS)")
        r.cmd("LOGOUT")
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(10)
        self.assertEqual(s.proc.stdout.read(), b"", "stdout after the ready line")

    def test_explicit_port_and_bind_long_options(self):
        port = free_port()
        p = subprocess.Popen([imapserver.BIN, "--port", str(port), "--bind", "127.0.0.1", BASIC],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        try:
            line = p.stdout.readline()
            self.assertEqual(line, b"imapmem: listening on 127.0.0.1:%d\n" % port)
            r = Raw("127.0.0.1", port)
            r.ok("LOGIN test test")
            r.close()
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(10), 0)
            p.stdout.close()

    def test_short_options(self):
        port = free_port()
        p = subprocess.Popen([imapserver.BIN, "-p", str(port), "-b", "127.0.0.1",
                              "-u", "x:y:" + BASIC],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        try:
            self.assertEqual(p.stdout.readline(),
                             b"imapmem: listening on 127.0.0.1:%d\n" % port)
            r = Raw("127.0.0.1", port)
            r.ok("LOGIN x y")
            r.close()
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(10), 0)
            p.stdout.close()

    @unittest.skipUnless(have_ipv6_loopback(), "no IPv6 loopback on this machine")
    def test_ipv6_bind(self):
        s = self.start("-b", "::1", BASIC)
        m = READY6.match(s.ready_line)
        self.assertTrue(m, s.ready_line)
        r = Raw("::1", int(m.group(1)))
        self.addCleanup(r.close)
        self.assertTrue(r.greeting.startswith(b"* OK"))
        r.ok("LOGIN test test")
        self.assertEqual(exists(r.ok("SELECT INBOX")), 6)

    def test_two_servers_at_once(self):
        a = self.start(BASIC)
        b = self.start(CRLF)
        self.assertNotEqual(a.port, b.port)
        ra, rb = self.raw(a), self.raw(b)
        self.assertEqual(exists(ra.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))
        self.assertEqual(exists(rb.ok("SELECT INBOX")), len(imapref.read_mbox(CRLF)))


class HelpVersion(unittest.TestCase):
    def test_help(self):
        p = run(["--help"], timeout=5)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout + p.stderr
        self.assertIn(b"--port", out)
        self.assertIn(b"--user", out)
        self.assertNotIn(b"listening on", out)

    def test_version(self):
        p = run(["--version"], timeout=5)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex((p.stdout + p.stderr).decode(), r"\d")
        self.assertNotIn(b"listening on", p.stdout)


class Errors(unittest.TestCase):
    """Exit status 2, a message on stderr, never a ready line."""

    def fails(self, args, *in_stderr):
        p = run(args, timeout=5)
        self.assertEqual(p.returncode, 2, "%r -> %r, stderr %r" % (args, p.returncode, p.stderr))
        self.assertNotIn(b"listening", p.stdout, args)
        err = p.stderr.decode("utf-8", "replace")
        self.assertTrue(err.strip(), "no message on stderr for %r" % (args,))
        for s in in_stderr:
            self.assertIn(s, err, args)
        return err

    def test_unknown_options(self):
        self.fails(["-p", "0", "--no-such-option", BASIC])
        self.fails(["-p", "0", "-Z", BASIC])

    def test_missing_option_argument(self):
        for opt in ("-p", "--port", "-b", "--bind", "-u", "--user", "--uidvalidity",
                    "--max-connections", "--idle-timeout"):
            self.fails([BASIC, opt] if opt in ("-p", "--port") else ["-p", "0", BASIC, opt])

    def test_bad_option_values(self):
        self.fails(["-p", "notaport", BASIC])
        self.fails(["-p", "70000", BASIC])
        self.fails(["-p", "0", "--uidvalidity", "abc", BASIC])
        self.fails(["-p", "0", "--max-connections", "many", BASIC])
        self.fails(["-p", "0", "--idle-timeout", "soon", BASIC])
        self.fails(["-p", "0", "-u", "no-password-given", BASIC])
        self.fails(["-p", "0", "-b", "999.999.999.999", BASIC])

    def test_uidvalidity_zero_is_refused(self):
        # RFC 3501 section 9: "UIDVALIDITY" SP nz-number, so 0 can never be sent.
        self.fails(["-p", "0", "--uidvalidity", "0", BASIC])

    def test_unreadable_path(self):
        missing = "/nonexistent-imapmem-dir/missing.mbox"
        self.fails(["-p", "0", missing], missing)
        self.fails(["-p", "0", "-u", "alice:pw:" + missing], missing)
        self.fails(["-p", "0", BASIC, missing], missing)

    @unittest.skipIf(os.geteuid() == 0, "root can read a mode 000 file")
    def test_unreadable_permissions(self):
        with tempfile.TemporaryDirectory() as d:
            path = write_mbox(d, "locked.mbox", open(BASIC, "rb").read())
            os.chmod(path, 0)
            self.fails(["-p", "0", path], path)

    def test_malformed_mbox_names_file_and_line(self):
        self.fails(["-p", "0", BAD], BAD + ":1:")
        self.fails(["-p", "0", "-u", "alice:pw:" + BAD], BAD + ":1:")

    def test_malformed_mbox_in_directory(self):
        self.fails(["-p", "0", fixture("bad")], "not-mbox.mbox:1:")

    def test_no_half_loaded_start(self):
        self.fails(["-p", "0", BASIC, BAD], BAD + ":1:")
        self.fails(["-p", "0", "-u", "a:b:" + BASIC, "-u", "c:d:" + BAD], BAD + ":1:")

    def test_malformed_written_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = write_mbox(d, "x.mbox", "Subject: hi\n\nFrom nobody Mon Nov 23 09:00:00 2026\n")
            self.fails(["-p", "0", path], path + ":1:")

    def test_port_in_use(self):
        with Server(BASIC) as s:
            p = run(["-p", str(s.port), BASIC], timeout=5)
            self.assertNotEqual(p.returncode, 0)
            self.assertNotIn(b"listening", p.stdout)
            self.assertTrue(p.stderr.strip())


class Users(Base):
    def test_positional_path_loads_into_test_user(self):
        s = self.start(BASIC)
        r = self.raw(s)
        self.assertEqual(exists(r.ok("SELECT INBOX")), 6)
        c = s.imap()
        self.assertEqual(c.select("INBOX"), ("OK", [b"6"]))
        c.logout()

    def test_user_option_with_path(self):
        s = self.start("-u", "alice:pw:" + BASIC)
        r = self.raw(s, login=("alice", "pw"))
        self.assertEqual(exists(r.ok("SELECT INBOX")), 6)
        r2 = self.raw(s, login=None)
        u, t = r2.cmd("LOGIN test test")
        self.assertTrue(t.startswith(b"NO"), t)

    def test_positional_path_goes_to_first_user(self):
        s = self.start("-u", "alice:pw", "-u", "bob:pw2", BASIC)
        self.assertEqual(exists(self.raw(s, ("alice", "pw")).ok("SELECT INBOX")), 6)
        self.assertEqual(exists(self.raw(s, ("bob", "pw2")).ok("SELECT INBOX")), 0)
        u, t = self.raw(s, login=None).cmd("LOGIN test test")
        self.assertTrue(t.startswith(b"NO"), t)

    def test_users_are_separate(self):
        s = self.start("-u", "alice:pw:" + BASIC, "-u", "bob:pw2:" + CRLF)
        a = self.raw(s, ("alice", "pw"))
        b = self.raw(s, ("bob", "pw2"))
        self.assertEqual(exists(a.ok("SELECT INBOX")), 6)
        self.assertEqual(exists(b.ok("SELECT INBOX")), 2)
        a.ok("CREATE Private")
        u = b.ok('LIST "" "*"')
        names = [imapref.name_of(x[3]) for x in imapref.responses(u, "LIST")]
        self.assertEqual(names, ["INBOX"])

    def test_user_without_fixture_has_empty_inbox(self):
        s = self.start("-u", "carol:secret")
        r = self.raw(s, ("carol", "secret"))
        u = r.ok("SELECT INBOX")
        self.assertEqual(exists(u), 0)

    def test_wrong_password_for_option_user(self):
        s = self.start("-u", "alice:pw:" + BASIC)
        u, t = self.raw(s, login=None).cmd("LOGIN alice PW")
        self.assertTrue(t.startswith(b"NO"), t)


TREE_LIST = imapref.TREE_LIST
TREE_FILES = {"INBOX": "INBOX.mbox", "Sent": "Sent.mbox", "Drafts": "Drafts.mbox",
              "Work/Projects": "Work/Projects.mbox", "Work/Old": "Work/Old.mbox",
              "Lists": "Lists.mbox", "Lists/ietf": "Lists/ietf.mbox"}


class DirectoryFixture(Base):
    def test_layout(self):
        s = self.start(TREE)
        r = self.raw(s)
        u = r.ok('LIST "" "*"')
        got = {}
        for _, attrs, delim, name in imapref.responses(u, "LIST"):
            self.assertEqual(delim, b"/")
            got[imapref.name_of(name)] = {a.lower() for a in attrs} - {"\\marked", "\\unmarked"}
        self.assertEqual(got, TREE_LIST)

    def test_contents(self):
        s = self.start(TREE)
        r = self.raw(s)
        for box, f in TREE_FILES.items():
            msgs = imapref.read_mbox(os.path.join(TREE, f))
            self.assertEqual(self.count(r, box), len(msgs), box)
            u = r.ok('EXAMINE "%s"' % box)
            self.assertEqual(exists(u), len(msgs), box)
            if msgs:
                got = imapref.fetches(r.ok("FETCH 1:* BODY.PEEK[]"))
                self.assertEqual([got[m.seq]["BODY[]"] for m in msgs], [m.raw for m in msgs], box)
        u, t = r.cmd("SELECT Work")
        self.assertTrue(t.startswith(b"NO"), t)

    def test_tree_for_option_user(self):
        s = self.start("-u", "alice:pw:" + TREE)
        r = self.raw(s, ("alice", "pw"))
        self.assertEqual(self.count(r, "Lists/ietf"), 3)

    def test_inbox_file_name_any_case(self):
        with tempfile.TemporaryDirectory() as d:
            write_mbox(d, "inbox.mbox", open(BASIC, "rb").read())
            write_mbox(d, "Sent.mbox", open(CRLF, "rb").read())
            s = self.start(d)
            r = self.raw(s)
            u = r.ok('LIST "" "*"')
            names = sorted(imapref.name_of(x[3]) for x in imapref.responses(u, "LIST"))
            self.assertEqual(names, ["INBOX", "Sent"])
            self.assertEqual(self.count(r, "INBOX"), 6)
            self.assertEqual(self.count(r, "Sent"), 2)

    def test_directory_without_inbox_file(self):
        with tempfile.TemporaryDirectory() as d:
            write_mbox(d, "Archive.mbox", open(CRLF, "rb").read())
            s = self.start(d)
            r = self.raw(s)
            self.assertEqual(self.count(r, "INBOX"), 0)
            self.assertEqual(self.count(r, "Archive"), 2)

    def refused(self, layout, *want):
        """A fixture folder with these files: exit 2, naming the file, nothing served."""
        with tempfile.TemporaryDirectory() as d:
            for name in layout:
                if name.endswith("/"):
                    os.makedirs(os.path.join(d, name), exist_ok=True)
                else:
                    write_mbox(d, name, open(CRLF, "rb").read())
            p = run(["-p", "0", d])
            self.assertEqual(p.returncode, 2, (layout, p.stderr))
            self.assertEqual(p.stdout, b"", layout)
            for w in want:
                self.assertIn(w.encode(), p.stderr, (layout, p.stderr))

    def test_names_a_client_could_not_create_are_refused(self):
        self.refused(["a*b.mbox"], "a*b.mbox", "wildcards")
        self.refused(["Work/100%.mbox"], "100%.mbox")
        self.refused([".hidden.mbox"], ".hidden.mbox", "starting with '.'")
        self.refused(["Work/.old/x.mbox"], ".old", "starting with '.'")
        self.refused(["tab\there.mbox"], "control characters")

    def test_two_files_that_are_one_mailbox_are_an_error(self):
        self.refused(["INBOX.mbox", "inbox.mbox"], "INBOX.mbox", "inbox.mbox", "both mailbox INBOX")
        self.refused(["INBOX/Sub.mbox", "inbox/Sub.mbox"], "both mailbox INBOX/Sub")

    def test_other_files_are_left_alone(self):
        """Files that are not mailboxes, hidden ones included, are not loaded or refused."""
        with tempfile.TemporaryDirectory() as d:
            write_mbox(d, "INBOX.mbox", open(BASIC, "rb").read())
            write_mbox(d, ".DS_Store", b"\0\0junk")
            write_mbox(d, "README.txt", b"notes")
            s = self.start(d)
            r = self.raw(s)
            names = sorted(imapref.name_of(x[3]) for x in
                           imapref.responses(r.ok('LIST "" "*"'), "LIST"))
            self.assertEqual(names, ["INBOX"])


class UidValidity(Base):
    def select_codes(self, s):
        r = self.raw(s)
        return imapref.codes(r.ok("SELECT INBOX"))

    def test_uidvalidity_option(self):
        s = self.start("--uidvalidity", "777", BASIC, uidvalidity=None)
        c = self.select_codes(s)
        self.assertEqual(c["UIDVALIDITY"], [777])
        self.assertEqual(c["UIDNEXT"], [7])

    def test_default_uidvalidity_is_nonzero(self):
        s = self.start(BASIC, uidvalidity=None)
        v = self.select_codes(s)["UIDVALIDITY"][0]
        self.assertIsInstance(v, int)
        self.assertTrue(0 < v < 2 ** 32, v)

    def test_imapbase_wins_over_option(self):
        s = self.start("--uidvalidity", "777", UIDS, uidvalidity=None)
        c = self.select_codes(s)
        self.assertEqual(c["UIDVALIDITY"], [12345])
        self.assertEqual(c["UIDNEXT"], [40])

    def test_default_stays_across_restarts_while_the_file_is_unchanged(self):
        """No X-IMAPbase and no --uidvalidity: UIDVALIDITY comes from the fixture's bytes,
        so a restart (a second later, in another folder) keeps every client's cache valid,
        and a changed file gets a new one."""
        def validities(path):
            s = Server(path, uidvalidity=None)
            try:
                r = s.raw(login=("test", "test"))
                out = {box: imapref.codes(r.ok('EXAMINE "%s"' % box))["UIDVALIDITY"][0]
                       for box in ("INBOX", "Sent", "Lists/ietf")}
                r.close()
            finally:
                self.assertEqual(s.stop(), 0)
                s.stderr_file.close()
            return out
        with tempfile.TemporaryDirectory() as d:
            a, b = os.path.join(d, "a"), os.path.join(d, "b")
            shutil.copytree(TREE, a)
            first = validities(a)
            time.sleep(1.1)              # a time-based UIDVALIDITY would change now
            shutil.copytree(TREE, b)
            self.assertEqual(validities(b), first)
            self.assertEqual(len(set(first.values())), 3)   # the name is in it too
            with open(os.path.join(b, "Sent.mbox"), "ab") as f:
                f.write(b"\nFrom x Mon Jan  1 00:00:00 2024\nSubject: new\n\nnew\n")
            changed = validities(b)
            self.assertNotEqual(changed["Sent"], first["Sent"])
            self.assertEqual(changed["INBOX"], first["INBOX"])

    def test_option_applies_to_every_directory_mailbox(self):
        s = self.start("--uidvalidity", "4242", TREE, uidvalidity=None)
        r = self.raw(s)
        for box in ("INBOX", "Sent", "Lists/ietf", "Drafts"):
            self.assertEqual(imapref.codes(r.ok('SELECT "%s"' % box))["UIDVALIDITY"], [4242], box)


class Signals(Base):
    def check_signal(self, sig):
        s = Server(BASIC)
        try:
            greeted = s.raw()
            authed = s.raw(login=("test", "test"))
            selected = s.raw(login=("test", "test"))
            selected.ok("SELECT INBOX")
            s.proc.send_signal(sig)
            for name, r in (("not authenticated", greeted), ("authenticated", authed),
                            ("selected", selected)):
                rest = read_to_eof(r)
                self.assertRegex(rest, rb"(^|\r\n)\* BYE[ \r]", "%s session: %r" % (name, rest))
                r.close()
            self.assertEqual(s.proc.wait(10), 0, s.stderr())
            self.assertEqual(s.proc.stdout.read(), b"")
        finally:
            s.stop()
            s.stderr_file.close()

    def test_sigterm(self):
        self.check_signal(signal.SIGTERM)

    def test_sigint(self):
        self.check_signal(signal.SIGINT)

    def test_sigterm_without_sessions(self):
        s = Server(BASIC)
        try:
            self.assertEqual(s.stop(signal.SIGTERM), 0)
        finally:
            s.stderr_file.close()


class Limits(Base):
    def test_max_connections(self):
        s = self.start("--max-connections", "2", BASIC)
        r1, r2 = self.raw(s, None), self.raw(s, None)
        self.assertTrue(r1.greeting.startswith(b"* OK"))
        self.assertTrue(r2.greeting.startswith(b"* OK"))
        r3 = Raw(s.host, s.port)
        self.addCleanup(r3.close)
        self.assertTrue(r3.greeting.startswith(b"* BYE"), r3.greeting)
        self.assertEqual(read_to_eof(r3), b"")
        r1.ok("LOGIN test test")         # the first two still work
        r2.ok("NOOP")
        r1.cmd("LOGOUT")
        r1.close()
        deadline = time.time() + 5       # the freed slot can be used again
        while True:
            r4 = Raw(s.host, s.port)
            self.addCleanup(r4.close)
            if r4.greeting.startswith(b"* OK") or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertTrue(r4.greeting.startswith(b"* OK"), r4.greeting)
        r4.ok("LOGIN test test")

    def test_idle_timeout(self):
        s = self.start("--idle-timeout", "1", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        t0 = time.time()
        rest = read_to_eof(r, limit=10)
        self.assertRegex(rest, rb"^\* BYE", rest)
        self.assertLess(time.time() - t0, 8)
        fresh = self.raw(s)             # the server goes on
        fresh.ok("NOOP")


# ---------------------------------------------------------------------------------------
# Regression tests for the options, host names, --user escapes, --idle-timeout range,
# signal reports and output waits changed in commit 6152f31.

def read_line(fd, buf, timeout=5.0):
    """One line ("...\n") from the pipe fd, using and updating the bytearray buf (bytes read
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


def wait_until(pred, timeout=5.0, step=0.02):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def cpu_seconds(pid):
    """utime + stime of process pid, in seconds (all its threads, from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class UnknownOptions(unittest.TestCase):
    """An unknown option is named as unknown, not taken for one that needs a value."""

    def test_unknown_option_is_named(self):
        for args in (["--bogus"], ["-z"], ["-p", "0", "--bogus", BASIC]):
            opt = args[0] if len(args) == 1 else "--bogus"
            p = run(args, timeout=5)
            err = p.stderr.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 2, (args, err))
            self.assertNotIn(b"listening", p.stdout, args)
            self.assertIn("unknown option", err, args)
            self.assertIn(opt, err, args)
            self.assertNotIn("needs a value", err, args)


class BindHostName(Base):
    def test_bind_localhost(self):
        s = self.start("-b", "localhost", BASIC)
        m = READY4.match(s.ready_line)
        self.assertTrue(m, s.ready_line)
        r = Raw("127.0.0.1", int(m.group(1)))
        self.addCleanup(r.close)
        self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)
        r.ok("LOGIN test test")
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))

    def test_unresolvable_host_is_named(self):
        p = run(["-p", "0", "-b", "nonexistent.invalid", BASIC], timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 2, err)
        self.assertNotIn(b"listening", p.stdout)
        self.assertIn("nonexistent.invalid", err)


class UserEscapes(Base):
    r"""--user NAME:PASSWORD[:PATH]: "\:" is ':' and "\\" a backslash; other backslashes
    are themselves."""

    def login_count(self, s, user, password, box="INBOX"):
        c = s.imap(user, password)      # imaplib quotes the password: LOGIN ann "p:w"
        try:
            typ, data = c.select(box)
            self.assertEqual(typ, "OK", data)
            return int(data[0])
        finally:
            c.logout()

    def test_escaped_colon_in_password(self):
        s = self.start("-u", r"ann:p\:w")
        self.assertEqual(self.login_count(s, "ann", "p:w"), 0)
        u, t = self.raw(s, login=None).cmd('LOGIN ann "p\\\\"')
        self.assertTrue(t.startswith(b"NO"), t)

    def test_escaped_colon_then_path(self):
        s = self.start("-u", r"ann:p\:w:" + BASIC)
        self.assertEqual(self.login_count(s, "ann", "p:w"), len(imapref.read_mbox(BASIC)))

    def test_escaped_backslash_before_path_separator(self):
        s = self.start("-u", "ann:p\\\\:" + BASIC)          # the argument is ann:p\\:PATH
        self.assertEqual(self.login_count(s, "ann", "p\\"), len(imapref.read_mbox(BASIC)))

    def test_plain_backslash_is_itself(self):
        s = self.start("-u", r"ann:a\b")
        self.assertEqual(self.login_count(s, "ann", "a\\b"), 0)
        s2 = self.start("-u", r"ann:a\b:" + BASIC)
        self.assertEqual(self.login_count(s2, "ann", "a\\b"), len(imapref.read_mbox(BASIC)))


class IdleTimeoutRange(Base):
    def test_out_of_range_is_refused(self):
        for v in ("3000000", "2147484"):
            try:
                p = run(["-p", "0", "--idle-timeout", v, BASIC], timeout=5)
            except subprocess.TimeoutExpired:
                self.fail("--idle-timeout %s was accepted: the server started" % v)
            err = p.stderr.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 2, (v, err))
            self.assertNotIn(b"listening", p.stdout)
            self.assertIn(v, err)

    def test_largest_serves_normally(self):
        # With the UBSan build an overflowing idle time in milliseconds stopped the server
        # on the first command; this one must serve and stop cleanly (stop() checks stderr).
        s = self.start("--idle-timeout", "2147483", BASIC)
        c = s.imap()
        self.assertEqual(c.noop()[0], "OK")
        typ, data = c.select("INBOX")
        self.assertEqual((typ, int(data[0])), ("OK", len(imapref.read_mbox(BASIC))))
        self.assertEqual(c.logout()[0], "BYE")


class SignalReports(Base):
    """SIGHUP and SIGUSR1 say when they are done; a clean stop says nothing."""

    def tempdir(self):
        d = tempfile.mkdtemp(prefix="imapmem-cli-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def test_sighup_says_reset_when_done(self):
        s = self.start(BASIC)
        n = len(imapref.read_mbox(BASIC))
        r = self.raw(s)
        r.ok("CREATE Extra")
        r.ok("APPEND INBOX {19+}\r\nSubject: x\r\n\r\nbody\r\n")
        self.assertEqual(self.count(r, "INBOX"), n + 1)
        buf = bytearray()
        s.proc.send_signal(signal.SIGHUP)
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf), b"imapmem: reset\n")
        # the line comes after the reset: the state is the fixture's at once
        self.assertEqual(self.count(r, "INBOX"), n)
        u, t = r.cmd('STATUS "Extra" (MESSAGES)')
        self.assertTrue(t.startswith(b"NO"), t)
        s.proc.send_signal(signal.SIGHUP)            # and again
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf), b"imapmem: reset\n")
        self.assertEqual(bytes(buf), b"")

    def test_sigusr1_says_saved_after_the_files_exist(self):
        d = self.tempdir()
        s = self.start("--save", d, BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 4 +FLAGS ($SavedNow)")
        s.proc.send_signal(signal.SIGUSR1)
        buf = bytearray()
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf), b"imapmem: saved %s\n" % d.encode())
        path = os.path.join(d, "INBOX.mbox")
        self.assertTrue(os.path.isfile(path), os.listdir(d))
        with open(path, "rb") as f:
            self.assertIn(b"$SavedNow", f.read())
        r.ok("NOOP")

    def test_sigusr1_without_save_says_so_and_serves_on(self):
        s = self.start(BASIC)
        r = self.raw(s)
        s.proc.send_signal(signal.SIGUSR1)
        got = wait_until(lambda: "--save" in s.stderr())
        self.assertTrue(got, "nothing on stderr after SIGUSR1: %r" % s.stderr())
        err = s.stderr()
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, r"^imapmem: .*--save.*\n$")
        r.ok("NOOP")                    # still serving, session intact
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))
        self.assertIsNone(s.proc.poll())
        buf = bytearray()
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf, 0.3), b"")   # stdout: nothing

    def test_clean_sigterm_says_nothing(self):
        s = Server(BASIC)
        try:
            authed = s.raw(login=("test", "test"))
            selected = s.raw(login=("test", "test"))
            selected.ok("SELECT INBOX")
            s.proc.send_signal(signal.SIGTERM)
            self.assertEqual(s.proc.wait(10), 0)
            for r in (authed, selected):
                self.assertIn(b"* BYE", read_to_eof(r))
                r.close()
            self.assertEqual(s.proc.stdout.read(), b"")
            self.assertEqual(s.stderr(), "")
        finally:
            s.stop()
            s.stderr_file.close()

    def test_stdio_reports_go_to_stderr(self):
        d = self.tempdir()
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        p = subprocess.Popen([imapserver.BIN, "--stdio", "--save", d, BASIC],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf)

        def cleanup():
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.addCleanup(cleanup)

        def stderr():
            errf.seek(0)
            return errf.read().decode("utf-8", "replace")

        fd, buf, seen = p.stdout.fileno(), bytearray(), []

        def until_tagged(tag):
            while True:
                line = read_line(fd, buf)
                self.assertTrue(line, "no reply to %s; have %r" % (tag, seen))
                seen.append(line)
                if line.startswith(tag + b" "):
                    return line

        greeting = read_line(fd, buf)
        seen.append(greeting)
        self.assertTrue(greeting.startswith(b"* PREAUTH"), greeting)
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "imapmem: reset\n" in stderr()), stderr())
        p.stdin.write(b"a1 NOOP\r\n")
        p.stdin.flush()
        self.assertTrue(until_tagged(b"a1").startswith(b"a1 OK"), seen)
        p.send_signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: "imapmem: saved %s\n" % d in stderr()), stderr())
        self.assertTrue(os.path.isfile(os.path.join(d, "INBOX.mbox")), os.listdir(d))
        p.stdin.write(b"a2 NOOP\r\na3 LOGOUT\r\n")
        p.stdin.flush()
        self.assertTrue(until_tagged(b"a2").startswith(b"a2 OK"), seen)
        self.assertTrue(until_tagged(b"a3").startswith(b"a3 OK"), seen)
        self.assertEqual(p.wait(10), 0, stderr())
        rest = p.stdout.read()
        seen.append(bytes(buf) + rest)
        out = b"".join(seen)
        self.assertNotIn(b"imapmem:", out)            # the protocol stream stays clean
        self.assertEqual(bytes(buf) + rest, b"")
        self.assertEqual(stderr(), "imapmem: reset\nimapmem: saved %s\n" % d)


class NoBusySpin(unittest.TestCase):
    """A session waiting for room on a full output pipe, then woken (SIGHUP resets its
    mailbox), waits without using the CPU."""

    def test_woken_session_waiting_to_write_does_not_spin(self):
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        p = subprocess.Popen([imapserver.BIN, "--stdio", BASIC], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errf)

        def cleanup():
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            if p.poll() is None:
                p.kill()
            p.wait()
        self.addCleanup(cleanup)
        out, buf = p.stdout.fileno(), bytearray()
        self.assertTrue(read_line(out, buf).startswith(b"* PREAUTH"))
        inp = p.stdin.fileno()
        os.write(inp, b"s SELECT INBOX\r\n")
        os.set_blocking(inp, False)
        # Fill both pipes: the server writes FETCH answers nobody reads until stdout is
        # full, then stops reading commands until stdin is full too. Full: stdin takes no
        # more and what waits in stdout stays the same for a while.
        deadline = time.time() + 20
        n, last, steady = 0, -1, 0
        while steady < 5:
            if time.time() > deadline:
                self.fail("the pipes did not fill (%d commands sent)" % n)
            stdin_full = False
            try:
                for _ in range(1000):
                    os.write(inp, b"f%d FETCH 1:* BODY[]\r\n" % (n + 1))
                    n += 1
            except BlockingIOError:
                stdin_full = True
            queued = array.array("i", [0])
            fcntl.ioctl(out, termios.FIONREAD, queued)
            steady = steady + 1 if stdin_full and queued[0] == last and last > 0 else 0
            last = queued[0]
            time.sleep(0.05)
        self.assertIsNone(p.poll())
        p.send_signal(signal.SIGHUP)          # wakes the session: its mailbox is reset
        time.sleep(0.3)                       # let the wake-up arrive
        cpu0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(1.5)
        used, wall = cpu_seconds(p.pid) - cpu0, time.time() - t0
        self.assertLess(used, 0.3, "imapmem used %.2f s of CPU in %.2f s while its session "
                        "waited for room to write" % (used, wall))
        # and the wake-up was real: once the output is read, the session says BYE (its
        # selected mailbox was reset) and ends
        data, deadline = bytes(buf), time.time() + 20
        while b"* BYE" not in data and time.time() < deadline:
            if select.select([out], [], [], 1)[0]:
                chunk = os.read(out, 1 << 20)
                if not chunk:
                    break
                data = data[-100:] + chunk
        self.assertIn(b"* BYE", data)


if __name__ == "__main__":
    unittest.main()
