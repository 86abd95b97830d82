"""Many clients at once on one mailbox (issue 4): no lost or doubled message, ascending UIDs,
every session's view agrees with the store, no deadlock, no ThreadSanitizer report.

For about three seconds (and a bounded number of iterations, so a slow sanitizer build stays
bounded too) these threads work on INBOX, each on its own connections:
  appender x2   APPEND <app-K-I@conc> (not selected)
  expunger      APPEND <del-I@conc>, UID STORE +FLAGS.SILENT (\\Deleted), EXPUNGE
  copier        APPEND <cp-I@conc>, UID COPY it to Other, COPY it back from Other (by
                sequence number there), then expunge it from Other: INBOX holds it twice
  flagger       STORE +/-FLAGS (\\Flagged, \\Seen, $Conc; never \\Deleted) on random
                sequence numbers of its view, FETCH 1:*, UID SEARCH
  fetcher       FETCH 1:* (UID FLAGS Message-ID), SEARCH ALL, UID SEARCH ALL, NOOP
  idler x2      IDLE ... DONE, NOOP, again
Every selected session tracks its own view from the untagged responses (EXISTS never shrinks
it, EXPUNGE n and FETCH n stay within it, a sequence number keeps its UID until EXPUNGE), and
no EXPUNGE may arrive while FETCH, STORE or SEARCH (or UID forms) are answered.  Afterwards a
fresh session must see each base and app message once, each cp message twice, no del message,
UIDs strictly ascending; every session after NOOP has the same count and UIDs.

Run it against a ThreadSanitizer build with IMAPMEM_BIN=/path/to/imapmem-tsan.
"""
import collections
import random
import re
import threading
import time
import traceback
import unittest

from wire import (ServerCase, View, expand_set, fetch_list, numbers, parse_line, search_of,
                  split_units, status_parts, write_mbox)

BASE = 10                     # messages in the fixture
RUN_SECONDS = 3.0
MAX_ITER = {"append": 150, "expunge": 100, "copy": 60, "store": 400, "fetch": 60}
CMD_TIMEOUT = 60.0            # a command without its tagged reply this long is a deadlock
NO_EXPUNGE = re.compile(r"^(UID )?(FETCH|STORE|SEARCH)\b", re.I)


def fixture_text():
    return "\n".join("From base@example.com Mon Jan %2d 10:00:00 2024\n"
                     "From: Base <base@example.com>\nSubject: base %d\n"
                     "Message-ID: <base-%d@conc>\nStatus: O\n\nBase message %d.\n"
                     % (i, i, i, i) for i in range(1, BASE + 1))


def message(mid):
    return ("From: Conc <conc@example.com>\r\nTo: Test <test@example.com>\r\n"
            "Subject: %s\r\nMessage-ID: <%s>\r\n\r\nBody of %s.\r\n" % (mid, mid, mid)).encode()


class Client:
    """A Raw connection with a View that every untagged response goes through."""

    def __init__(self, case, name, select=None):
        self.name = name
        self.r = case.raw(case.srv)
        self.r.sock.settimeout(CMD_TIMEOUT)
        self.view = None
        if select:
            self.select(select)

    def close(self):
        try:
            self.r.close()
        except OSError:
            pass

    def feed(self, line, command):
        """One untagged response line: to the view, and no EXPUNGE during command."""
        resp = parse_line(line)
        if self.view is not None:
            self.view.apply(resp)
        if NO_EXPUNGE.match(command) and resp[1:2] == ["EXPUNGE"]:
            raise AssertionError("%s: EXPUNGE during %r (RFC 3501 7.4.1)" % (self.name, command))

    def until_tagged(self, tag, command):
        lines = []
        while True:
            line = self.r.poll(CMD_TIMEOUT)
            if line is None:
                raise AssertionError("%s: no tagged reply to %r within %ds (deadlock?)"
                                     % (self.name, command, CMD_TIMEOUT))
            if line.startswith(tag.encode() + b" "):
                return lines, line[len(tag) + 1:-2]
            lines.append(line)
            self.feed(line, command)

    def cmd(self, command, ok=(b"OK",)):
        tag = self.r.tag()
        self.r.send("%s %s\r\n" % (tag, command))
        lines, tagged = self.until_tagged(tag, command)
        assert tagged.startswith(ok), "%s: %s -> %r" % (self.name, command, tagged)
        return lines, tagged

    def select(self, mailbox):
        self.view = View(who=self.name)
        return self.cmd("SELECT " + mailbox)

    def append(self, mailbox, data):
        """APPEND data; its UID from APPENDUID, or None."""
        untagged, tagged = self.r.append(mailbox, data)
        for line in split_units(untagged):
            self.feed(line, "APPEND")
        assert tagged.startswith(b"OK"), "%s: APPEND -> %r" % (self.name, tagged)
        code = status_parts(tagged)[1]
        return code[2] if code and code[0] == "APPENDUID" else None

    def uid_of_mid(self, mid):
        lines, _ = self.cmd('UID SEARCH HEADER Message-ID "<%s>"' % mid)
        nums = search_of(b"".join(lines))
        assert len(nums) == 1, "%s: %s found as %r" % (self.name, mid, nums)
        return nums[0]

    def idle_for(self, seconds):
        tag = self.r.tag()
        self.r.send("%s IDLE\r\n" % tag)
        while True:
            line = self.r.poll(CMD_TIMEOUT)
            assert line is not None, "%s: no + for IDLE" % self.name
            if line.startswith(b"+"):
                break
            assert not line.startswith(tag.encode()), "%s: IDLE -> %r" % (self.name, line)
            self.feed(line, "IDLE")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            line = self.r.poll(max(0.0, end - time.monotonic()))
            if line is not None:
                assert not line.startswith(tag.encode()), "%s: IDLE ended: %r" % (self.name, line)
                self.feed(line, "IDLE")
        self.r.send("DONE\r\n")
        _, tagged = self.until_tagged(tag, "IDLE")
        assert tagged.startswith(b"OK"), "%s: DONE -> %r" % (self.name, tagged)


class ConcurrencyTest(ServerCase):

    def setUp(self):
        self.srv = self.start(write_mbox(self.tempdir(), "inbox.mbox", fixture_text()))
        self.errors = []
        self.lock = threading.Lock()
        self.appended = {}                # Message-ID -> UID from APPENDUID (or None)
        self.copied = set()               # in INBOX twice
        self.deleted = set()              # expunged on purpose
        self.clients = []

    def client(self, name, select="INBOX"):
        c = Client(self, name, select)
        with self.lock:
            self.clients.append(c)
        return c

    # -- workers ---------------------------------------------------------------------------

    def appender(self, k, deadline):
        c = self.client("appender%d" % k, select=None)
        for i in range(MAX_ITER["append"]):
            if time.monotonic() > deadline:
                break
            mid = "app-%d-%d@conc" % (k, i)
            uid = c.append("INBOX", message(mid))
            with self.lock:
                self.appended[mid] = uid

    def expunger(self, deadline):
        c = self.client("expunger")
        for i in range(MAX_ITER["expunge"]):
            if time.monotonic() > deadline:
                break
            mid = "del-%d@conc" % i
            uid = c.append("INBOX", message(mid)) or c.uid_of_mid(mid)
            c.cmd("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            lines, _ = c.cmd("EXPUNGE")
            assert numbers(b"".join(lines), "EXPUNGE"), \
                "expunger: EXPUNGE of %s reported nothing: %r" % (mid, lines)
            with self.lock:
                self.deleted.add(mid)

    def copier(self, deadline):
        ci = self.client("copier-inbox")
        co = self.client("copier-other", select="Other")
        for i in range(MAX_ITER["copy"]):
            if time.monotonic() > deadline:
                break
            mid = "cp-%d@conc" % i
            uid = ci.append("INBOX", message(mid)) or ci.uid_of_mid(mid)
            _, tagged = ci.cmd("UID COPY %d Other" % uid)
            code = status_parts(tagged)[1]
            co.cmd("NOOP")
            v = expand_set(code[3])[0] if code and code[0] == "COPYUID" else co.uid_of_mid(mid)
            lines, _ = co.cmd("UID FETCH %d (UID)" % v)
            seqs = [n for n, items in fetch_list(b"".join(lines)) if items.get("UID") == v]
            assert len(seqs) == 1, "copier: UID %d in Other: %r" % (v, lines)
            co.cmd("COPY %d INBOX" % seqs[0])
            co.cmd("UID STORE %d +FLAGS.SILENT (\\Deleted)" % v)
            co.cmd("EXPUNGE")
            with self.lock:
                self.copied.add(mid)

    def flagger(self, deadline):
        c = self.client("flagger")
        rnd = random.Random(4)
        ops = ["+FLAGS (\\Flagged)", "-FLAGS (\\Flagged)", "+FLAGS ($Conc)",
               "-FLAGS.SILENT ($Conc)", "+FLAGS.SILENT (\\Seen)"]
        for i in range(MAX_ITER["store"]):
            if time.monotonic() > deadline:
                break
            n = rnd.randint(1, len(c.view.uids))
            c.cmd("STORE %d %s" % (n, rnd.choice(ops)), ok=(b"OK", b"NO [EXPUNGEISSUED]"))
            if i % 5 == 4:
                c.cmd("FETCH 1:* (UID FLAGS)", ok=(b"OK", b"NO [EXPUNGEISSUED]"))
                c.cmd("UID SEARCH FLAGGED")
                c.cmd("NOOP")

    def fetcher(self, deadline):
        c = self.client("fetcher")
        for i in range(MAX_ITER["fetch"]):
            if time.monotonic() > deadline:
                break
            c.cmd("FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                  ok=(b"OK", b"NO [EXPUNGEISSUED]"))
            lines, _ = c.cmd("SEARCH ALL")
            nums = [int(x) for ln in lines if ln.startswith(b"* SEARCH") for x in ln.split()[2:]]
            assert all(1 <= n <= len(c.view.uids) for n in nums), \
                "fetcher: SEARCH ALL %r with %d messages" % (nums, len(c.view.uids))
            c.cmd("UID SEARCH ALL")
            c.cmd("NOOP")

    def idler(self, k, deadline):
        c = self.client("idler%d" % k)
        while time.monotonic() < deadline:
            c.idle_for(min(0.8, max(0.05, deadline - time.monotonic())))
            c.cmd("NOOP")

    def run_worker(self, fn, *args):
        try:
            fn(*args)
        except BaseException:
            with self.lock:
                self.errors.append(traceback.format_exc())

    # -- the test ----------------------------------------------------------------------------

    def test_many_clients_one_mailbox(self):
        setup = self.client("setup", select=None)
        setup.cmd("CREATE Other")
        deadline = time.monotonic() + RUN_SECONDS
        jobs = [(self.appender, 1), (self.appender, 2), (self.expunger,), (self.copier,),
                (self.flagger,), (self.fetcher,), (self.idler, 1), (self.idler, 2)]
        threads = [threading.Thread(target=self.run_worker, args=(j[0],) + j[1:] + (deadline,),
                                    daemon=True) for j in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(RUN_SECONDS + 3 * CMD_TIMEOUT)
        hung = [j[0].__name__ for j, t in zip(jobs, threads) if t.is_alive()]
        self.assertEqual(hung, [], "workers still running (deadlock?)")
        self.assertEqual(self.errors, [], "\n".join(self.errors))
        self.assertTrue(self.appended and self.copied and self.deleted,
                        "every kind of work ran at least once")

        # the store as a fresh session sees it
        fresh = self.client("fresh")
        lines, _ = fresh.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        rows = []
        for n, items in fetch_list(b"".join(lines)):
            mid = re.search(rb"<([^>]+)>", items["BODY[HEADER.FIELDS (MESSAGE-ID)]"])
            rows.append((n, items.get("UID"), mid.group(1).decode()))
        rows.sort()
        self.assertEqual([r[0] for r in rows], list(range(1, len(rows) + 1)))
        self.assertEqual(len(rows), len(fresh.view.uids))
        uids = [r[1] for r in rows]
        self.assertTrue(all(a < b for a, b in zip(uids, uids[1:])), "UIDs not ascending: %r" % uids)

        # nothing lost, nothing doubled
        counts = collections.Counter(r[2] for r in rows)
        want = collections.Counter({"base-%d@conc" % i: 1 for i in range(1, BASE + 1)})
        want.update({mid: 1 for mid in self.appended})
        want.update({mid: 2 for mid in self.copied})
        self.assertEqual(dict(counts), dict(want))
        self.assertFalse(self.deleted & set(counts))
        by_mid = {r[2]: r[1] for r in rows}
        for mid, uid in self.appended.items():
            if uid is not None:
                self.assertEqual(by_mid[mid], uid, "APPENDUID of %s" % mid)
        other, _ = fresh.cmd("STATUS Other (MESSAGES)")
        self.assertIn(b"(MESSAGES 0)", b"".join(other))

        # every session that has INBOX selected agrees with the fresh one after NOOP
        for c in self.clients:
            if c.view is None or c.name in ("fresh", "copier-other"):
                continue
            c.cmd("NOOP")
            self.assertEqual(len(c.view.uids), len(uids), c.name)
            known = list(c.view.uids)
            c.cmd("FETCH 1:* (UID)")
            self.assertEqual(c.view.uids, uids, c.name)
            for seq, u in enumerate(known):
                self.assertIn(u, (None, uids[seq]), "%s: seq %d" % (c.name, seq + 1))

        # still answering, then a clean stop
        t0 = time.monotonic()
        fresh.cmd("NOOP")
        self.assertLess(time.monotonic() - t0, CMD_TIMEOUT)
        for c in self.clients:
            c.close()
        self.clients = []
        rc = self.srv.stop()
        err = self.srv.stderr()
        self.assertNoSanitizerReport(err)
        self.assertEqual(rc, 0, err[-3000:])


FIRST_PASS = 700              # messages: enough for the helper thread (BUILD_AHEAD_FROM)


def first_pass_fixture():
    """Messages whose ENVELOPE and BODYSTRUCTURE all differ: plain and multipart, several
    address forms, a nested message/rfc822 now and then."""
    out = []
    for i in range(FIRST_PASS):
        head = ("From s%d@example.com Mon Jan  1 10:00:00 2024\nDate: Mon, %d Jan 2024 10:%02d:00 "
                "+0100\nFrom: %s\nTo: a%d@example.com, \"B, %d\" <b%d@example.org>\n"
                "Subject: first pass %d\nMessage-ID: <fp-%d@conc>\n"
                % (i, 1 + i % 28, i % 60, ("Sender %d <s%d@example.com>" % (i, i)) if i % 3
                   else "s%d@example.com (Comment %d)" % (i, i), i, i, i, i, i))
        if i % 4 == 0:
            out.append(head + "Content-Type: text/plain; charset=utf-8\n\nBody %d.\n" % i)
        else:
            inner = ("--b%d\nContent-Type: message/rfc822\n\nSubject: inner %d\nFrom: i@x\n\n"
                     "inner\n" % (i, i)) if i % 5 == 0 else ""
            out.append(head + "Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\n"
                       "Content-Type: text/plain\n\nline one\nline %d\n%s--b%d\n"
                       "Content-Type: application/pdf; name=\"f%d.pdf\"\nContent-Disposition: "
                       "attachment; filename=\"f%d.pdf\"\nContent-Transfer-Encoding: base64\n\n"
                       "JVBERi0=\n--b%d--\n" % (i, i, i, inner, i, i, i, i))
    return "\n".join(out)


class FirstPassTest(ServerCase):
    """The first FETCH of ENVELOPE and BODYSTRUCTURE of a large mailbox, and its first SORT
    and THREAD (issue 15): a helper thread and the session take runs of messages to build,
    and several sessions race for the same messages. Every answer must be the
    one a server gives that builds a few messages at a time (no helper), and there must be
    no sanitizer report."""

    SORTS = ["SORT (SUBJECT) UTF-8 ALL", "SORT (REVERSE DATE) UTF-8 ALL",
             "SORT (FROM) UTF-8 ALL", "SORT (DISPLAYTO) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL"]

    def test_first_sort_races_and_helpers(self):
        path = write_mbox(self.tempdir(), "inbox.mbox", first_pass_fixture())
        alone = self.start(path)            # reference: sort keys 200 messages at a time
        r = self.raw(alone, select="INBOX")
        for lo in range(1, FIRST_PASS + 1, 200):   # the keys, then the address keys
            self.assertOK(r.cmd("SORT (SUBJECT) UTF-8 %d:%d" % (lo, lo + 199))[1])
            self.assertOK(r.cmd("SORT (TO) UTF-8 %d:%d" % (lo, lo + 199))[1])
        want = {}
        for cmd in self.SORTS:
            u, t = r.cmd(cmd)
            self.assertOK(t)
            want[cmd] = u
        self.assertEqual(len(want["SORT (SUBJECT) UTF-8 ALL"].split()), FIRST_PASS + 2)

        srv = self.start(path)
        clients, got = self.race(srv, self.SORTS)
        for k, g in enumerate(got):
            self.assertEqual(g, want[self.SORTS[k]], "client %d's first %s" % (k, self.SORTS[k]))
        for cmd in self.SORTS:
            self.assertEqual(clients[0].cmd(cmd)[0], want[cmd], "repeated " + cmd)
        self.stop_clean(srv, clients)

    def race(self, srv, commands):
        """Each command from a session of its own, all at once: the sessions, and the
        untagged part of each answer (each must be OK)."""
        clients = [self.raw(srv, select="INBOX") for _ in commands]
        got, errors = [None] * len(commands), []

        def run(k):
            try:
                u, t = clients[k].cmd(commands[k])
                self.assertOK(t)
                got[k] = u
            except BaseException:
                errors.append(traceback.format_exc())

        threads = [threading.Thread(target=run, args=(k,), daemon=True)
                   for k in range(len(commands))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CMD_TIMEOUT)
        self.assertEqual(errors, [], "\n".join(errors))
        return clients, got

    def stop_clean(self, srv, clients):
        for c in clients:
            c.close()
        rc = srv.stop()
        err = srv.stderr()
        self.assertNoSanitizerReport(err)
        self.assertEqual(rc, 0, err[-3000:])

    def envbs(self, data):
        return {n: (items["ENVELOPE"], items["BODYSTRUCTURE"])
                for n, items in fetch_list(data)}

    def test_first_pass_races_and_helpers(self):
        path = write_mbox(self.tempdir(), "inbox.mbox", first_pass_fixture())
        alone = self.start(path)            # reference: a few messages per FETCH, no helper
        r = self.raw(alone, select="INBOX")
        want = {}
        for lo in range(1, FIRST_PASS + 1, 50):
            u, t = r.cmd("FETCH %d:%d (ENVELOPE BODYSTRUCTURE)" % (lo, lo + 49))
            self.assertOK(t)
            want.update(self.envbs(u))
        self.assertEqual(len(want), FIRST_PASS)
        self.assertEqual(len(set(map(repr, want.values()))), FIRST_PASS, "the messages differ")

        srv = self.start(path)
        clients, got = self.race(srv, ["FETCH 1:* (ENVELOPE BODYSTRUCTURE)"] * 3)
        for k, g in enumerate(got):
            self.assertEqual(self.envbs(g), want, "client %d's first FETCH" % k)
        u, t = clients[0].cmd("FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
        self.assertEqual(self.envbs(u), want, "the repeated FETCH")
        self.stop_clean(srv, clients)


if __name__ == "__main__":
    unittest.main()
