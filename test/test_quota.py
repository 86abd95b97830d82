"""QUOTA (RFC 9208), through raw connections, organised by the RFC's sections.

The server's choices (README, "Quota"): every user has one quota root, named "", over all of
the user's mailboxes; GETQUOTAROOT of any mailbox (existing or not) names it.  STORAGE is
the sum of the messages' RFC822.SIZEs in KiB, a begun KiB counting whole (as Dovecot
reports it), MESSAGE the number of messages.  QUOTA is advertised whether or not a limit is
set; a root without limits answers `* QUOTA "" ()`.  A user may SETQUOTA the own root
(QUOTASET).  A MOVE between mailboxes of one root adds nothing, so it is never refused.
Limits come from --quota NAME:STORAGE=KIB[,MESSAGE=N], SETQUOTA and imapmem_set_quota
(test/api_test.c), and survive a reset (SIGHUP).

Fixtures: user test (password test) with INBOX holding three messages of known size, and
an empty Archive; user other (password secret) with an empty INBOX.
"""
import signal
import threading

from wire import Lit, ServerCase, capabilities, responses, status_parts, upper, write_mbox


def message(subject, size):
    """A message of exactly size octets (CRLF line ends; below 40, just x's)."""
    if size < 40:
        return b"x" * size
    head = ("From: a@example.com\r\nSubject: %s\r\n\r\n" % subject).encode()
    body = size - len(head) - 2
    assert body >= 0, size
    msg = head + b"x" * body + b"\r\n"
    assert len(msg) == size
    return msg


SIZES = [300, 500, 1000]            # INBOX's fixture messages, in octets: 1800, so 2 KiB


def mbox(sizes):
    out = []
    for i, size in enumerate(sizes):
        msg = message("m%d" % (i + 1), size).replace(b"\r\n", b"\n").decode()
        out.append("From a@example.com Mon Jan 01 10:00:00 2024\n" + msg)
    return "\n".join(out)


# RFC 9208 4.3.1 Example 1: the message of A003 (as RFC 3501 6.3.11 has it), CRLF.
A003 = ("\r\n".join(["Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
                     "From: Fred Foobar <foobar@Blurdybloop.example>",
                     "Subject: afternoon meeting",
                     "To: mooch@owatagu.siam.edu.example",
                     "Message-Id: <B27397-0100000@Blurdybloop.example>",
                     "MIME-Version: 1.0",
                     "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
                     "",
                     "Hello Joe, do you think we can meet at 3:30 tomorrow?",
                     ""]) + "\r\n").encode()


class QuotaCase(ServerCase):
    def setUp(self):
        d = self.tempdir()
        write_mbox(d + "/test", "INBOX.mbox", mbox(SIZES))
        write_mbox(d + "/test", "Archive.mbox", "")
        write_mbox(d + "/other", "INBOX.mbox", "")
        self.users = ["-u", "test:test:" + d + "/test", "-u", "other:secret:" + d + "/other"]

    def server(self, *args):
        return self.start_or_fail(*(self.users + list(args)))

    def quota(self, untagged):
        """{root: {RESOURCE: (usage, limit)}} of the * QUOTA responses in untagged."""
        out = {}
        for r in responses(untagged, "QUOTA"):
            self.assertEqual(len(r), 3, r)
            root = r[1].decode() if isinstance(r[1], bytes) else str(r[1])
            triples = r[2]
            self.assertEqual(len(triples) % 3, 0, r)
            res = {}
            for i in range(0, len(triples), 3):
                name, usage, limit = upper(str(triples[i])), triples[i + 1], triples[i + 2]
                self.assertIsInstance(usage, int, r)
                self.assertIsInstance(limit, int, r)
                self.assertNotIn(name, res, r)
                res[name] = (usage, limit)
            out[root] = res
        return out

    def getquota(self, r, root='""'):
        u, t = r.cmd("GETQUOTA " + root)
        self.assertOK(t, "GETQUOTA")
        q = self.quota(u)
        self.assertEqual(list(q), [""], u)
        return q[""]

    def setquota(self, r, limits):
        u, t = r.cmd('SETQUOTA "" (%s)' % limits)
        self.assertOK(t, "SETQUOTA")
        return self.quota(u)

    def code(self, tagged):
        c = status_parts(tagged)[1]
        return upper(str(c[0])) if c else None


# ---------------------------------------------------------------------------------------
class Capabilities(QuotaCase):
    """RFC 9208 3.1.1, 5 and 7 (capability-quota): QUOTA, the QUOTA=RES-* of every resource
    the server handles, QUOTASET for SETQUOTA; each can be switched off."""

    def test_advertised_without_any_limit(self):
        r = self.raw(self.server())
        caps = capabilities(r.ok("CAPABILITY"))
        for c in ("QUOTA", "QUOTASET", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"):
            self.assertIn(c, caps)

    def test_quota_off_takes_everything(self):
        r = self.raw(self.server("--capability", "-QUOTA"))
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertFalse({c for c in caps if c.startswith("QUOTA")}, caps)
        for cmd in ('GETQUOTA ""', "GETQUOTAROOT INBOX", 'SETQUOTA "" (STORAGE 1)'):
            self.assertBAD(r.cmd(cmd)[1], cmd)
        self.assertBAD(r.cmd("STATUS INBOX (DELETED-STORAGE)")[1])

    def test_quotaset_off(self):
        r = self.raw(self.server("--capability", "-QUOTASET"))
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertNotIn("QUOTASET", caps)
        self.assertIn("QUOTA", caps)
        self.assertBAD(r.cmd('SETQUOTA "" (STORAGE 1)')[1])
        self.getquota(r)

    def test_quotaset_on_brings_quota(self):
        r = self.raw(self.server("--capability", "-QUOTA", "--capability", "+QUOTASET"))
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertIn("QUOTA", caps)
        self.assertIn("QUOTASET", caps)

    def test_resource_off_is_neither_reported_nor_enforced(self):
        r = self.raw(self.server("--quota", "test:STORAGE=100,MESSAGE=3",
                                 "--capability", "-QUOTA=RES-MESSAGE"))
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertNotIn("QUOTA=RES-MESSAGE", caps)
        self.assertIn("QUOTA=RES-STORAGE", caps)
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 100)})
        self.assertOK(r.append("INBOX", message("four", 100))[1])   # MESSAGE 3 not enforced
        # DELETED stays (RFC 9051 6.3.11 has it without QUOTA); DELETED-STORAGE is RES-STORAGE's
        self.assertOK(r.cmd("STATUS INBOX (DELETED)")[1])
        self.assertNO(r.cmd('SETQUOTA "" (MESSAGE 5)')[1])

    def test_api_name(self):
        r = self.raw(self.server("--capability", "-QUOTA=RES-STORAGE"))
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertNotIn("QUOTA=RES-STORAGE", caps)
        self.assertIn("QUOTA=RES-MESSAGE", caps)


# ---------------------------------------------------------------------------------------
class GetQuota(QuotaCase):
    """RFC 9208 4.1.1 GETQUOTA and 4.2.1 the QUOTA response."""

    def test_rfc_example_shape(self):
        # S: * QUOTA "!partition/sda4" (STORAGE 104 10923847)
        r = self.raw(self.server("--quota", "test:STORAGE=10923847"))
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 10923847)})

    def test_no_limits_is_an_empty_list(self):
        """4.2.1: an empty list means there are no resource limits in the root."""
        r = self.raw(self.server())
        u, t = r.cmd('GETQUOTA ""')
        self.assertOK(t)
        self.assertEqual(u, b'* QUOTA "" ()\r\n')

    def test_usage_counts_every_mailbox(self):
        r = self.raw(self.server("--quota", "test:STORAGE=50,MESSAGE=10"))
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 50), "MESSAGE": (3, 10)})
        self.assertOK(r.append("Archive", message("a", 1000))[1])
        self.assertEqual(self.getquota(r), {"STORAGE": (3, 50), "MESSAGE": (4, 10)})
        r.ok("CREATE Other")
        self.assertOK(r.append("Other", message("b", 100))[1])
        self.assertEqual(self.getquota(r)["MESSAGE"], (5, 10))
        r.ok("DELETE Other")     # its message no longer counts
        self.assertEqual(self.getquota(r)["MESSAGE"], (4, 10))

    def test_storage_units(self):
        """5.1: STORAGE in units of 1024 octets."""
        r = self.raw(self.server("--quota", "test:STORAGE=1000"))
        r.ok("SELECT INBOX")
        r.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        r.ok("EXPUNGE")
        self.assertEqual(self.getquota(r), {"STORAGE": (0, 1000)})
        self.assertOK(r.append("INBOX", message("k", 1024))[1])
        self.assertEqual(self.getquota(r), {"STORAGE": (1, 1000)})
        self.assertOK(r.append("INBOX", message("k", 1))[1])
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 1000)})

    def test_expunge_frees(self):
        r = self.raw(self.server("--quota", "test:MESSAGE=10"))
        r.ok("SELECT INBOX")
        r.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(self.getquota(r), {"MESSAGE": (3, 10)})
        r.ok("EXPUNGE")
        self.assertEqual(self.getquota(r), {"MESSAGE": (2, 10)})

    def test_other_roots_do_not_exist(self):
        r = self.raw(self.server())
        for root in ('"!partition/sda4"', "other", '"#user/test"'):
            u, t = r.cmd("GETQUOTA " + root)
            self.assertNO(t, root)
            self.assertEqual(u, b"")

    def test_each_user_has_own_root(self):
        s = self.server("--quota", "test:MESSAGE=10", "--quota", "other:MESSAGE=7")
        self.assertEqual(self.getquota(self.raw(s)), {"MESSAGE": (3, 10)})
        self.assertEqual(self.getquota(self.raw(s, login=("other", "secret"))),
                         {"MESSAGE": (0, 7)})

    def test_syntax(self):
        r = self.raw(self.server())
        for bad in ("GETQUOTA", 'GETQUOTA "" extra', "GETQUOTA (x)"):
            self.assertBAD(r.cmd(bad)[1], bad)

    def test_needs_authentication(self):
        r = self.raw(self.server(), login=None)
        self.assertRefused(r.cmd('GETQUOTA ""')[1])
        self.assertRefused(r.cmd("GETQUOTAROOT INBOX")[1])


# ---------------------------------------------------------------------------------------
class GetQuotaRoot(QuotaCase):
    """RFC 9208 4.1.2 GETQUOTAROOT and 4.2.2 the QUOTAROOT response."""

    def quotaroot(self, untagged):
        found = responses(untagged, "QUOTAROOT")
        self.assertEqual(len(found), 1, untagged)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in found[0][1:]]

    def test_rfc_example(self):
        # C: G0002 GETQUOTAROOT INBOX
        # S: * QUOTAROOT INBOX "#user/alice" "!partition/sda4"
        # S: * QUOTA "#user/alice" (MESSAGE 42 1000)
        r = self.raw(self.server("--quota", "test:MESSAGE=1000"))
        u, t = r.cmd("GETQUOTAROOT INBOX")
        self.assertOK(t)
        self.assertEqual(self.quotaroot(u), ["INBOX", ""])
        self.assertEqual(self.quota(u), {"": {"MESSAGE": (3, 1000)}})
        lines = u.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"* QUOTAROOT"), u)   # QUOTAROOT, then QUOTA
        self.assertTrue(lines[1].startswith(b"* QUOTA "), u)

    def test_mailbox_need_not_exist(self):
        """4.1.2: which root would apply to a mailbox when it gets created."""
        r = self.raw(self.server())
        u, t = r.cmd("GETQUOTAROOT comp.mail.mime")
        self.assertOK(t)
        self.assertEqual(self.quotaroot(u), ["comp.mail.mime", ""])
        self.assertEqual(self.quota(u), {"": {}})

    def test_every_mailbox_same_root(self):
        r = self.raw(self.server("--quota", "test:STORAGE=9"))
        for box in ("Archive", "inbox"):
            u, t = r.cmd("GETQUOTAROOT " + box)
            self.assertOK(t)
            self.assertEqual(self.quotaroot(u)[1:], [""])
            self.assertEqual(self.quota(u), {"": {"STORAGE": (2, 9)}})

    def test_syntax(self):
        r = self.raw(self.server())
        for bad in ("GETQUOTAROOT", "GETQUOTAROOT a b"):
            self.assertBAD(r.cmd(bad)[1], bad)


# ---------------------------------------------------------------------------------------
class SetQuota(QuotaCase):
    """RFC 9208 4.1.3 SETQUOTA (QUOTASET)."""

    def test_rfc_example(self):
        # C: S0000 GETQUOTA "#user/alice"
        # S: * QUOTA "#user/alice" (STORAGE 54 111 MESSAGE 42 1000)
        # C: S0001 SETQUOTA "#user/alice" (STORAGE 510)
        # S: * QUOTA "#user/alice" (STORAGE 58 512)
        r = self.raw(self.server("--quota", "test:STORAGE=111,MESSAGE=1000"))
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 111), "MESSAGE": (3, 1000)})
        # the MESSAGE limit, not named, is removed; no rounding here
        self.assertEqual(self.setquota(r, "STORAGE 510"), {"": {"STORAGE": (2, 510)}})
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 510)})

    def test_fixed_root_refused(self):
        # C: S0002 SETQUOTA "!partition/sda4" (STORAGE 99999999)
        # S: S0002 NO Cannot change system limit
        r = self.raw(self.server())
        self.assertNO(r.cmd('SETQUOTA "!partition/sda4" (STORAGE 99999999)')[1])
        self.assertEqual(self.getquota(r), {})

    def test_empty_list_removes_all(self):
        r = self.raw(self.server("--quota", "test:STORAGE=5,MESSAGE=5"))
        self.assertEqual(self.setquota(r, ""), {"": {}})
        self.assertEqual(self.getquota(r), {})

    def test_case_and_both(self):
        r = self.raw(self.server())
        self.assertEqual(self.setquota(r, "message 4 Storage 7"),
                         {"": {"STORAGE": (2, 7), "MESSAGE": (3, 4)}})

    def test_seen_by_other_sessions(self):
        s = self.server()
        a, b = self.raw(s), self.raw(s)
        self.setquota(a, "MESSAGE 3")
        self.assertEqual(self.getquota(b), {"MESSAGE": (3, 3)})
        self.assertEqual(self.code(b.append("INBOX", message("x", 100))[1]), "OVERQUOTA")

    def test_unknown_resource_changes_nothing(self):
        """resource-name-ext is valid syntax: NO, "can't set that data"."""
        r = self.raw(self.server("--quota", "test:MESSAGE=9"))
        for limits in ("MAILBOX 5", "ANNOTATION-STORAGE 1", "STORAGE 5 FOO 1"):
            u, t = r.cmd('SETQUOTA "" (%s)' % limits)
            self.assertNO(t, limits)
        self.assertEqual(self.getquota(r), {"MESSAGE": (3, 9)})

    def test_bad_syntax(self):
        r = self.raw(self.server())
        for bad in ('SETQUOTA ""', 'SETQUOTA "" STORAGE 1', 'SETQUOTA "" (STORAGE)',
                    'SETQUOTA "" (STORAGE x)', 'SETQUOTA "" (STORAGE -1)',
                    'SETQUOTA "" (STORAGE 1', 'SETQUOTA "" (STORAGE 1 STORAGE 2)',
                    'SETQUOTA "" (STORAGE  1)', 'SETQUOTA "" (STORAGE 1) x',
                    'SETQUOTA "" (STORAGE 9223372036854775808)'):
            self.assertBAD(r.cmd(bad)[1], bad)
        self.assertEqual(self.getquota(r), {})

    def test_number64(self):
        r = self.raw(self.server())
        self.assertEqual(self.setquota(r, "STORAGE 9223372036854775807"),
                         {"": {"STORAGE": (2, 9223372036854775807)}})
        self.assertOK(r.append("INBOX", message("big", 2000))[1])

    def test_zero_prohibits_any_usage(self):
        """3.1.2: a limit of 0 means any usage is prohibited."""
        r = self.raw(self.server())
        self.setquota(r, "MESSAGE 0")
        self.assertEqual(self.code(r.append("Archive", message("x", 100))[1]), "OVERQUOTA")


# ---------------------------------------------------------------------------------------
class StatusDeleted(QuotaCase):
    """RFC 9208 4.1.4: STATUS DELETED and DELETED-STORAGE."""

    def status(self, r, box="INBOX", items="MESSAGES DELETED DELETED-STORAGE"):
        return super().status(r, box, items)

    def test_rfc_example(self):
        # C: S0003 STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)
        # S: * STATUS INBOX (MESSAGES 12 DELETED 4 DELETED-STORAGE 8)
        r = self.raw(self.server())
        for i in range(9):
            self.assertOK(r.append("INBOX", message("n%d" % i, 100 + i))[1])
        r.ok("SELECT INBOX")
        r.ok("STORE 2,4,6,12 +FLAGS.SILENT (\\Deleted)")
        # the sum of the RFC822.SIZEs of the \Deleted messages (4.1.4's MAY), in octets
        self.assertEqual(self.status(r), {"MESSAGES": 12, "DELETED": 4,
                                          "DELETED-STORAGE": 500 + 100 + 102 + 108})

    def test_none_deleted_and_after_expunge(self):
        r = self.raw(self.server())
        self.assertEqual(self.status(r), {"MESSAGES": 3, "DELETED": 0, "DELETED-STORAGE": 0})
        r.ok("SELECT INBOX")
        r.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(self.status(r, items="DELETED-STORAGE"), {"DELETED-STORAGE": 1000})
        r.ok("EXPUNGE")
        self.assertEqual(self.status(r), {"MESSAGES": 2, "DELETED": 0, "DELETED-STORAGE": 0})

    def test_other_mailbox(self):
        s = self.server()
        a, b = self.raw(s), self.raw(s)
        self.assertOK(a.append("Archive", message("a", 700), opts="(\\Deleted)")[1])
        self.assertEqual(self.status(b, "Archive"),
                         {"MESSAGES": 1, "DELETED": 1, "DELETED-STORAGE": 700})


# ---------------------------------------------------------------------------------------
class OverQuota(QuotaCase):
    """RFC 9208 4.3.1: NO [OVERQUOTA] to an APPEND/COPY/MOVE that would go over a limit,
    with nothing changed."""

    def unchanged(self, r, box, before):
        self.assertEqual(self.status(r, box, "MESSAGES UIDNEXT"), before)

    def test_rfc_example_1(self):
        # C: A003 APPEND saved-messages (\Seen) {326}
        # S: A003 NO [OVERQUOTA] APPEND Failed
        r = self.raw(self.server("--quota", "test:STORAGE=2"))
        r.ok("CREATE saved-messages")
        before = self.status(r, "saved-messages", "MESSAGES UIDNEXT")
        u, t = r.append("saved-messages", A003, opts="(\\Seen)")
        self.assertNO(t)
        self.assertEqual(self.code(t), "OVERQUOTA")
        self.unchanged(r, "saved-messages", before)
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 2)})

    def test_storage_exactly_at_the_limit(self):
        # 1800 octets used; 2 KiB = 2048: 248 more fit, 249 do not
        r = self.raw(self.server("--quota", "test:STORAGE=2"))
        self.assertEqual(self.code(r.append("INBOX", message("x", 249))[1]), "OVERQUOTA")
        self.assertOK(r.append("INBOX", message("x", 248))[1])
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 2)})

    def test_message_limit(self):
        r = self.raw(self.server("--quota", "test:MESSAGE=4"))
        self.assertOK(r.append("Archive", message("x", 100))[1])
        before = self.status(r, "Archive", "MESSAGES UIDNEXT")
        t = r.append("Archive", message("y", 100))[1]
        self.assertEqual(self.code(t), "OVERQUOTA", t)
        self.unchanged(r, "Archive", before)

    def test_literal_plus(self):
        r = self.raw(self.server("--quota", "test:MESSAGE=3"))
        t = r.append("INBOX", message("x", 100), plus=True)[1]
        self.assertEqual(self.code(t), "OVERQUOTA", t)
        r.ok("NOOP")       # the literal was read: the connection is in step

    def test_multiappend_all_or_nothing(self):
        r = self.raw(self.server("--quota", "test:MESSAGE=5"))
        before = self.status(r, "Archive", "MESSAGES UIDNEXT")
        u, t, _ = r.lit_command("APPEND Archive ", Lit(message("a", 100)), " ",
                                Lit(message("b", 100)), " ", Lit(message("c", 100)))
        self.assertEqual(self.code(t), "OVERQUOTA", t)
        self.unchanged(r, "Archive", before)
        u, t, _ = r.lit_command("APPEND Archive ", Lit(message("a", 100)), " ",
                                Lit(message("b", 100)))
        self.assertOK(t)
        self.assertEqual(self.getquota(r), {"MESSAGE": (5, 5)})

    def test_catenate(self):
        r = self.raw(self.server("--quota", "test:STORAGE=2"))
        r.ok("SELECT INBOX")
        u, t, _ = r.lit_command("APPEND Archive CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=3\")")
        self.assertEqual(self.code(t), "OVERQUOTA", t)
        self.assertEqual(self.status(r, "Archive", "MESSAGES")["MESSAGES"], 0)

    def test_copy(self):
        r = self.raw(self.server("--quota", "test:MESSAGE=5"))
        r.ok("SELECT INBOX")
        before = self.status(r, "Archive", "MESSAGES UIDNEXT")
        u, t = r.cmd("COPY 1:3 Archive")
        self.assertEqual(self.code(t), "OVERQUOTA", t)
        self.unchanged(r, "Archive", before)
        self.assertOK(r.cmd("UID COPY 1:2 Archive")[1])
        self.assertEqual(self.code(r.cmd("COPY 3 Archive")[1]), "OVERQUOTA")

    def test_copy_storage(self):
        r = self.raw(self.server("--quota", "test:STORAGE=2"))
        r.ok("SELECT INBOX")
        self.assertEqual(self.code(r.cmd("COPY 1 Archive")[1]), "OVERQUOTA")   # 2100 > 2048
        self.assertEqual(self.status(r, "Archive", "MESSAGES")["MESSAGES"], 0)

    def test_move_within_the_root_adds_nothing(self):
        """At the limit, MOVE still works: source and target share the one root."""
        r = self.raw(self.server("--quota", "test:MESSAGE=3,STORAGE=2"))
        r.ok("SELECT INBOX")
        self.assertOK(r.cmd("MOVE 1:2 Archive")[1])
        self.assertEqual(self.getquota(r), {"STORAGE": (2, 2), "MESSAGE": (3, 3)})
        self.assertEqual(self.status(r, "Archive", "MESSAGES")["MESSAGES"], 2)

    def test_over_after_lowering(self):
        """A limit set below the usage: usage > limit is reported; nothing more goes in
        until enough is expunged."""
        r = self.raw(self.server())
        self.assertEqual(self.setquota(r, "MESSAGE 1"), {"": {"MESSAGE": (3, 1)}})
        self.assertEqual(self.code(r.append("INBOX", message("x", 10))[1]), "OVERQUOTA")
        r.ok("SELECT INBOX")
        r.ok("STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        r.ok("EXPUNGE")
        self.assertOK(r.append("INBOX", message("x", 10))[1])

    def test_other_users_not_limited(self):
        s = self.server("--quota", "test:MESSAGE=0")
        o = self.raw(s, login=("other", "secret"))
        self.assertOK(o.append("INBOX", message("x", 10))[1])


# ---------------------------------------------------------------------------------------
class Concurrency(QuotaCase):
    """Two sessions appending at once near the limit: exactly as many fit as the limit
    leaves room for, never more (the check and the append are one step per user)."""

    def race(self, s, limits, size, rounds=15):
        a, b = self.raw(s), self.raw(s)
        for n in range(rounds):
            u, t = a.cmd('SETQUOTA "" (%s)' % limits(n))
            self.assertOK(t)
            msg = message("race%d" % n, size)
            cmd = b"APPEND %s {%d+}\r\n" % (b"INBOX" if n % 2 else b"Archive", size) + msg
            results = {}
            go = threading.Barrier(2)

            def send(c, tag):
                go.wait()
                c.send(tag.encode() + b" " + cmd + b"\r\n")
                results[tag] = c.until_tagged(tag)[1]
            ts = [threading.Thread(target=send, args=(c, "r%d%s" % (n, w)))
                  for c, w in ((a, "a"), (b, "b"))]
            for th in ts:
                th.start()
            for th in ts:
                th.join(20)
            ok = [t for t in results.values() if t.startswith(b"OK")]
            over = [t for t in results.values() if self.code(t) == "OVERQUOTA"]
            self.assertEqual((len(ok), len(over)), (1, 1), results)
        return a

    def test_message_race(self):
        s = self.server()
        # each round leaves room for exactly one more message
        a = self.race(s, lambda n: "MESSAGE %d" % (4 + n), 200)
        q = self.getquota(a)
        self.assertEqual(q["MESSAGE"][0], q["MESSAGE"][1])

    def test_storage_race(self):
        s = self.server()
        # 1800 octets used, then 1024 a round: room for exactly one more each round
        a = self.race(s, lambda n: "STORAGE %d" % (3 + n), 1024)
        q = self.getquota(a)
        self.assertEqual(q["STORAGE"][0], q["STORAGE"][1])

    def test_many_sessions(self):
        s = self.server("--quota", "test:MESSAGE=13")
        clients = [self.raw(s) for _ in range(6)]
        results = []
        lock = threading.Lock()

        def work(c, k):
            for i in range(4):
                t = c.append("Archive" if i % 2 else "INBOX", message("c%d-%d" % (k, i), 120),
                             plus=True)[1]
                with lock:
                    results.append(t)
        ts = [threading.Thread(target=work, args=(c, k)) for k, c in enumerate(clients)]
        for th in ts:
            th.start()
        for th in ts:
            th.join(30)
        self.assertEqual(len(results), 24)
        self.assertEqual(sum(t.startswith(b"OK") for t in results), 10)
        self.assertEqual(sum(self.code(t) == "OVERQUOTA" for t in results), 14)
        self.assertEqual(self.getquota(clients[0])["MESSAGE"], (13, 13))


# ---------------------------------------------------------------------------------------
class Program(QuotaCase):
    """--quota NAME:STORAGE=KIB[,MESSAGE=N]: limits are configuration."""

    def test_forms(self):
        s = self.server("--quota", "test:MESSAGE=8", "--quota=other:message=2,STORAGE=3")
        self.assertEqual(self.getquota(self.raw(s)), {"MESSAGE": (3, 8)})
        self.assertEqual(self.getquota(self.raw(s, login=("other", "secret"))),
                         {"STORAGE": (0, 3), "MESSAGE": (0, 2)})

    def test_later_replaces(self):
        s = self.server("--quota", "test:MESSAGE=8", "--quota", "test:STORAGE=9")
        self.assertEqual(self.getquota(self.raw(s)), {"STORAGE": (2, 9)})

    def test_malformed(self):
        for spec in ("test", "test:", ":STORAGE=1", "test:STORAGE", "test:STORAGE=x",
                     "test:STORAGE=-1", "test:FOO=1", "test:STORAGE=1,",
                     "test:STORAGE=1,STORAGE=2"):
            p = self.spawn("-p", "0", *self.users, "--quota", spec, stdin=None)
            p.wait(timeout=10)
            self.assertEqual(p.returncode, 2, spec)
            self.assertIn("--quota wants NAME:STORAGE=KIB[,MESSAGE=N]", p.err(), spec)

    def test_unknown_user(self):
        p = self.spawn("-p", "0", *self.users, "--quota", "nobody:STORAGE=1", stdin=None)
        p.wait(timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no such user: nobody", p.err())

    def test_reset_keeps_limits(self):
        """SIGHUP puts the fixtures back, and keeps the limits (configuration)."""
        s = self.server("--quota", "test:MESSAGE=4")
        r = self.raw(s)
        self.setquota(r, "MESSAGE 6")
        self.assertOK(r.append("INBOX", message("x", 10))[1])
        self.assertEqual(self.getquota(r), {"MESSAGE": (4, 6)})
        s.proc.send_signal(signal.SIGHUP)
        self.assertEqual(s.proc.stdout.readline(), b"imapmem: reset\n")
        self.assertEqual(self.getquota(r), {"MESSAGE": (3, 6)})
