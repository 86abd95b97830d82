"""NOTIFY (RFC 5465), by RFC section, with the RFC's own examples: one session asks to be
notified, another changes mailboxes, and the first hears of it without a command, in IDLE,
or before its next command's answer.
"""
import re
import threading
import time
import unittest

from wire import ServerCase, codes, fixture, parse, responses, status_parts

BASIC = fixture("basic.mbox")
QUIET = 0.3            # seconds to wait to be sure that nothing comes


def msg(subject, sender="alice@example.org"):
    return ("From: %s\r\nTo: bob@example.org\r\nSubject: %s\r\n\r\nhello\r\n"
            % (sender, subject)).encode()


def status_of(line):
    """(name, {ITEM: value}) of a `* STATUS` line."""
    r = parse(line)[0]
    name = r[1].decode() if isinstance(r[1], bytes) else str(r[1])
    items = r[2]
    return name, dict(zip([str(k).upper() for k in items[0::2]], items[1::2]))


class NotifyCase(ServerCase):
    def two(self, *args):
        """A server and two sessions of the same user: the watcher and the changer."""
        s = self.start(*(args or (BASIC,)))
        return self.raw(s), self.raw(s)

    def next_line(self, r, needle, timeout=5):
        lines, _ = r.read_until(lambda l: needle in l, timeout)
        return lines[-1]

    def nothing(self, r):
        self.assertEqual(r.pending(QUIET), b"")


class Section3_Command(NotifyCase):
    def test_capability_and_switch(self):
        r = self.raw(self.start(BASIC))
        self.assertIn(b" NOTIFY", r.ok("CAPABILITY"))
        r = self.raw(self.start(BASIC, "--capability", "-NOTIFY"))
        self.assertNotIn(b"NOTIFY", r.ok("CAPABILITY"))
        self.assertBAD(r.cmd("NOTIFY NONE")[1])

    def test_3_1_rfc_example(self):
        """The example of 3.1: STATUS for the Lists subtree, then a STATUS for a new message
        there, then EXISTS and FETCH with the asked attributes for one in INBOX."""
        a, b = self.two()
        for box in ("Lists", "Lists/Lemonade", "Lists/Im2000", "misc"):
            b.ok("CREATE " + box)
        b.append("Lists/Lemonade", msg("first"))
        u, t = a.cmd("notify set status (selected MessageNew (uid "
                     "body.peek[header.fields (from to subject)]) MessageExpunge) "
                     "(subtree Lists MessageNew)")
        self.assertOK(t)
        got = dict(status_of(l) for l in re.findall(rb"\* STATUS [^\r]*\r\n", u))
        self.assertEqual(set(got), {"Lists", "Lists/Lemonade", "Lists/Im2000"})
        self.assertEqual(got["Lists/Lemonade"]["MESSAGES"], 1)
        self.assertEqual(got["Lists/Lemonade"]["UIDNEXT"], 2)
        self.assertIn("UIDVALIDITY", got["Lists/Im2000"])
        n = responses(a.ok("select inbox"), "EXISTS")[0][0]
        b.append("Lists/Lemonade", msg("second"))
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertEqual((name, st["MESSAGES"], st["UIDNEXT"]), ("Lists/Lemonade", 2, 3))
        b.append("INBOX", msg("Re: good morning"))
        lines, _ = a.read_until(lambda l: b"FETCH" in l, 5)
        self.assertEqual(responses(b"".join(lines), "EXISTS")[0][0], n + 1)
        self.assertIn(b"* %d FETCH (UID %d BODY[HEADER.FIELDS (FROM TO SUBJECT)] {" % (n + 1, n + 1),
                      lines[-1].upper())
        self.assertIn(b"Subject: Re: good morning\r\n", lines[-1])
        # the client asks STATUS itself, then NOTIFY SET without STATUS: no STATUS comes
        a.ok("STATUS misc (UIDVALIDITY UIDNEXT MESSAGES)")
        u = a.ok("notify set (selected MessageNew (uid body.peek[header.fields "
                 "(from to subject)]) MessageExpunge) (subtree Lists MessageNew) "
                 "(mailboxes misc MessageNew)")
        self.assertNotIn(b"STATUS", u)

    def test_3_1_status_items_per_event(self):
        """3.1: MessageNew -> MESSAGES UIDNEXT UIDVALIDITY; MessageExpunge -> MESSAGES;
        FlagChange with CONDSTORE -> UIDVALIDITY HIGHESTMODSEQ (imaptest's notify script)."""
        a, _ = self.two()
        a.ok("CREATE box")
        for events, items in (("MessageExpunge", {"MESSAGES"}),
                              ("MessageNew", {"MESSAGES", "UIDNEXT", "UIDVALIDITY"}),
                              ("FlagChange", {"UIDVALIDITY", "HIGHESTMODSEQ"})):
            u = a.ok("NOTIFY SET STATUS (mailboxes box (%s))" % events)
            st = responses(u, "STATUS")
            self.assertEqual(len(st), 1, u)
            self.assertTrue(items <= set(status_of(u)[1]), (events, u))
        self.assertNotIn(b"STATUS", a.ok("NOTIFY SET (mailboxes box (MessageNew MessageExpunge))"))

    def test_3_1_no_status_for_the_selected_mailbox(self):
        a, _ = self.two()
        a.ok("SELECT INBOX")
        u = a.ok("NOTIFY SET STATUS (personal (MessageNew MessageExpunge))")
        self.assertNotIn(b'STATUS "INBOX"', u)

    def test_3_1_set_is_an_implicit_noop(self):
        a, b = self.two()
        a.ok("SELECT INBOX")
        b.ok("SELECT INBOX")
        b.append("INBOX", msg("new"))
        u = a.ok("NOTIFY SET (selected (MessageNew MessageExpunge))")
        self.assertEqual(responses(u, "EXISTS")[0][0], 7)

    def test_3_1_unsupported_events_are_no_badevent(self):
        a, _ = self.two()
        for ev in ("AnnotationChange", "MailboxMetadataChange", "ServerMetadataChange"):
            u, t = a.cmd("NOTIFY SET (personal (MessageNew MessageExpunge %s))" % ev)
            self.assertNO(t)
            events = self.assertCode(t, "BADEVENT")[0]
            self.assertEqual({e.lower() for e in events},
                             {"messagenew", "messageexpunge", "flagchange", "mailboxname",
                              "subscriptionchange"})

    def test_3_1_bad_arguments(self):
        a, _ = self.two()
        for args in ("", "SET", "SET ()", "SET (personal)", "SET (personal (Bogus))",
                     "SET (nowhere (MessageNew))", "SET (mailboxes (MessageNew))",
                     "SET (personal (MessageNew) extra", "NONE extra", "MAYBE",
                     "SET (personal (MessageNew (UID)))",          # 8: fetch-atts only SELECTED
                     "SET (selected (MessageNew (NOSUCH)))",
                     "SET (selected (MailboxName))",               # 6.1: message events only
                     "SET (selected (MessageNew)) (selected-delayed (MessageNew))"):  # 6.1
            self.assertBAD(a.cmd("NOTIFY " + args)[1], args)
        self.assertOK(a.cmd("NOTIFY SET (mailboxes nosuch (MessageNew MessageExpunge))")[1])
        self.assertOK(a.cmd("NOTIFY SET (personal NONE)")[1])

    def test_3_1_notify_none_stops(self):
        a, b = self.two()
        a.ok("NOTIFY SET (personal (MessageNew MessageExpunge))")
        a.ok("NOTIFY NONE")
        b.append("INBOX", msg("quiet"))
        self.nothing(a)


class Section4_Idle(NotifyCase):
    def test_idle_sends_the_notify_events_of_other_mailboxes(self):
        a, b = self.two()
        b.ok("CREATE other")
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (selected (MessageNew (UID) MessageExpunge)) "
             "(personal (MessageNew MessageExpunge MailboxName))")
        a.send("i IDLE\r\n")
        self.assertTrue(a.readline().startswith(b"+"))
        b.append("other", msg("one"))
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertEqual((name, st["MESSAGES"]), ("other", 1))
        b.ok("CREATE made")
        self.assertIn(b'"made"', self.next_line(a, b"* LIST"))
        b.append("INBOX", msg("two"))
        self.assertIn(b"FETCH (UID 7)", self.next_line(a, b"FETCH"))
        a.send("DONE\r\n")
        self.assertEqual(a.until_tagged("i")[1][:2], b"OK")


class Section5_Events(NotifyCase):
    def test_5_1_flag_change_selected_and_other(self):
        a, b = self.two()
        b.ok("CREATE other")
        b.append("other", msg("x"))
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) "
             "(mailboxes other (MessageNew MessageExpunge FlagChange))")
        b.ok("SELECT INBOX")
        b.ok("STORE 3 +FLAGS ($Junk)")
        line = self.next_line(a, b"FETCH")      # 5.1: with UID and FLAGS
        self.assertIn(b"* 3 FETCH (UID 3 FLAGS (", line)
        self.assertIn(b"$Junk", line)
        b.ok("SELECT other")
        b.ok("STORE 1 +FLAGS (\\Seen)")        # without CONDSTORE: UNSEEN (5.1 MAY)
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertEqual((name, st.get("UNSEEN")), ("other", 0))
        a.ok("ENABLE CONDSTORE")
        b.ok("STORE 1 +FLAGS (\\Flagged)")     # with CONDSTORE: HIGHESTMODSEQ UIDVALIDITY
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertIn("HIGHESTMODSEQ", st)
        self.assertIn("UIDVALIDITY", st)

    def test_5_2_message_new_other_mailbox_and_not_for_own_append(self):
        a, b = self.two()
        b.ok("CREATE other")
        a.ok("NOTIFY SET (personal (MessageNew MessageExpunge))")
        b.append("other", msg("x"))
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertEqual((name, st["MESSAGES"], st["UIDNEXT"]), ("other", 1, 2))
        self.assertNotIn("HIGHESTMODSEQ", st)      # no CONDSTORE enabled
        a.append("other", msg("mine"))          # 5: not for this client's own change
        self.nothing(a)
        a.ok("ENABLE CONDSTORE")
        b.append("other", msg("y"))
        self.assertIn("HIGHESTMODSEQ", status_of(self.next_line(a, b"* STATUS"))[1])

    def test_5_3_expunge_selected_other_and_vanished(self):
        a, b = self.two()
        b.ok("CREATE other")
        b.append("other", msg("x"))
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (selected (MessageNew MessageExpunge)) (mailboxes other "
             "(MessageNew MessageExpunge))")
        b.ok("SELECT INBOX")
        b.ok("STORE 2 +FLAGS (\\Deleted)")
        b.ok("EXPUNGE")                        # the fixture's 5 is \\Deleted already
        self.next_line(a, b"* 2 EXPUNGE")
        b.ok("SELECT other")
        b.ok("STORE 1 +FLAGS (\\Deleted)")
        b.ok("EXPUNGE")
        name, st = status_of(self.next_line(a, b"* STATUS"))
        self.assertEqual((name, st["MESSAGES"]), ("other", 0))
        a.ok("ENABLE QRESYNC")
        a.ok("SELECT INBOX")
        b.ok("SELECT INBOX")
        b.ok("UID STORE 3 +FLAGS (\\Deleted)")
        b.ok("EXPUNGE")
        self.assertIn(b"* VANISHED 3", self.next_line(a, b"VANISHED"))

    def test_5_4_mailbox_name(self):
        a, b = self.two()
        a.ok("NOTIFY SET (personal (MailboxName))")
        b.ok("CREATE NewMailbox")
        self.assertEqual(self.next_line(a, b"LIST"), b'* LIST () "/" "NewMailbox"\r\n')
        b.ok("RENAME NewMailbox Renamed")
        self.assertEqual(self.next_line(a, b"LIST"),
                         b'* LIST () "/" "Renamed" ("OLDNAME" ("NewMailbox"))\r\n')
        b.ok("CREATE Renamed/child")
        self.next_line(a, b"child")
        b.ok("RENAME Renamed Again")          # children follow: one event (5.4)
        self.assertIn(b'"Again" ("OLDNAME" ("Renamed"))', self.next_line(a, b"LIST"))
        self.nothing(a)
        b.ok("DELETE Again/child")
        self.assertEqual(self.next_line(a, b"LIST"),
                         b'* LIST (\\NonExistent) "/" "Again/child"\r\n')
        a.ok("CREATE Mine")                   # 5: not for this client's own change
        self.nothing(a)

    def test_5_5_subscription_change(self):
        a, b = self.two()
        a.ok("NOTIFY SET (personal (SubscriptionChange))")
        b.ok("SUBSCRIBE INBOX")
        self.assertEqual(self.next_line(a, b"LIST"), b'* LIST (\\Subscribed) "/" "INBOX"\r\n')
        b.ok("UNSUBSCRIBE INBOX")
        self.assertEqual(self.next_line(a, b"LIST"), b'* LIST () "/" "INBOX"\r\n')

    def test_5_8_notification_overflow(self):
        a, b = self.two()
        limit = 1000
        b.send("".join("c%d CREATE box%d\r\n" % (i, i) for i in range(limit - 2)))
        b.until_tagged("c%d" % (limit - 3))
        a.ok("NOTIFY SET (personal (MessageNew MessageExpunge))")   # INBOX and 998: 999
        b.ok("CREATE one")
        self.nothing(a)
        b.ok("CREATE two")
        line = self.next_line(a, b"NOTIFICATIONOVERFLOW")
        self.assertTrue(line.startswith(b"* OK [NOTIFICATIONOVERFLOW]"), line)
        b.append("INBOX", msg("after"))         # now as after NOTIFY NONE
        self.nothing(a)
        t = a.cmd("NOTIFY SET (personal (MessageNew MessageExpunge))")[1]
        self.assertNO(t)
        self.assertCode(t, "NOTIFICATIONOVERFLOW")


class Section6_Filters(NotifyCase):
    def test_6_1_2_selected_delayed_holds_expunges(self):
        a, b = self.two()
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")
        b.ok("SELECT INBOX")
        b.append("INBOX", msg("new"))
        self.next_line(a, b"EXISTS")
        b.ok("STORE 1 +FLAGS (\\Deleted)")
        b.ok("EXPUNGE")
        time.sleep(QUIET)
        self.assertNotIn(b"EXPUNGE", a.pending(QUIET))
        a.buf = b""
        self.assertIn(b"* 1 EXPUNGE", a.ok("NOOP"))

    def test_6_1_selected_overrides_the_names(self):
        """6: SELECTED rules the selected mailbox's message events, even when it is named."""
        a, b = self.two()
        a.ok("SELECT INBOX")
        a.ok("NOTIFY SET (selected (MessageNew (UID) MessageExpunge)) "
             "(personal (MessageNew MessageExpunge FlagChange))")
        b.append("INBOX", msg("x"))
        lines, _ = a.read_until(lambda l: b"FETCH" in l, 5)
        self.assertNotIn(b"STATUS", b"".join(lines))

    def test_6_5_subtree_and_6_6_mailboxes_without_wildcards(self):
        a, b = self.two()
        for box in ("top", "top/sub", "topper", "other"):
            b.ok('CREATE "%s"' % box)
        a.ok('NOTIFY SET (subtree top (MessageNew MessageExpunge)) '
             '(mailboxes ("oth*" "%") (MessageNew MessageExpunge))')
        for box in ("topper", "top/sub", "other", "top"):
            b.append(box, msg(box))
        got = []
        while len(got) < 2:
            got.append(status_of(self.next_line(a, b"* STATUS"))[0])
        self.assertEqual(sorted(got), ["top", "top/sub"])   # one look may see both
        self.nothing(a)

    def test_6_4_subscribed_is_reevaluated(self):
        a, b = self.two()
        b.ok("CREATE later")
        a.ok("NOTIFY SET (subscribed (MessageNew MessageExpunge))")
        b.append("later", msg("1"))
        self.nothing(a)
        b.ok("SUBSCRIBE later")
        # a watches "later" from when it notices the subscription; a command of its own
        # makes sure it has before the next message comes
        a.ok("NOOP")
        b.append("later", msg("2"))
        self.assertEqual(status_of(self.next_line(a, b"* STATUS"))[0], "later")

    def test_6_rfc_example_two_groups_for_inbox(self):
        a, b = self.two()
        a.ok("notify set (mailboxes INBOX (Messagenew messageExpunge)) "
             "(personal (SubscriptionChange))")
        b.append("INBOX", msg("x"))
        self.assertEqual(status_of(self.next_line(a, b"* STATUS"))[0], "INBOX")
        b.ok("SUBSCRIBE INBOX")
        self.assertIn(b"\\Subscribed", self.next_line(a, b"LIST"))


class Concurrency(NotifyCase):
    def test_many_writers_one_watcher_sees_the_final_count(self):
        """Writers in threads append to four mailboxes; the watcher's last STATUS of each
        says what STATUS says (under TSan in make test)."""
        s = self.start(BASIC)
        a = self.raw(s)
        boxes = ["w%d" % i for i in range(4)]
        for box in boxes:
            a.ok("CREATE " + box)
        a.ok("NOTIFY SET (personal (MessageNew MessageExpunge))")
        writers = [self.raw(s) for _ in boxes]

        def write(r, box):
            for i in range(15):
                r.append(box, msg("%s-%d" % (box, i)))
        threads = [threading.Thread(target=write, args=(w, b)) for w, b in zip(writers, boxes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        last = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(last.get(b) != 15 for b in boxes):
            line = a.poll(1)
            if line and line.startswith(b"* STATUS"):
                name, st = status_of(line)
                last[name] = st["MESSAGES"]
        self.assertEqual(last, {b: 15 for b in boxes})
        self.still_serving(a, s)


if __name__ == "__main__":
    unittest.main()
