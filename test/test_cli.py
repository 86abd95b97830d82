"""The imapmem program contract: what a test suite in another language relies on when it
runs imapmem as a subprocess.

The one ready line on stdout, the options, the exit status 2 errors that name the file and
line, users (and their --user escapes) and fixture layout, UIDVALIDITY, signals, the
connection and idle limits, --exit-with-parent.  Fixture facts (flags, sizes, UIDs) are
computed from the files by imapref.read_mbox; see the comment block at the top of
test_commands.py.
"""
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import imapref
import wire
from imapref import TREE_LIST
from wire import (READY, Raw, ServerCase, codes, exists, fetches, fixture, name_of, responses,
                  run, write_mbox)

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


class Base(ServerCase):
    def spawn_on_free_port(self, *args):
        """imapmem with args, "{port}" in them replaced by a port that was free a moment
        ago, and again with another if a test running in parallel took it meanwhile.
        Returns (the Proc, the port, its first line on stdout)."""
        for _ in range(5):
            port = free_port()
            p = self.spawn(*[a.replace("{port}", str(port)) for a in args],
                           stdin=subprocess.DEVNULL)
            line = p.stdout.readline()
            if line or p.wait() != 2 or "in use" not in p.err():
                return p, port, line
        self.fail("no free port in 5 tries")


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
        p, port, line = self.spawn_on_free_port("--port", "{port}", "--bind", "127.0.0.1", BASIC)
        self.assertEqual(line, b"imapmem: listening on 127.0.0.1:%d\n" % port)
        r = Raw("127.0.0.1", port)
        r.ok("LOGIN test test")
        r.close()
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)

    def test_short_options(self):
        p, port, line = self.spawn_on_free_port("-p", "{port}", "-b", "127.0.0.1",
                                                "-u", "x:y:" + BASIC)
        self.assertEqual(line, b"imapmem: listening on 127.0.0.1:%d\n" % port)
        r = Raw("127.0.0.1", port)
        r.ok("LOGIN x y")
        r.close()
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)

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

    def test_bind_localhost(self):
        s = self.start("-b", "localhost", BASIC)
        m = READY4.match(s.ready_line)
        self.assertTrue(m, s.ready_line)
        r = Raw("127.0.0.1", int(m.group(1)))
        self.addCleanup(r.close)
        self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)
        r.ok("LOGIN test test")
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))


class HelpVersion(ServerCase):
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


class Errors(ServerCase):
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
                    "--max-connections", "--idle-timeout", "--append-limit"):
            self.fails([BASIC, opt] if opt in ("-p", "--port") else ["-p", "0", BASIC, opt])

    def test_bad_option_values(self):
        self.fails(["-p", "notaport", BASIC])
        self.fails(["-p", "70000", BASIC])
        self.fails(["-p", "0", "--uidvalidity", "abc", BASIC])
        self.fails(["-p", "0", "--max-connections", "many", BASIC])
        self.fails(["-p", "0", "--idle-timeout", "soon", BASIC])
        self.fails(["-p", "0", "--append-limit", "-1", BASIC])
        self.fails(["-p", "0", "--append-limit", "67108865", BASIC])   # over the literal limit
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
        s = self.start(BASIC)
        p = run(["-p", str(s.port), BASIC], timeout=5)
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn(b"listening", p.stdout)
        self.assertTrue(p.stderr.strip())

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

    def test_unresolvable_host_is_named(self):
        p = run(["-p", "0", "-b", "nonexistent.invalid", BASIC], timeout=60)
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 2, err)
        self.assertNotIn(b"listening", p.stdout)
        self.assertIn("nonexistent.invalid", err)

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
        names = [name_of(x[3]) for x in responses(u, "LIST")]
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


TREE_FILES = {"INBOX": "INBOX.mbox", "Sent": "Sent.mbox", "Drafts": "Drafts.mbox",
              "Work/Projects": "Work/Projects.mbox", "Work/Old": "Work/Old.mbox",
              "Lists": "Lists.mbox", "Lists/ietf": "Lists/ietf.mbox"}


class DirectoryFixture(Base):
    def test_layout(self):
        s = self.start(TREE)
        r = self.raw(s)
        u = r.ok('LIST "" "*"')
        got = {}
        for _, attrs, delim, name in responses(u, "LIST"):
            self.assertEqual(delim, b"/")
            got[name_of(name)] = {a.lower() for a in attrs} - {"\\marked", "\\unmarked"}
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
                got = fetches(r.ok("FETCH 1:* BODY.PEEK[]"))
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
            names = sorted(name_of(x[3]) for x in responses(u, "LIST"))
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
            names = sorted(name_of(x[3]) for x in
                           responses(r.ok('LIST "" "*"'), "LIST"))
            self.assertEqual(names, ["INBOX"])


class UidValidity(Base):
    def select_codes(self, s):
        r = self.raw(s)
        return codes(r.ok("SELECT INBOX"))

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
            s = self.start(path, uidvalidity=None)
            r = self.raw(s)
            out = {box: codes(r.ok('EXAMINE "%s"' % box))["UIDVALIDITY"][0]
                   for box in ("INBOX", "Sent", "Lists/ietf")}
            r.close()
            self.assertEqual(s.stop(), 0)
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
            self.assertEqual(codes(r.ok('SELECT "%s"' % box))["UIDVALIDITY"], [4242], box)


class Signals(Base):
    def check_signal(self, sig):
        s = self.start(BASIC)
        greeted = self.raw(s, login=None)
        authed = self.raw(s)
        selected = self.raw(s, select="INBOX")
        s.proc.send_signal(sig)
        for name, r in (("not authenticated", greeted), ("authenticated", authed),
                        ("selected", selected)):
            rest = r.read_to_eof()[0]
            self.assertRegex(rest, rb"(^|\r\n)\* BYE[ \r]", "%s session: %r" % (name, rest))
            r.close()
        self.assertEqual(s.proc.wait(10), 0, s.stderr())
        self.assertEqual(s.proc.stdout.read(), b"")

    def test_sigterm(self):
        self.check_signal(signal.SIGTERM)

    def test_sigint(self):
        self.check_signal(signal.SIGINT)

    def test_sigterm_without_sessions(self):
        s = self.start(BASIC)
        self.assertEqual(s.stop(signal.SIGTERM), 0)

    def test_clean_sigterm_says_nothing(self):
        s = self.start(BASIC)
        authed = self.raw(s)
        selected = self.raw(s, select="INBOX")
        s.proc.send_signal(signal.SIGTERM)
        self.assertEqual(s.proc.wait(10), 0)
        for r in (authed, selected):
            self.assertIn(b"* BYE", r.read_to_eof()[0])
            r.close()
        self.assertEqual(s.proc.stdout.read(), b"")
        self.assertEqual(s.stderr(), "")


class Limits(Base):
    def test_max_connections(self):
        s = self.start("--max-connections", "2", BASIC)
        r1, r2 = self.raw(s, None), self.raw(s, None)
        self.assertTrue(r1.greeting.startswith(b"* OK"))
        self.assertTrue(r2.greeting.startswith(b"* OK"))
        r3 = Raw(s.host, s.port)
        self.addCleanup(r3.close)
        self.assertTrue(r3.greeting.startswith(b"* BYE"), r3.greeting)
        self.assertEqual(r3.read_to_eof()[0], b"")
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

    @unittest.skipUnless(os.path.isdir("/proc/self/fd"), "counts descriptors in /proc")
    def test_a_session_holds_one_descriptor_until_it_selects(self):
        # 10,000 idle sessions must fit in the usual limit of descriptors: one that has
        # logged in holds its socket only; SELECT (or NOTIFY) adds its wake-up pipe.
        s = self.start(BASIC)
        fds = lambda: len(os.listdir("/proc/%d/fd" % s.proc.pid))
        self.raw(s).ok("NOOP")               # the first session's allocations are made
        before = fds()
        clients = [self.raw(s) for _ in range(20)]
        for r in clients:
            r.ok("NOOP")
        self.assertEqual(fds() - before, 20)
        for r in clients[:5]:
            r.ok("SELECT INBOX")
        self.assertEqual(fds() - before, 20 + 5 * 2)
        clients[0].ok("SELECT INBOX")        # a second SELECT makes no second pipe
        self.assertEqual(fds() - before, 30)
        s.proc.send_signal(signal.SIGTERM)   # and every one of them still hears the stop
        self.assertEqual(s.proc.wait(10), 0)
        for r in clients:
            self.assertIn(b"* BYE", r.read_to_eof()[0])

    def test_idle_timeout(self):
        s = self.start("--idle-timeout", "1", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        t0 = time.time()
        rest = r.read_to_eof(10)[0]
        self.assertRegex(rest, rb"^\* BYE", rest)
        self.assertLess(time.time() - t0, 8)
        fresh = self.raw(s)             # the server goes on
        fresh.ok("NOOP")

    def test_largest_serves_normally(self):
        # With the UBSan build an overflowing idle time in milliseconds stopped the server
        # on the first command; this one must serve and stop cleanly (stop() checks stderr).
        s = self.start("--idle-timeout", "2147483", BASIC)
        c = s.imap()
        self.assertEqual(c.noop()[0], "OK")
        typ, data = c.select("INBOX")
        self.assertEqual((typ, int(data[0])), ("OK", len(imapref.read_mbox(BASIC))))
        self.assertEqual(c.logout()[0], "BYE")


# --exit-with-parent: the server ends with the process that started it

PR_SET_CHILD_SUBREAPER = 36


def proc_gone(pid):
    """True once pid has exited (gone, or a zombie nobody reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class ExitWithParent(Base):
    def spawn_via_shell(self):
        """imapmem started by an intermediate `sh -c` parent; returns (sh, pid, port)."""
        script = '"$0" --exit-with-parent -p 0 --uidvalidity 1 "$1" & echo "pid $!"; wait'
        sh = self.spawn(argv=["sh", "-c", script, wire.BIN, BASIC], stdin=subprocess.DEVNULL)
        pid = port = None
        fd = sh.stdout.fileno()
        buf = b""
        deadline = time.time() + 10
        while (pid is None or port is None) and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                m = READY.match(line + b"\n")
                if m:
                    port = int(m.group(2))
                elif line.startswith(b"pid "):
                    pid = int(line[4:])
        self.assertIsNotNone(pid, buf)
        self.assertIsNotNone(port, buf)
        self.addCleanup(lambda: proc_gone(pid) or os.kill(pid, signal.SIGKILL))
        return sh, pid, port

    def test_parent_dies(self):
        sh, pid, port = self.spawn_via_shell()
        r = Raw("127.0.0.1", port)
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        sh.kill()                       # SIGKILL: the parent cannot pass anything on
        sh.wait()
        deadline = time.time() + 5
        while not proc_gone(pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(proc_gone(pid), "imapmem outlived its parent")
        data, closed = r.read_to_eof(2)
        self.assertTrue(closed)
        self.assertIn(b"* BYE", data)   # it stops as on SIGTERM
        self.assertNoSanitizerReport(sh.err())

    def test_parent_dies_exit_status(self):
        """With this test process as subreaper, the orphan comes to us: it exits 0."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            self.skipTest("no PR_SET_CHILD_SUBREAPER")
        self.addCleanup(libc.prctl, PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        sh, pid, port = self.spawn_via_shell()
        sh.kill()
        sh.wait()
        deadline = time.time() + 5
        status = None
        while time.time() < deadline:
            try:
                wpid, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.fail("imapmem was not reparented to this process")
            if wpid == pid:
                break
            status = None
            time.sleep(0.05)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.fail("imapmem outlived its parent (reparented to a subreaper)")
        self.assertTrue(os.WIFEXITED(status), status)
        self.assertEqual(os.WEXITSTATUS(status), 0)

    def test_stdin_closes(self):
        p = self.spawn("--exit-with-parent", "-p", "0", "--uidvalidity", "1", BASIC)
        m = READY.match(p.stdout.readline())
        self.assertTrue(m)
        r = Raw("127.0.0.1", int(m.group(2)))
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        r.ok("SELECT INBOX")
        time.sleep(0.3)
        self.assertIsNone(p.poll())     # an open stdin keeps it running
        p.stdin.close()
        self.assertEqual(p.wait(5), 0)
        data, closed = r.read_to_eof(2)
        self.assertTrue(closed)
        self.assertIn(b"* BYE", data)
        self.assertNoSanitizerReport(p.err())


if __name__ == "__main__":
    unittest.main()
