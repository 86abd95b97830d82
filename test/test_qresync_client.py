"""A real QRESYNC client, imapflow (Node), resynchronizing against imapmem (RFC 7162 3.2).

imapflow IMAPFLOW_VERSION is installed with npm into build/node-imapflow-VERSION (not in
git; .ci/run installs it with `python3 test/test_qresync_client.py --install`, and the
tests install it themselves when it is missing).  The tests are skipped, saying why, only
when node or npm is missing or npm cannot install it.  test/qresync_client.mjs is the Node
side: it runs one ImapFlow({qresync: true}) and answers JSON requests on stdin.

What a user of imapflow would check, on fixtures/basic.mbox (UIDs 1-6, UIDVALIDITY 1):
  - offline: the client caches UIDs, flags and HIGHESTMODSEQ and logs out; a second, plain
    session changes flags and expunges; the client reconnects and opens INBOX with the
    cached UIDVALIDITY and HIGHESTMODSEQ.  It sends SELECT INBOX (QRESYNC (...)), receives
    the expunged UIDs as VANISHED (EARLIER) and the changed messages' flags, and its cache
    patched with those events equals the mailbox; imapmem's --trace shows that no FETCH of
    the whole mailbox was needed and that only the changed messages were sent.
  - online: the client stays selected; the other session's expunges reach it as VANISHED
    without EARLIER (RFC 7162 3.2.10.2) and its flag changes as FETCH with MODSEQ.
  - a changed UIDVALIDITY (the server restarted with another): the client's cached state
    is refused (3.2.5), nothing is reported as vanished or changed.
Section6Client is a raw client that keeps HIGHESTMODSEQ as RFC 7162 section 6 says, losing
its connection while an expunge is held back (an expected failure: a bug, see there).
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

from wire import ROOT, ServerCase, expand_set, fetches, fixture, flagset, read_line

IMAPFLOW_VERSION = "2.10.2"          # pinned: the version these tests were written against
NODE_DIR = os.path.join(ROOT, "build", "node-imapflow-" + IMAPFLOW_VERSION)
MODULES = os.path.join(NODE_DIR, "node_modules")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "qresync_client.mjs")
NODE_MAJOR_NEEDED = 20               # imapflow 2.x: "engines": {"node": ">=20.0.0"}


def installed_version():
    try:
        with open(os.path.join(MODULES, "imapflow", "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def install():
    """Install imapflow IMAPFLOW_VERSION into NODE_DIR (once, under a lock: the wire tests
    run against several builds at once).  Returns None, or why it cannot be used."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "node and npm are needed for imapflow (Debian: apt-get install nodejs npm)"
    v = subprocess.run([node, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    m = re.match(r"v(\d+)\.", v)
    if not m or int(m.group(1)) < NODE_MAJOR_NEEDED:
        return "imapflow %s needs Node >= %d; node is %s" % (IMAPFLOW_VERSION, NODE_MAJOR_NEEDED, v)
    os.makedirs(NODE_DIR, exist_ok=True)
    with open(os.path.join(NODE_DIR, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed_version() == IMAPFLOW_VERSION:
            return None
        p = subprocess.run([npm, "install", "--prefix", NODE_DIR, "--no-audit", "--no-fund",
                            "--no-save", "--no-package-lock", "imapflow@" + IMAPFLOW_VERSION],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        if p.returncode != 0 or installed_version() != IMAPFLOW_VERSION:
            return "npm could not install imapflow@%s: %s" % (
                IMAPFLOW_VERSION, p.stdout.decode("utf-8", "replace")[-800:])
    return None


class Imapflow:
    """One imapflow client in a Node process; request() sends one JSON request."""

    def __init__(self, case, script=SCRIPT):
        self.proc = subprocess.Popen(["node", script, MODULES], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = bytearray()
        self.case = case
        case.addCleanup(self.close)

    def request(self, op, **kw):
        kw["op"] = op
        self.proc.stdin.write((json.dumps(kw) + "\n").encode())
        self.proc.stdin.flush()
        line = read_line(self.proc.stdout.fileno(), self.buf, timeout=20)
        if not line:
            self.proc.kill()
            raise AssertionError("imapflow gave no answer to %r; stderr: %s" % (
                kw, self.proc.stderr.read().decode("utf-8", "replace")[-2000:]))
        answer = json.loads(line)
        self.case.assertTrue(answer["ok"], "imapflow %s: %s" % (op, answer.get("error")))
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def session_lines(trace, first_line_index):
    """{session number: [(direction, text)]} of the --trace lines from first_line_index on."""
    out = {}
    for line in trace.splitlines()[first_line_index:]:
        m = re.match(r"^imapmem\[(\d+)\] ([CS*]): (.*)$", line)
        if m:
            out.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
    return out


def the_session_with(sessions, pattern):
    """The one session whose client sent a command matching pattern."""
    found = [n for n, lines in sessions.items()
             if any(d == "C" and re.search(pattern, t, re.I) for d, t in lines)]
    assert len(found) == 1, "sessions sending %r: %r" % (pattern, found)
    return sessions[found[0]]


class QresyncClient(ServerCase):
    @classmethod
    def setUpClass(cls):
        why = install()
        if why:
            raise unittest.SkipTest(why)
        super().setUpClass()

    # -- helpers --------------------------------------------------------------------------
    def client(self, srv):
        c = Imapflow(self)
        enabled = c.request("connect", port=srv.port)["enabled"]
        self.assertIn("QRESYNC", enabled)
        return c

    def server_state(self, srv):
        """{uid: lower-case flags} and HIGHESTMODSEQ of INBOX, read by a plain session."""
        r = self.raw(srv)
        r.ok("ENABLE CONDSTORE")     # (not a change: reading only)
        u = r.ok("EXAMINE INBOX")
        hms = int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", u).group(1))
        u, t = r.cmd("UID FETCH 1:* (FLAGS)")
        self.assertOK(t)
        state = {d["UID"]: flagset(d["FLAGS"]) - {"\\recent"} for d in fetches(u).values()}
        r.close()
        return state, hms

    def cache_inbox(self, srv):
        """What an offline-capable client keeps after its first sync: (uidValidity,
        highestModseq, {uid: flags})."""
        c = self.client(srv)
        box = c.request("open", path="INBOX")["mailbox"]
        msgs = c.request("fetchAll")["messages"]
        c.request("logout")
        c.close()
        cache = {m["uid"]: set(f.lower() for f in m["flags"]) - {"\\recent"} for m in msgs}
        self.assertEqual(sorted(cache), [1, 2, 3, 4, 5, 6])
        self.assertTrue(all(int(m["modseq"]) <= int(box["highestModseq"]) for m in msgs), msgs)
        return box["uidValidity"], box["highestModseq"], cache

    def change_behind_its_back(self, srv):
        """A second, plain session (no ENABLE): flags UID 2 \\Seen, takes \\Draft off UID 6,
        and expunges 3 and 5 (5 has \\Deleted in the fixture).  Returns the expunged UIDs."""
        b = self.raw(srv, select="INBOX")
        b.ok("UID STORE 2 +FLAGS.SILENT (\\Seen)")
        b.ok("UID STORE 6 -FLAGS.SILENT (\\Draft)")
        b.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        u = b.ok("EXPUNGE")
        self.assertEqual(len(re.findall(rb"\* \d+ EXPUNGE", u)), 2, u)
        b.close()
        return {3, 5}

    @staticmethod
    def apply(cache, events):
        """Patch a cache with imapflow's events, as a client does: returns (vanished UIDs,
        {uid: flags} changed, the events' EARLIER tags, the changed messages' modseqs)."""
        gone, changed, earlier, modseqs = set(), {}, set(), []
        for e in events:
            if e["type"] == "expunge":
                gone.add(e["uid"])
                earlier.add(e.get("earlier"))
                cache.pop(e["uid"], None)
            elif e["type"] == "flags":
                flags = set(f.lower() for f in e["flags"]) - {"\\recent"}
                changed[e["uid"]] = flags
                cache[e["uid"]] = flags
                modseqs.append(int(e["modseq"]))
        return gone, changed, earlier, modseqs

    # -- the tests ------------------------------------------------------------------------
    def test_resync_after_offline_changes(self):
        srv = self.start("--trace", fixture("basic.mbox"))
        uidvalidity, hms, cache = self.cache_inbox(srv)
        expunged = self.change_behind_its_back(srv)
        want, want_hms = self.server_state(srv)
        mark = len(srv.stderr().splitlines())

        c = self.client(srv)
        box = c.request("open", path="INBOX", uidValidity=uidvalidity, changedSince=hms)["mailbox"]
        events = c.request("events")["events"]
        c.request("logout")
        self.assertTrue(box["qresync"], "imapflow did not accept the QRESYNC answer: %r" % box)
        self.assertEqual((box["uidValidity"], int(box["highestModseq"]), box["exists"]),
                         (uidvalidity, want_hms, 4))
        gone, changed, earlier, modseqs = self.apply(cache, events)
        self.assertEqual(gone, expunged, events)
        self.assertEqual(earlier, {True}, "expunges while away come as VANISHED (EARLIER)")
        self.assertEqual(changed, {2: want[2], 6: want[6]}, events)
        self.assertTrue(all(int(hms) < m <= want_hms for m in modseqs), (hms, modseqs))
        self.assertEqual(cache, want, "the patched cache is not the mailbox")

        # what crossed the wire in that session: SELECT with QRESYNC, the two changed
        # messages and one VANISHED (EARLIER); no FETCH of the mailbox
        s = the_session_with(session_lines(srv.stderr(), mark), r"^\S+ SELECT ")
        sent = [t for d, t in s if d == "C"]
        got = [t for d, t in s if d == "S"]
        self.assertTrue(any(re.fullmatch(r"\S+ SELECT \"?INBOX\"? \(QRESYNC \(%s %s\)\)"
                                         % (uidvalidity, hms), t, re.I) for t in sent), sent)
        self.assertEqual([t for t in sent if re.match(r"\S+ (UID )?FETCH ", t, re.I)], [],
                         "the client fetched after a QRESYNC select")
        fetched = [t for t in got if re.match(r"\* \d+ FETCH ", t)]
        self.assertEqual(len(fetched), 2, fetched)
        vanished = [t for t in got if t.startswith("* VANISHED")]
        self.assertEqual(len(vanished), 1, got)
        self.assertEqual(set(expand_set(vanished[0].split()[-1])), expunged, vanished)

    def test_live_changes_reach_a_selected_client(self):
        srv = self.start("--trace", fixture("basic.mbox"))
        c = self.client(srv)
        box = c.request("open", path="INBOX")["mailbox"]
        cache = {m["uid"]: set(f.lower() for f in m["flags"]) - {"\\recent"}
                 for m in c.request("fetchAll")["messages"]}
        c.request("events")
        mark = len(srv.stderr().splitlines())
        expunged = self.change_behind_its_back(srv)
        want, want_hms = self.server_state(srv)
        after = c.request("noop")["mailbox"]
        events = c.request("events")["events"]
        c.request("logout")
        gone, changed, earlier, modseqs = self.apply(cache, events)
        self.assertEqual(gone, expunged, events)
        self.assertEqual(earlier, {False}, "expunges while selected come as VANISHED, no EARLIER")
        self.assertEqual(changed, {2: want[2], 6: want[6]}, events)
        self.assertTrue(all(int(box["highestModseq"]) < m <= want_hms for m in modseqs), modseqs)
        self.assertEqual(cache, want)
        self.assertEqual(after["exists"], 4)
        # the client's session saw VANISHED, never EXPUNGE (RFC 7162 3.2.10.2)
        s = the_session_with(session_lines(srv.stderr(), mark), r"^\S+ NOOP")
        got = [t for d, t in s if d == "S"]
        self.assertEqual([t for t in got if re.match(r"\* \d+ EXPUNGE", t)], [], got)
        self.assertEqual(len([t for t in got if re.match(r"\* VANISHED \d", t)]), 1, got)

    def test_changed_uidvalidity_refuses_the_cache(self):
        srv = self.start(fixture("basic.mbox"))
        uidvalidity, hms, cache = self.cache_inbox(srv)
        srv.finish()
        srv2 = self.start(fixture("basic.mbox"), uidvalidity=2)    # "the server was replaced"
        c = self.client(srv2)
        box = c.request("open", path="INBOX", uidValidity=uidvalidity, changedSince=hms)["mailbox"]
        events = c.request("events")["events"]
        c.request("logout")
        self.assertEqual(box["uidValidity"], "2")
        self.assertFalse(box["qresync"], "imapflow kept a cache of another UIDVALIDITY")
        self.assertEqual(events, [], "changes reported against a stale UIDVALIDITY (RFC 7162 3.2.5)")


class Section6Client(ServerCase):
    """A client that keeps its HIGHESTMODSEQ exactly as RFC 7162 section 6 says, in Python:
    at each tagged response, a HIGHESTMODSEQ response code if one came (even below MODSEQs
    seen), else the highest MODSEQ of the FETCHes since the last tagged response.  (imapflow
    2.10.2 does not: it ignores a HIGHESTMODSEQ code in a tagged OK, so it cannot be the
    client of this test; against Dovecot 2.3.19 it loses the expunge below too.)"""

    @staticmethod
    def track(hms, untagged, tagged):
        code = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", untagged + b"\r\n" + tagged)
        if code:
            return int(code.group(1))
        seen = [int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", untagged)]
        return max([hms] + seen)

    # A MODSEQ above a VANISHED that is held back.  While a QRESYNC session's FETCH runs,
    # another session's expunge is held back (no VANISHED during FETCH) but that session's
    # later flag change goes out as a FETCH with its MODSEQ.  RFC 7162 3.2 (the paragraph
    # before 3.2.1): "... the server MUST send the HIGHESTMODSEQ response code with a lower
    # value than the EXPUNGE's mod-sequence", or a client that loses the connection never
    # hears of the expunged UID.  Dovecot 2.3.19 ends the same FETCH with
    # `OK [HIGHESTMODSEQ n]`, n below the expunge's; so does imapmem (it once forgot the
    # MODSEQs that the sync before the command sent).
    def test_a_lost_connection_loses_no_expunge(self):
        srv = self.start(fixture("basic.mbox"))
        q = self.raw(srv)
        q.ok("ENABLE QRESYNC")
        u = q.ok("SELECT INBOX")
        hms = int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", u).group(1))
        b = self.raw(srv, select="INBOX")
        b.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
        hms = self.track(hms, *q.cmd("NOOP"))
        b.ok("UID EXPUNGE 3")                             # an expunge, then
        b.ok("UID STORE 4 +FLAGS.SILENT (\\Flagged)")     # a later flag change
        hms = self.track(hms, *q.cmd("FETCH 1 (FLAGS)"))
        q.close()                                         # lost before the next NOOP
        r = self.raw(srv)
        r.ok("ENABLE QRESYNC")
        u = r.ok("SELECT INBOX (QRESYNC (1 %d))" % hms)
        gone = {x for line in re.findall(rb"\* VANISHED \(EARLIER\) (\S+)", u)
                for x in expand_set(line.decode())}
        self.assertIn(3, gone, "UID 3's expunge is lost after a resync from MODSEQ %d:\n%s"
                      % (hms, u.decode()))


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        why = install()
        print(why or "imapflow %s in %s" % (IMAPFLOW_VERSION, MODULES))
        sys.exit(1 if why else 0)
    unittest.main()
