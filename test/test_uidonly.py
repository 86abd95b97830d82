"""UIDONLY (RFC 9586, sections 3 to 3.6; ENABLE is RFC 5161), through raw connections.

Written from the RFC before the server implements it.  The fixture (INBOX, written by setUp):

 seq  uid  flags
  1    10  \\Seen
  2    20  (unseen: a session without UIDONLY gets [UNSEEN 2] at SELECT)
  3    30  \\Seen
  4    40  \\Seen
  5    50  \\Seen
 Archive: empty.  UIDVALIDITY 1 (the harness's --uidvalidity 1).

Once UIDONLY is enabled (3): no message sequence number in any response (no `* n FETCH`,
no `* n EXPUNGE`, no [UNSEEN n]); FETCH, STORE, SEARCH, COPY and MOVE are BAD (3.2), and a
command with message numbers is BAD [UIDREQUIRED] (3, 3.5); UID FETCH/UID STORE answer
UIDFETCH (3.3); expunges are VANISHED without (EARLIER) (3.4, RFC 7162 3.2.10.2); EXISTS
and RECENT are unchanged (3.6).

Not tested (left open or outside 3-3.6): whether UIDFETCH carries a UID item that was not
asked for; COPYUID after UID COPY (a SHOULD); whether `*` in a UID set counts as a message
sequence number (3 says `"*"` may not be used, but in a UID set it is the highest UID, not a
message number); QRESYNC (3.7).
"""
import re

from wire import (ServerCase, capabilities, codes, expand_set, fetches, responses, split_units,
                  status_parts, upper, vanished, write_mbox)

UIDS = [10, 20, 30, 40, 50]
SEEN = {10, 30, 40, 50}


def inbox_text():
    out = []
    for n, uid in enumerate(UIDS, 1):
        out.append("\n".join([
            "From sender@example.com Mon Jan %02d 10:00:00 2024" % n,
            "From: Sender <sender@example.com>",
            "To: Test <test@example.com>",
            "Subject: message %d" % n,
            "Date: Mon, %d Jan 2024 10:00:00 +0000" % n,
            "Message-ID: <u%d@uidonly.example>" % uid,
            "Status: %s" % ("RO" if uid in SEEN else "O"),
            "X-UID: %d" % uid,
            "",
            "Body of message %d." % n]) + "\n")
    return "\n".join(out)


NEW = b"From: Other <other@example.com>\r\nSubject: new\r\n\r\nHello.\r\n"
MSN = re.compile(rb"^\* \d+ (FETCH|EXPUNGE)\b", re.M | re.I)


def vanished_uids(untagged):
    """The UIDs of the `* VANISHED` responses (none may carry EARLIER here)."""
    out = []
    for earlier, uids in vanished(untagged):
        assert not earlier, "VANISHED (EARLIER) for an expunge: %r" % untagged
        out += uids
    return sorted(out)


class Base(ServerCase):

    def setUp(self):
        self.dir = self.tempdir()
        write_mbox(self.dir, "INBOX.mbox", inbox_text())
        write_mbox(self.dir, "Archive.mbox", "")
        self.srv = None

    def capabilities(self, r):
        return capabilities(r.ok("CAPABILITY"))

    def session(self, enable=True, select="INBOX", need=("UIDONLY", "ENABLE")):
        """A logged-in session (UIDONLY enabled unless enable=False), INBOX selected."""
        if self.srv is None:
            self.srv = self.start_or_fail(self.dir)
        r = self.raw(self.srv)
        have = self.capabilities(r)
        missing = [c for c in need if c not in have]
        self.assertFalse(missing, "capability %s not advertised; the server has: %s"
                         % (" ".join(missing), " ".join(sorted(have))))
        if enable:
            untagged = self.ok(r, "ENABLE UIDONLY")
            self.assertIn(["ENABLED", "UIDONLY"], [[upper(x) for x in e]
                                                   for e in responses(untagged, "ENABLED")])
        r.select_untagged = b""
        if select:
            r.select_untagged = self.ok(r, "SELECT INBOX") if enable else r.ok("SELECT INBOX")
        return r

    def ok(self, r, command, tag=None):
        untagged, tagged = r.cmd(command, tag=tag)
        self.assertTrue(tagged.startswith(b"OK"), "%s -> %r (untagged %r)"
                        % (command, tagged, untagged[:300]))
        self.no_msn(untagged, command)
        return untagged

    def no_msn(self, untagged, what=""):
        """RFC 9586 3: the server MUST NOT return message sequence numbers in any response."""
        self.assertIsNone(MSN.search(untagged), "%s: a message number in %r" % (what, untagged))
        self.assertNotIn(b"[UNSEEN ", untagged.upper(), what)

    def uidrequired(self, r, command, code=True):
        """RFC 9586 3: tagged BAD, with [UIDREQUIRED] when message numbers were used."""
        untagged, tagged = r.cmd(command)
        self.assertTrue(tagged.startswith(b"BAD"), "%s -> %r" % (command, tagged))
        if code:
            self.assertEqual(status_parts(tagged)[1], ["UIDREQUIRED"], "%s -> %r"
                             % (command, tagged))
        self.no_msn(untagged, command)
        self.assertEqual(responses(untagged, "UIDFETCH") + responses(untagged, "SEARCH"), [],
                         untagged)
        return tagged

    def flags(self, r, uid):
        f = fetches(self.ok(r, "UID FETCH %d (FLAGS)" % uid), "UIDFETCH")
        self.assertIn(uid, f, "a UIDFETCH for %d" % uid)
        return {x.lower() for x in f[uid]["FLAGS"]}

    def search(self, r, criteria):
        found = responses(self.ok(r, "UID SEARCH " + criteria), "SEARCH")
        self.assertEqual(len(found), 1)
        return sorted(found[0][1:])


class EnableTest(Base):

    def test_capability_uidonly_and_enable(self):
        """RFC 9586 3 (UIDONLY), 3.1 (it is enabled with ENABLE, RFC 5161)."""
        self.session(enable=False, select=None)

    def test_example_enable_uidonly(self):
        """RFC 9586 3.1 example; RFC 5161 3.1: a successful ENABLE MUST send ENABLED."""
        r = self.session(enable=False, select=None)
        untagged, tagged = r.cmd("ENABLE UIDONLY", tag="01")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(untagged, b"* ENABLED UIDONLY\r\n")

    def test_enable_does_not_change_capability(self):
        """RFC 5161 3.1: CAPABILITY after ENABLE MUST list the same capabilities."""
        r = self.session(enable=False, select=None)
        before = self.capabilities(r)
        self.ok(r, "ENABLE UIDONLY")
        self.assertEqual(self.capabilities(r), before)

    def test_enable_unknown_extension_is_ignored(self):
        """RFC 5161 3.1: an unknown argument MUST be ignored."""
        r = self.session(enable=False, select=None)
        untagged = self.ok(r, "ENABLE X-NO-SUCH-THING UIDONLY")
        self.assertEqual(untagged, b"* ENABLED UIDONLY\r\n")

    def test_uidonly_belongs_to_the_session(self):
        """RFC 9586 3.1: it is enabled by the client, per connection; another session keeps
        message numbers."""
        r = self.session()
        plain = self.session(enable=False)
        f = fetches(plain.ok("FETCH 2 (UID)"))
        self.assertEqual(f[2]["UID"], 20)
        self.ok(r, "UID STORE 30 +FLAGS (\\Flagged)")
        self.assertRegex(plain.ok("NOOP"), rb"\* 3 FETCH \(")


class SelectedTest(Base):

    def test_select_has_no_unseen_code_but_exists(self):
        """RFC 9586 3 (no message numbers, so no [UNSEEN n]) and 3.6 (EXISTS, RECENT stay)."""
        plain = self.session(enable=False)
        self.assertIn(b"[UNSEEN 2]", plain.select_untagged.upper())
        r = self.session()
        self.no_msn(r.select_untagged, "SELECT")
        self.assertIn(b"* 5 EXISTS", r.select_untagged)
        self.assertRegex(r.select_untagged, rb"\* \d+ RECENT")
        self.no_msn(self.ok(r, "EXAMINE INBOX"), "EXAMINE")

    def test_example_fetch_is_bad_uidrequired(self):
        """RFC 9586 3 example (07 FETCH ... -> BAD [UIDREQUIRED]) and 3.2."""
        r = self.session()
        untagged, tagged = r.cmd("FETCH 1:3 (UID FLAGS)", tag="07")
        self.assertTrue(tagged.startswith(b"BAD [UIDREQUIRED]"), tagged)
        self.assertEqual(untagged, b"")

    def test_fetch_star_is_bad_uidrequired(self):
        """RFC 9586 3: no message sequence numbers, including "*"."""
        r = self.session()
        self.uidrequired(r, "FETCH * (FLAGS)")
        self.uidrequired(r, "FETCH 1 BODY.PEEK[]")

    def test_store_is_bad_and_changes_nothing(self):
        """RFC 9586 3.2."""
        r = self.session()
        self.uidrequired(r, "STORE 2 +FLAGS (\\Flagged)")
        self.uidrequired(r, "STORE 1:* +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(self.flags(r, 20), set())
        self.assertEqual(self.search(r, "DELETED"), [])

    def test_search_is_bad(self):
        """RFC 9586 3.2: SEARCH MUST be BAD (UIDREQUIRED where it names message numbers)."""
        r = self.session()
        self.uidrequired(r, "SEARCH ALL", code=False)
        self.uidrequired(r, "SEARCH UNSEEN", code=False)
        self.uidrequired(r, "SEARCH 1:2")

    def test_copy_is_bad_and_copies_nothing(self):
        """RFC 9586 3.2."""
        r = self.session()
        self.uidrequired(r, "COPY 1 Archive")
        self.uidrequired(r, "COPY 1:* Archive")
        st = responses(self.ok(r, "STATUS Archive (MESSAGES)"), "STATUS")
        self.assertEqual(st[0][2], ["MESSAGES", 0])

    def test_move_is_bad_and_moves_nothing(self):
        """RFC 9586 3.2."""
        r = self.session(need=("UIDONLY", "ENABLE", "MOVE"))
        self.uidrequired(r, "MOVE 1 Archive")
        self.assertEqual(self.search(r, "ALL"), UIDS)

    def test_uid_search_with_message_numbers_is_bad(self):
        """RFC 9586 3.5: the <sequence set> criterion of UID SEARCH is BAD (with
        UIDREQUIRED, 3), wherever it appears in the program."""
        r = self.session()
        for criteria in ("1:3", "2", "NOT 2", "OR 1 SEEN", "SEEN 1:*", "UID 10:20 3"):
            self.uidrequired(r, "UID SEARCH " + criteria)

    def test_uid_search_works(self):
        """RFC 9586 3.5: ALL and UID <sequence set> instead."""
        r = self.session()
        self.assertEqual(self.search(r, "ALL"), UIDS)
        self.assertEqual(self.search(r, "UID 20:40 SEEN"), [30, 40])
        self.assertEqual(self.search(r, "UNSEEN"), [20])

    def test_saved_result_is_not_message_numbers(self):
        """RFC 5182 with RFC 9586 3.5: "$" names the messages a search saved, not message
        numbers, so UID SEARCH $ and UID FETCH $ stay allowed."""
        r = self.session(need=("UIDONLY", "ENABLE", "SEARCHRES"))
        self.ok(r, "UID SEARCH RETURN (SAVE) UID 20:40 SEEN")
        self.assertEqual(self.search(r, "$"), [30, 40])
        self.assertEqual(sorted(fetches(self.ok(r, "UID FETCH $ (FLAGS)"), "UIDFETCH")), [30, 40])

    def test_example_uid_fetch_answers_uidfetch(self):
        """RFC 9586 3.3, example 10: UIDFETCH responses, the UID first."""
        r = self.session()
        untagged = self.ok(r, "UID FETCH 15:45 (FLAGS)", tag="10")
        lines = [u for u in split_units(untagged)]
        self.assertEqual(len(lines), 3, untagged)
        for line in lines:
            self.assertRegex(line, rb"^\* \d+ UIDFETCH \(")
        f = fetches(untagged, "UIDFETCH")
        self.assertEqual(sorted(f), [20, 30, 40])
        self.assertEqual({x.lower() for x in f[20]["FLAGS"]}, set())
        self.assertEqual({x.lower() for x in f[30]["FLAGS"]}, {"\\seen"})

    def test_example_uid_fetch_with_uid_item(self):
        """RFC 9586 3.3, example 11: a UID item, when asked for, repeats the UID."""
        r = self.session()
        f = fetches(self.ok(r, "UID FETCH 10:50 (UID FLAGS)", tag="11"), "UIDFETCH")
        self.assertEqual(sorted(f), UIDS)
        for uid, items in f.items():
            self.assertEqual(items["UID"], uid)

    def test_uid_fetch_that_sets_seen(self):
        """RFC 9586 3.3: every FETCH response of UID FETCH is a UIDFETCH, the flag update for
        the implicit \\Seen too."""
        r = self.session()
        f = fetches(self.ok(r, "UID FETCH 20 (BODY[TEXT])"), "UIDFETCH")
        self.assertEqual(bytes(f[20]["BODY[TEXT]"]), b"Body of message 2.\r\n")
        self.assertIn("\\seen", self.flags(r, 20))

    def test_uid_store_answers_uidfetch(self):
        """RFC 9586 3.3."""
        r = self.session()
        untagged = self.ok(r, "UID STORE 30 +FLAGS (\\Flagged)")
        f = fetches(untagged, "UIDFETCH")
        self.assertEqual(list(f), [30], untagged)
        self.assertEqual({x.lower() for x in f[30]["FLAGS"]}, {"\\seen", "\\flagged"})
        self.assertEqual(responses(self.ok(r, "UID STORE 40 +FLAGS.SILENT (\\Flagged)"),
                                   "UIDFETCH"), [])

    def test_example_expunge_answers_vanished(self):
        """RFC 9586 3.4 example (12 EXPUNGE -> * VANISHED ...)."""
        r = self.session()
        self.ok(r, "UID STORE 20,40 +FLAGS.SILENT (\\Deleted)")
        untagged = self.ok(r, "EXPUNGE", tag="12")
        self.assertEqual(vanished_uids(untagged), [20, 40])
        self.assertEqual(self.search(r, "ALL"), [10, 30, 50])

    def test_uid_expunge_answers_vanished(self):
        """RFC 9586 3.4 (UID EXPUNGE, RFC 4315)."""
        r = self.session(need=("UIDONLY", "ENABLE", "UIDPLUS"))
        self.ok(r, "UID STORE 10:50 +FLAGS.SILENT (\\Deleted)")
        untagged = self.ok(r, "UID EXPUNGE 30:40")
        self.assertEqual(vanished_uids(untagged), [30, 40])
        self.assertEqual(self.search(r, "ALL"), [10, 20, 50])

    def test_example_uid_move(self):
        """RFC 9586 3.6 example (15 UID move): VANISHED for the moved message (COPYUID, a
        SHOULD, is checked when sent)."""
        r = self.session(need=("UIDONLY", "ENABLE", "MOVE", "UIDPLUS"))
        untagged = self.ok(r, 'UID move 30 "Archive"', tag="15")
        c = codes(untagged)
        if "COPYUID" in c:                  # a SHOULD (3.6, RFC 6851 4.3)
            self.assertEqual(expand_set(c["COPYUID"][1]), [30])
        self.assertEqual(vanished_uids(untagged), [30])
        self.assertEqual(self.search(r, "ALL"), [10, 20, 40, 50])
        st = responses(self.ok(r, "STATUS Archive (MESSAGES)"), "STATUS")
        self.assertEqual(st[0][2], ["MESSAGES", 1])

    def test_uid_copy_works(self):
        """RFC 9586 3.2: UID COPY instead of COPY."""
        r = self.session()
        self.ok(r, "UID COPY 10:20 Archive")
        st = responses(self.ok(r, "STATUS Archive (MESSAGES)"), "STATUS")
        self.assertEqual(st[0][2], ["MESSAGES", 2])


class OtherSessionTest(Base):

    def test_flag_change_is_announced_as_uidfetch(self):
        """RFC 9586 3.6: flag changes come as UIDFETCH."""
        r = self.session()
        other = self.session(enable=False)
        other.ok("STORE 2 +FLAGS (\\Answered)")
        untagged = self.ok(r, "NOOP")
        f = fetches(untagged, "UIDFETCH")
        self.assertEqual(list(f), [20], untagged)
        self.assertEqual({x.lower() for x in f[20]["FLAGS"]}, {"\\answered"})

    def test_expunge_is_announced_as_vanished(self):
        """RFC 9586 3.6: expunges by others come as VANISHED (without EARLIER)."""
        r = self.session()
        other = self.session(enable=False)
        other.ok("STORE 1,5 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")
        untagged = self.ok(r, "NOOP")
        self.assertEqual(vanished_uids(untagged), [10, 50])
        self.assertEqual(self.search(r, "ALL"), [20, 30, 40])

    def test_new_message_is_announced_with_exists(self):
        """RFC 9586 3.6: EXISTS and RECENT are not affected."""
        r = self.session()
        other = self.session(enable=False, select=None)
        untagged, tagged = other.cmd("APPEND INBOX {%d+}\r\n%s" % (len(NEW), NEW.decode()))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        untagged = self.ok(r, "NOOP")
        self.assertIn(b"* 6 EXISTS", untagged)
        self.assertEqual(self.search(r, "ALL"), UIDS + [51])

    def test_idle_announces_uidfetch_and_vanished(self):
        """RFC 9586 3.6 during IDLE (RFC 2177)."""
        r = self.session(need=("UIDONLY", "ENABLE", "IDLE"))
        other = self.session(enable=False)
        r.send(b"i1 IDLE\r\n")
        self.assertTrue(r.readline().startswith(b"+"))
        other.ok("STORE 3 +FLAGS (\\Flagged)")
        other.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")
        got = b""
        while b"VANISHED" not in got.upper():
            got += r.read_response_line()
        r.send(b"DONE\r\n")
        untagged, tagged = r.until_tagged("i1")
        got += untagged
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.no_msn(got, "IDLE")
        self.assertIn(30, fetches(got, "UIDFETCH"))
        self.assertEqual(vanished_uids(got), [40])
