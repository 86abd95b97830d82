"""Mailbox lists: LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE and
CREATE-SPECIAL-USE (RFC 6154), STATUS=SIZE (RFC 8438) and STATUS DELETED (RFC 9051 6.3.11),
through raw connections, organised by RFC section, with each RFC's own examples.

Every fixture is a folder built by tree(): NAME.mbox files (with messages where counts
matter), folders without an mbox of their own (\\Noselect levels), a .subscriptions file and,
for explicit roles, a .special-use file.  Attributes the RFC examples show and imapmem does
not keep (\\Marked, \\NoInferiors) are left out of comparisons; the child flags are
compared only where a test is about them, since imapmem sends them on every LIST while
CHILDREN is on (RFC 5258 4: a server MAY).

Choices where the RFCs leave room, as README "Mailbox lists" documents them:
  - \\NonExistent comes without \\Noselect (it implies it, RFC 5258 3.4), as Dovecot;
  - a name that does not meet the selection criteria is shown with CHILDINFO only when a
    descendant that meets them matches no pattern (RFC 5258 3.5's SHOULD, as Dovecot and
    imaptest's listext), so RFC 5258 example 9's second listing has no foo2 or baz2;
  - special-use attributes only when asked for (RETURN (SPECIAL-USE) or the SPECIAL-USE
    selection option): a plain LIST is the same as before these extensions.
"""
import os
import re
import signal
import subprocess
import unittest

from wire import (ServerCase, capabilities, name_of, parse, read_line, run, upper,
                  write_mbox)

IGNORED = {"\\marked", "\\unmarked", "\\noinferiors"}
CHILD = {"\\haschildren", "\\hasnochildren"}


def message(n, seen=False, deleted=False, size_pad=0):
    status = "Status: RO\n" if seen else "Status: O\n"
    xstatus = "X-Status: D\n" if deleted else ""
    return ("From a@example.org Mon Jan  1 00:00:%02d 2024\nFrom: a@example.org\n"
            "Subject: message %d\n%s%s\nbody %d%s\n\n" % (n, n, status, xstatus, n, "x" * size_pad))


def tree(d, mailboxes, subs=(), special=None, messages=None):
    """Fixture folder d: each name in mailboxes is an mbox (messages[name] holds its text,
    else empty); a name ending in '/' is a folder only (a \\Noselect level)."""
    messages = messages or {}
    for name in mailboxes:
        if name.endswith("/"):
            os.makedirs(os.path.join(d, name), exist_ok=True)
        else:
            write_mbox(d, name + ".mbox", messages.get(name, ""))
    if subs:
        write_mbox(d, ".subscriptions", "".join(s + "\n" for s in subs))
    if special is not None:
        write_mbox(d, ".special-use", special)
    return d


class ListCase(ServerCase):
    def serve(self, mailboxes, subs=(), special=None, messages=None, args=()):
        d = tree(self.tempdir(), mailboxes, subs, special, messages)
        self.dir = d
        s = self.start_or_fail(*(list(args) + ["--uidvalidity", "1", d]))
        return s, self.raw(s)

    def rows(self, r, command, ok=True):
        """[(kind, name, attrs (lower-case set), childinfo list or None | status dict)] in
        the order sent."""
        u, t = r.cmd(command)
        if ok:
            self.assertOK(t, command)
        out = []
        for resp in parse(u):
            kind = upper(resp[0]) if resp and isinstance(resp[0], str) else None
            if kind == "LIST":
                self.assertEqual(resp[2], b"/", resp)
                ext = None
                if len(resp) > 4:
                    self.assertEqual(len(resp), 5, resp)
                    self.assertEqual(upper(name_of(resp[4][0])), "CHILDINFO", resp)
                    ext = [upper(name_of(x)) for x in resp[4][1]]
                out.append(("LIST", name_of(resp[3]), {a.lower() for a in resp[1]}, ext))
            elif kind == "STATUS":
                d = resp[2]
                out.append(("STATUS", name_of(resp[1]),
                            dict(zip([k.upper() for k in d[0::2]], d[1::2])), None))
        return out

    def listed(self, r, command, children=False):
        """{name: (attrs, childinfo)} of a LIST, each name once; child flags dropped unless
        children."""
        out = {}
        for kind, name, attrs, ext in self.rows(r, command):
            if kind != "LIST":
                continue
            self.assertNotIn(name, out, "listed twice: %r" % name)
            self.assertFalse({"\\haschildren", "\\hasnochildren"} <= attrs, attrs)
            drop = IGNORED if children else IGNORED | CHILD
            out[name] = (attrs - drop, ext)
        return out

    @staticmethod
    def want(*rows):
        """{name: (attrs, childinfo)} from ("name", "\\A \\B", childinfo?) rows."""
        out = {}
        for row in rows:
            name, attrs = row[0], row[1]
            ext = row[2] if len(row) > 2 else None
            out[name] = ({a.lower() for a in attrs.split()}, ext)
        return out


SUB = ["SUBSCRIBED"]

# RFC 5258 5, example 1's hierarchy (INBOX for "inbox"), subscribed as in example 2
FOOD = ["INBOX", "Fruit", "Fruit/Apple", "Fruit/Banana", "Tofu", "Vegetable",
        "Vegetable/Broccoli", "Vegetable/Corn"]
FOOD_SUBS = ["INBOX", "Fruit/Banana", "Fruit/Peach", "Vegetable", "Vegetable/Broccoli"]


class Rfc5258Section3Command(ListCase):
    """RFC 5258 3: the extended command: options, several patterns, errors."""

    def setUp(self):
        self.srv, self.r = self.serve(FOOD, FOOD_SUBS)

    def test_capability(self):
        u, t = self.r.cmd("CAPABILITY")
        caps = capabilities(u)
        for c in ("LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE",
                  "STATUS=SIZE"):
            self.assertIn(c, caps)

    def test_several_patterns_one_response_each(self):
        # 3: a name matching several patterns is listed once
        got = self.listed(self.r, 'LIST "" ("Fruit/*" "*Apple" "Tofu")')
        self.assertEqual(sorted(got), ["Fruit/Apple", "Fruit/Banana", "Tofu"])

    def test_empty_pattern_is_no_special_request(self):
        # 3: an extended LIST never treats "" as the request for the delimiter
        self.assertEqual(self.rows(self.r, 'LIST () "" ""'), [])
        self.assertEqual(self.rows(self.r, 'LIST "" "" RETURN ()'), [])
        self.assertEqual(sorted(self.listed(self.r, 'LIST "" ("" "Tofu")')), ["Tofu"])
        # a plain LIST still does (RFC 3501 6.3.8)
        self.assertEqual(self.rows(self.r, 'LIST "" ""'), [("LIST", "", {"\\noselect"}, None)])

    def test_reference_is_prefixed(self):
        got = self.listed(self.r, 'LIST (SUBSCRIBED) "Fruit/" "%"')
        self.assertEqual(got, self.want(("Fruit/Banana", "\\Subscribed"),
                                        ("Fruit/Peach", "\\Subscribed \\NonExistent")))

    def test_unknown_options_are_bad(self):
        # 3: "A server MUST respond to options it does not recognize with a BAD response"
        for cmd in ('LIST (imaptest) "" ""', 'LIST "" "" RETURN (imaptest)',
                    'LIST (SUBSCRIBED "" *', 'LIST "" * RETURN', 'LIST "" ("a" "b"',
                    'LIST "" * RETURN (STATUS)', 'LIST "" * RETURN (STATUS (BOGUS))',
                    'LIST "" * EXTRA (CHILDREN)'):
            u, t = self.r.cmd(cmd)
            self.assertBAD(t, cmd)
        self.still_serving(self.r, self.srv)

    def test_recursivematch_needs_a_base_option(self):
        # 3.1: (RECURSIVEMATCH) and (REMOTE RECURSIVEMATCH) are BAD
        for cmd in ('LIST (RECURSIVEMATCH) "" *', 'LIST (recursivematch remote) "" *',
                    'LIST (SPECIAL-USE RECURSIVEMATCH) "" *'):
            u, t = self.r.cmd(cmd)
            self.assertBAD(t, cmd)

    def test_option_given_twice_counts_once(self):
        a = self.rows(self.r, 'LIST (SUBSCRIBED SUBSCRIBED) "" * RETURN (CHILDREN CHILDREN)')
        b = self.rows(self.r, 'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)')
        self.assertEqual(a, b)
        self.assertTrue(a)

    def test_plain_list_and_lsub_unchanged(self):
        # a client that asks nothing new gets the bytes of RFC 3501 6.3.8/6.3.9, no roles
        u, t = self.r.cmd('LIST "" %')
        self.assertEqual(u, b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
                            b'* LIST (\\HasChildren) "/" "Fruit"\r\n'
                            b'* LIST (\\HasNoChildren) "/" "Tofu"\r\n'
                            b'* LIST (\\HasChildren) "/" "Vegetable"\r\n')
        u, t = self.r.cmd('LSUB "" *')
        self.assertEqual(u, b'* LSUB () "/" "INBOX"\r\n* LSUB () "/" "Fruit/Banana"\r\n'
                            b'* LSUB (\\Noselect) "/" "Fruit/Peach"\r\n'
                            b'* LSUB () "/" "Vegetable"\r\n* LSUB () "/" "Vegetable/Broccoli"\r\n')

    def test_switched_off(self):
        s, r = self.serve(FOOD, FOOD_SUBS, args=["--capability", "-LIST-EXTENDED"])
        u, t = r.cmd("CAPABILITY")
        caps = capabilities(u)
        self.assertNotIn("LIST-EXTENDED", caps)
        self.assertNotIn("LIST-STATUS", caps)    # both need LIST-EXTENDED
        self.assertNotIn("SPECIAL-USE", caps)
        u, t = r.cmd('LIST (SUBSCRIBED) "" *')
        self.assertBAD(t)
        u, t = r.cmd('LIST "" ("INBOX" "Tofu")')
        self.assertBAD(t)
        self.assertIn("LIST-STATUS", s.stderr())   # each one pulled along is reported


class Rfc5258Section5Examples(ListCase):
    """RFC 5258 5: the examples, on example 1's hierarchy."""

    def setUp(self):
        self.srv, self.r = self.serve(FOOD, FOOD_SUBS)

    def test_example_1(self):
        self.assertEqual(sorted(self.listed(self.r, 'LIST "" "*"')), sorted(FOOD))

    def test_example_2_subscribed(self):
        got = self.listed(self.r, 'LIST (SUBSCRIBED) "" "*"')
        self.assertEqual(got, self.want(
            ("INBOX", "\\Subscribed"), ("Fruit/Banana", "\\Subscribed"),
            ("Fruit/Peach", "\\Subscribed \\NonExistent"), ("Vegetable", "\\Subscribed"),
            ("Vegetable/Broccoli", "\\Subscribed")))

    def test_example_3_children(self):
        got = self.listed(self.r, 'LIST () "" "%" RETURN (CHILDREN)', children=True)
        self.assertEqual(got, self.want(
            ("INBOX", "\\HasNoChildren"), ("Fruit", "\\HasChildren"),
            ("Tofu", "\\HasNoChildren"), ("Vegetable", "\\HasChildren")))

    def test_example_4_remote(self):
        # no remote mailboxes here: REMOTE changes nothing (3.1)
        a = self.listed(self.r, 'LIST (REMOTE) "" "%" RETURN (CHILDREN)', children=True)
        b = self.listed(self.r, 'LIST () "" "%" RETURN (CHILDREN)', children=True)
        self.assertEqual(a, b)

    def test_example_5_remote_subscribed(self):
        a = self.listed(self.r, 'LIST (REMOTE SUBSCRIBED) "" "*"')
        self.assertEqual(a, self.listed(self.r, 'LIST (SUBSCRIBED) "" "*"'))
        self.assertIn("Fruit/Peach", a)

    def test_example_6_return_subscribed(self):
        got = self.listed(self.r, 'LIST (REMOTE) "" "*" RETURN (SUBSCRIBED)')
        self.assertEqual(got, self.want(
            ("INBOX", "\\Subscribed"), ("Fruit", ""), ("Fruit/Apple", ""),
            ("Fruit/Banana", "\\Subscribed"), ("Tofu", ""), ("Vegetable", "\\Subscribed"),
            ("Vegetable/Broccoli", "\\Subscribed"), ("Vegetable/Corn", "")))
        self.assertNotIn("Fruit/Peach", got)   # return options add no names (3)

    def test_example_7_several_patterns(self):
        s, r = self.serve(["INBOX", "Drafts", "Sent/March2004", "Sent/December2003",
                           "Sent/August2004", "Other"])
        got = self.listed(r, 'LIST "" ("INBOX" "Drafts" "Sent/%")')
        self.assertEqual(sorted(got), ["Drafts", "INBOX", "Sent/August2004",
                                       "Sent/December2003", "Sent/March2004"])


class Rfc5258Example8ChildInfo(ListCase):
    """RFC 5258 5, example 8: \\HasChildren against CHILDINFO."""
    BOXES = ["INBOX", "Foo", "Foo/Bar", "Foo/Baz", "Moo"]

    def test_children(self):
        s, r = self.serve(self.BOXES)
        got = self.listed(r, 'LIST "" "%" RETURN (CHILDREN)', children=True)
        self.assertEqual(got, self.want(("INBOX", "\\HasNoChildren"),
                                        ("Foo", "\\HasChildren"), ("Moo", "\\HasNoChildren")))

    def test_a_only_foo_baz_subscribed(self):
        s, r = self.serve(self.BOXES, ["Foo/Baz"])
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED) "" "*"'),
                         self.want(("Foo/Baz", "\\Subscribed")))
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED) "" "%"'), {})
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'),
                         self.want(("Foo", "", SUB)))

    def test_a1_foo_subscribed_too(self):
        s, r = self.serve(self.BOXES, ["Foo/Baz", "Foo"])
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'),
                         self.want(("Foo", "\\Subscribed", SUB)))

    def test_a2_foo_does_not_exist(self):
        # imapmem always has the parent levels of its mailboxes; a subscribed name below
        # one that does not exist plays Foo's part
        s, r = self.serve(self.BOXES, ["Goo/Baz"])
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'),
                         self.want(("Goo", "\\NonExistent", SUB)))

    def test_b_nothing_subscribed(self):
        s, r = self.serve(self.BOXES)
        self.assertEqual(self.rows(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"'), [])

    def test_c_foo_and_moo_subscribed(self):
        s, r = self.serve(self.BOXES, ["Foo", "Moo"])
        got = self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)',
                          children=True)
        self.assertEqual(got, self.want(("Foo", "\\HasChildren \\Subscribed"),
                                        ("Moo", "\\HasNoChildren \\Subscribed")))


class Rfc5258Example9And10(ListCase):
    """RFC 5258 5, examples 9 (CHILDINFO whether or not children match) and 10."""
    BOXES = ["INBOX", "foo2", "foo2/bar1", "foo2/bar2", "baz2", "baz2/bar2", "baz2/bar22",
             "baz2/bar222", "eps2", "eps2/mamba", "qux2/bar2"]
    SUBS = ["foo2/bar1", "foo2/bar2", "baz2/bar2", "baz2/bar22", "baz2/bar222", "eps2",
            "eps2/mamba", "qux2/bar2"]

    def test_example_9(self):
        s, r = self.serve(self.BOXES, self.SUBS)
        self.assertEqual(sorted(self.listed(r, 'LIST (SUBSCRIBED) "" "*"')), sorted(self.SUBS))
        got = self.listed(r, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"')
        self.assertEqual(got, self.want(
            ("foo2", "", SUB), ("foo2/bar2", "\\Subscribed"), ("baz2/bar2", "\\Subscribed"),
            ("baz2/bar22", "\\Subscribed"), ("baz2/bar222", "\\Subscribed"),
            ("eps2", "\\Subscribed", SUB), ("qux2/bar2", "\\Subscribed")))
        # "*": every subscribed child matches, so foo2 and baz2 are left out (3.5's
        # SHOULD; the RFC's listing shows them); eps2 meets the criteria and keeps CHILDINFO
        got = self.listed(r, 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*"')
        want = self.want(*[(n, "\\Subscribed") for n in self.SUBS])
        want["eps2"] = ({"\\subscribed"}, SUB)
        self.assertEqual(got, want)

    def test_example_10(self):
        s, r = self.serve(["INBOX", "foo"], ["foo/bar"])
        self.assertEqual(self.listed(r, 'LIST "" ("foo" "foo/*")'), self.want(("foo", "")))
        self.assertEqual(self.listed(r, 'LIST (SUBSCRIBED) "" "foo/*"'),
                         self.want(("foo/bar", "\\Subscribed \\NonExistent")))
        got = self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" foo RETURN (CHILDREN)',
                          children=True)
        self.assertEqual(got, self.want(("foo", "\\HasNoChildren", SUB)))

    def test_section_3_5_table(self):
        # exists / meets the criteria / has a child that does (the child matches no pattern)
        s, r = self.serve(["INBOX", "A", "A/x", "B", "D/x"], ["A", "A/x", "B", "C", "D/x",
                                                             "E/x", "F", "F/x", "G/x", "G"])
        got = self.listed(r, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
        self.assertEqual(got, self.want(
            ("A", "\\Subscribed", SUB),          # yes yes yes
            ("B", "\\Subscribed"),               # yes yes no
            ("C", "\\Subscribed \\NonExistent"),  # no yes no
            ("D", "\\Noselect", SUB),            # yes (a \\Noselect level) no yes
            ("E", "\\NonExistent", SUB),         # no no yes
            ("F", "\\Subscribed \\NonExistent", SUB),   # no yes yes
            ("G", "\\Subscribed \\NonExistent", SUB)))  # the same, subscribed after G/x
        self.assertNotIn("\\noselect", got["C"][0])   # \\NonExistent implies it (3.4)


class Rfc5258Section4Children(ListCase):
    """RFC 5258 4: the CHILDREN return option, also with the CHILDREN capability off."""

    def test_children_with_capability_off(self):
        s, r = self.serve(FOOD, args=["--capability", "-CHILDREN"])
        u, t = r.cmd('LIST "" %')
        self.assertNotIn(b"Children", u)      # a plain LIST as before
        got = self.listed(r, 'LIST "" % RETURN (CHILDREN)', children=True)
        self.assertEqual(got["Fruit"][0], {"\\haschildren"})
        self.assertEqual(got["Tofu"][0], {"\\hasnochildren"})
        got = self.listed(r, 'LIST "" %', children=True)
        self.assertEqual(got["Fruit"][0], set())


TEXTS = {"INBOX": message(1) + message(2, seen=True) + message(3),
         "foo": message(4, seen=True) + message(5, deleted=True, seen=True)}


class Rfc5819ListStatus(ListCase):
    """RFC 5819 2 and 3: STATUS after the LIST line of each selectable mailbox listed."""

    def test_example_a01(self):
        s, r = self.serve(["INBOX", "foo", "bar/"], messages=TEXTS)
        got = self.rows(r, 'LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
        self.assertEqual([(k, n) for k, n, _, _ in got],
                         [("LIST", "INBOX"), ("STATUS", "INBOX"), ("LIST", "bar"),
                          ("LIST", "foo"), ("STATUS", "foo")])
        self.assertEqual(got[1][2], {"MESSAGES": 3, "UNSEEN": 2})
        self.assertEqual(got[4][2], {"MESSAGES": 2, "UNSEEN": 0})
        self.assertIn("\\noselect", got[2][2])   # "bar" isn't selectable: no STATUS

    def test_example_a02(self):
        s, r = self.serve(["INBOX", "foo", "foo/x"], ["INBOX", "foo/x"], messages=TEXTS)
        got = self.rows(r, 'LIST (SUBSCRIBED RECURSIVEMATCH)"" % RETURN (STATUS (MESSAGES))'
                        .replace(')""', ') ""'))
        self.assertEqual([(k, n) for k, n, _, _ in got],
                         [("LIST", "INBOX"), ("STATUS", "INBOX"), ("LIST", "foo")])
        self.assertEqual(got[1][2], {"MESSAGES": 3})
        self.assertEqual(got[2][3], SUB)   # foo: CHILDINFO, and no STATUS

    def test_items_and_nonexistent(self):
        s, r = self.serve(["INBOX", "foo"], ["gone"], messages=TEXTS)
        got = self.rows(r, 'LIST (SUBSCRIBED) "" * RETURN (STATUS (MESSAGES UIDNEXT '
                           'UIDVALIDITY RECENT SIZE DELETED HIGHESTMODSEQ))')
        self.assertEqual([(k, n) for k, n, _, _ in got], [("LIST", "gone")])
        got = self.rows(r, 'LIST "" foo RETURN (STATUS (MESSAGES DELETED SIZE UIDNEXT))')
        self.assertEqual(got[1][2], self.status_of(r, "foo"))

    def status_of(self, r, box):
        return self.status(r, box, "MESSAGES DELETED SIZE UIDNEXT")

    def test_status_option_needs_list_status(self):
        s, r = self.serve(["INBOX"], args=["--capability", "-LIST-STATUS"])
        u, t = r.cmd('LIST "" * RETURN (STATUS (MESSAGES))')
        self.assertBAD(t)
        u, t = r.cmd("CAPABILITY")
        self.assertIn("LIST-EXTENDED", capabilities(u))
        self.assertNotIn("LIST-STATUS", capabilities(u))


ROLE_NAMES = {"Sent": "\\sent", "Sent Messages": "\\sent", "Sent Items": "\\sent",
              "Sent Mail": "\\sent", "Drafts": "\\drafts", "Draft": "\\drafts",
              "Trash": "\\trash", "Deleted Messages": "\\trash", "Deleted Items": "\\trash",
              "Bin": "\\trash", "Junk": "\\junk", "Spam": "\\junk", "Junk Email": "\\junk",
              "Junk E-mail": "\\junk", "Bulk Mail": "\\junk", "Archive": "\\archive",
              "Archives": "\\archive"}
ROLES = {"\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"}


class Rfc6154Section2Attributes(ListCase):
    """RFC 6154 2: the special-use attributes, from names or an explicit setting."""

    def roles(self, r, command='LIST "" * RETURN (SPECIAL-USE)'):
        return {n: a & ROLES for n, (a, _) in self.listed(r, command).items()}

    def test_roles_from_names(self):
        names = list(ROLE_NAMES) + ["INBOX", "sent", "TRASH", "Work/", "Work/Sent", "Other",
                                    "Starred", "All Mail"]
        s, r = self.serve(names)
        got = self.roles(r)
        for name, role in ROLE_NAMES.items():
            self.assertEqual(got[name], {role}, name)
        self.assertEqual(got["sent"], {"\\sent"})      # any letter case
        self.assertEqual(got["TRASH"], {"\\trash"})
        for name in ("INBOX", "Work/Sent", "Other", "Starred", "All Mail"):
            self.assertEqual(got[name], set(), name)   # top level only; \\All never guessed

    def test_only_when_asked(self):
        s, r = self.serve(["INBOX", "Sent", "Trash"])
        for cmd in ('LIST "" *', 'LIST () "" *', 'LIST "" * RETURN (CHILDREN)',
                    'LIST (SUBSCRIBED) "" *'):
            u, t = r.cmd(cmd)
            self.assertOK(t)
            self.assertNotIn(b"\\Sent", u, cmd)

    def test_example_5_1_and_5_2(self):
        s, r = self.serve(["INBOX", "ToDo", "Projects", "Projects/Q1", "SentMail", "MyDrafts",
                           "Trash"], special="SentMail:\\Sent\nMyDrafts:\\Drafts\n")
        got = self.listed(r, 'LIST "" "%" RETURN (SPECIAL-USE)')
        self.assertEqual(got, self.want(("INBOX", ""), ("ToDo", ""), ("Projects", ""),
                                        ("SentMail", "\\Sent"), ("MyDrafts", "\\Drafts"),
                                        ("Trash", "\\Trash")))
        got = self.listed(r, 'LIST (SPECIAL-USE) "" "*"')
        self.assertEqual(got, self.want(("SentMail", "\\Sent"), ("MyDrafts", "\\Drafts"),
                                        ("Trash", "\\Trash")))
        # the 5.1 response, for the plain LIST of a server that sends roles: imapmem
        # sends them only when asked, so its plain LIST is unchanged
        u, t = r.cmd('LIST "" "%"')
        self.assertIn(b'* LIST (\\HasNoChildren) "/" "SentMail"\r\n', u)

    def test_special_use_with_subscribed(self):
        s, r = self.serve(["INBOX", "Sent", "Trash", "Other"], ["Sent", "Other"])
        got = self.listed(r, 'LIST (SUBSCRIBED SPECIAL-USE) "" *')
        self.assertEqual(got, self.want(("Sent", "\\Sent \\Subscribed")))

    def test_fixture_file_gives_any_role_or_none(self):
        special = ("# comment\n\nSent:\nOutbox:\\Sent \\archive\nAll:\\All\nINBOX:\\Flagged\n"
                   "Work/Stuff:\\Junk\n")
        s, r = self.serve(["INBOX", "Sent", "Outbox", "All", "Work/", "Work/Stuff"],
                          special=special)
        got = self.roles(r)
        self.assertEqual(got, {"INBOX": {"\\flagged"}, "All": {"\\all"}, "Outbox":
                               {"\\sent", "\\archive"}, "Sent": set(), "Work": set(),
                               "Work/Stuff": {"\\junk"}})

    def test_command_line_switch(self):
        s, r = self.serve(["INBOX", "Sent", "Box"],
                          args=["--special-use", "Box:\\Trash", "--special-use", "Sent:"])
        self.assertEqual(self.roles(r), {"INBOX": set(), "Sent": set(), "Box": {"\\trash"}})

    def test_bad_settings_refused(self):
        d = tree(self.tempdir(), ["INBOX", "Sent"])
        for special, args, why in (
                ("Nope:\\Sent\n", [], ".special-use:1: no mailbox Nope"),
                ("Sent:\\Sent\nSent:\\Bogus\n", [], ".special-use:2: not a special-use"),
                ("Sent \\Sent\n", [], ".special-use:1: expected MAILBOX:ROLES"),
                (None, ["--special-use", "Sent"], "--special-use wants MAILBOX:ROLES"),
                (None, ["--special-use", "Sent:\\Foo"], "not a special-use attribute: \\Foo"),
                (None, ["--special-use", "Nope:\\Sent"], "no such mailbox: Nope")):
            path = os.path.join(d, ".special-use")
            if special is None:
                if os.path.exists(path):
                    os.unlink(path)
            else:
                write_mbox(d, ".special-use", special)
            p = run(["-p", "0"] + args + [d])
            self.assertEqual(p.returncode, 2, (special, args, p.stderr))
            self.assertIn(why, p.stderr.decode(), (special, args))

    def test_roles_survive_save_reset_and_rename(self):
        d = tree(self.tempdir(), ["INBOX", "Sent", "Box"], special="Sent:\nBox:\\Archive\n")
        save = self.tempdir()
        s2 = self.start_or_fail("--save", save, "--special-use", "Sent:\\Junk", d)
        r2 = self.raw(s2)
        r2.ok("CREATE Made (USE (\\Drafts))")
        r2.ok("CREATE Later")
        r2.ok("RENAME Box Shelf")                    # an explicit role follows the mailbox
        buf = bytearray()
        s2.proc.send_signal(signal.SIGUSR1)
        self.assertEqual(read_line(s2.proc.stdout.fileno(), buf),
                         b"imapmem: saved %s\n" % save.encode())
        with open(os.path.join(save, ".special-use")) as f:
            self.assertEqual([l for l in f.read().splitlines() if not l.startswith("#")],
                             ["Sent:\\Junk", "Shelf:\\Archive", "Made:\\Drafts"])
        s3 = self.start_or_fail(save)
        got = self.roles(self.raw(s3))
        self.assertEqual(got, {"INBOX": set(), "Sent": {"\\junk"}, "Shelf": {"\\archive"},
                               "Made": {"\\drafts"}, "Later": set()})
        # SIGHUP puts back the fixtures, with the roles they were given
        s2.proc.send_signal(signal.SIGHUP)
        self.assertEqual(read_line(s2.proc.stdout.fileno(), buf), b"imapmem: reset\n")
        got = self.roles(self.raw(s2))
        self.assertEqual(got, {"INBOX": set(), "Sent": {"\\junk"}, "Box": {"\\archive"}})

    def test_switched_off(self):
        s, r = self.serve(["INBOX", "Sent"], args=["--capability", "-SPECIAL-USE"])
        u, t = r.cmd("CAPABILITY")
        self.assertNotIn("SPECIAL-USE", capabilities(u))
        self.assertIn("CREATE-SPECIAL-USE", capabilities(u))
        for cmd in ('LIST (SPECIAL-USE) "" *', 'LIST "" * RETURN (SPECIAL-USE)'):
            u, t = r.cmd(cmd)
            self.assertBAD(t, cmd)


class Rfc6154Section3Create(ListCase):
    """RFC 6154 3 and 5.3: CREATE ... (USE (...)) and [USEATTR]."""

    def roles(self, r):
        return {n: a & ROLES for n, (a, _) in
                self.listed(r, 'LIST "" * RETURN (SPECIAL-USE)').items()}

    def test_example_5_3(self):
        s, r = self.serve(["INBOX"])
        u, t = r.cmd("CREATE MySpecial (USE (\\Drafts \\Sent))")
        self.assertOK(t)
        u, t = r.cmd("CREATE Everything (USE (\\All))")
        self.assertNO(t)
        self.assertCode(t, "USEATTR")
        self.assertEqual(self.roles(r), {"INBOX": set(), "MySpecial": {"\\drafts", "\\sent"}})

    def test_refused_roles_create_nothing(self):
        s, r = self.serve(["INBOX"])
        for use in ("\\Flagged", "\\All", "\\Foo", "\\Sent \\Foo"):
            u, t = r.cmd("CREATE Box (USE (%s))" % use)
            self.assertNO(t, use)
            self.assertCode(t, "USEATTR")
        self.assertEqual(list(self.roles(r)), ["INBOX"])

    def test_use_overrides_the_name(self):
        s, r = self.serve(["INBOX"])
        r.ok("CREATE Trash (USE ())")
        r.ok('CREATE "Sent Items" (use (\\junk))')
        r.ok("CREATE Drafts")
        r.ok("CREATE Deep/Box (USE (\\Archive))")
        r.ok("CREATE Old (USE (\\Junk))")
        r.ok("CREATE Old/Child")
        r.ok("DELETE Old")                 # a \\Noselect level now: no role
        self.assertEqual(self.roles(r), {"INBOX": set(), "Trash": set(),
                                         "Sent Items": {"\\junk"}, "Drafts": {"\\drafts"},
                                         "Deep": set(), "Deep/Box": {"\\archive"},
                                         "Old": set(), "Old/Child": set()})
        r.ok("CREATE Old")                 # made again: the roles of its CREATE, here none
        self.assertEqual(self.roles(r)["Old"], set())

    def test_syntax(self):
        s, r = self.serve(["INBOX"])
        for cmd in ("CREATE Box (USE (\\Sent)", "CREATE Box (FOO (\\Sent))",
                    "CREATE Box (USE \\Sent)", "CREATE Box (USE (Sent))", "CREATE Box ()",
                    "CREATE Box (USE (\\Sent) )"):
            u, t = r.cmd(cmd)
            self.assertBAD(t, cmd)
        self.assertEqual(list(self.roles(r)), ["INBOX"])

    def test_switched_off(self):
        s, r = self.serve(["INBOX"], args=["--capability", "-CREATE-SPECIAL-USE"])
        u, t = r.cmd("CAPABILITY")
        self.assertNotIn("CREATE-SPECIAL-USE", capabilities(u))
        u, t = r.cmd("CREATE Box (USE (\\Sent))")
        self.assertBAD(t)
        r.ok("CREATE Box")


class Rfc8438StatusSize(ListCase):
    """RFC 8438 3: STATUS SIZE, at least the sum of RFC822.SIZE (here: equal)."""

    def test_size(self):
        texts = {"INBOX": message(1) + message(2, size_pad=5000), "frop": ""}
        s, r = self.serve(["INBOX", "frop"], messages=texts)
        st = self.status(r, "INBOX", "MESSAGES SIZE UIDNEXT")
        r.ok("EXAMINE INBOX")
        u, t = r.cmd("FETCH 1:* (RFC822.SIZE)")
        sizes = [int(x) for x in re.findall(rb"RFC822\.SIZE (\d+)", u)]
        self.assertEqual(st, {"MESSAGES": 2, "SIZE": sum(sizes), "UIDNEXT": 3})
        self.assertGreater(st["SIZE"], 5000)
        self.assertEqual(self.status(r, "frop", "SIZE"), {"SIZE": 0})
        r.ok("CLOSE")
        r.append("frop", b"Subject: x\r\n\r\nhello\r\n")
        self.assertEqual(self.status(r, "frop", "SIZE"), {"SIZE": 21})

    def test_switched_off(self):
        s, r = self.serve(["INBOX"], args=["--capability", "-STATUS=SIZE"])
        u, t = r.cmd("STATUS INBOX (SIZE)")
        self.assertBAD(t)
        self.assertNotIn("STATUS=SIZE", capabilities(r.cmd("CAPABILITY")[0]))


class Rfc9051StatusDeleted(ListCase):
    """RFC 9051 6.3.11: STATUS DELETED, the number of messages with \\Deleted."""

    def test_deleted(self):
        s, r = self.serve(["INBOX"], messages={"INBOX": message(1) + message(2, deleted=True) +
                                               message(3)})
        self.assertEqual(self.status(r, "INBOX", "DELETED MESSAGES"),
                         {"DELETED": 1, "MESSAGES": 3})
        r.ok("SELECT INBOX")
        r.ok("STORE 1 +FLAGS (\\Deleted)")
        self.assertEqual(self.status(r, "INBOX", "DELETED"), {"DELETED": 2})
        r.ok("EXPUNGE")
        self.assertEqual(self.status(r, "INBOX", "DELETED MESSAGES"),
                         {"DELETED": 0, "MESSAGES": 1})


LIST_WORDS = ["(", ")", "()", '""', "%", "*", "Fruit/*", "SUBSCRIBED", "REMOTE",
              "RECURSIVEMATCH", "SPECIAL-USE", "RETURN", "CHILDREN", "STATUS", "(MESSAGES",
              "SIZE", "DELETED)", "HIGHESTMODSEQ", "{1}", "{0+}", "USE", "(USE", "(\\Sent",
              "\\All))", "\\", "Box", "INBOX", "x" * 300]


class ParserRobustness(ListCase):
    """Random extended LISTs and CREATEs: a clear BAD, NO or OK each, never a crash, and the
    server serves a normal client afterwards (ServerCase fails on sanitizer reports)."""

    def test_random_list_and_create(self):
        import random
        rnd = random.Random(20261204)
        s, r = self.serve(FOOD, FOOD_SUBS, special="Tofu:\\Junk\n")
        for i in range(300):
            words = [rnd.choice(LIST_WORDS) for _ in range(rnd.randint(1, 9))]
            verb = rnd.choice(["LIST", "LIST", "CREATE", "STATUS INBOX"])
            line = (verb + " " + " ".join(words)).replace("{1}", '"x"').replace("{0+}", '""')
            u, t = r.cmd(line)
            self.assertTrue(t[:2] in (b"OK", b"NO", b"BA"), (line, t))
        self.still_serving(r, s)
        self.assertIn("Tofu", self.listed(r, 'LIST (SPECIAL-USE) "" *'))


NODE_SCRIPT = r"""
const { ImapFlow } = require(process.argv[1] + '/imapflow');
(async () => {
  const c = new ImapFlow({host: '127.0.0.1', port: +process.argv[2], secure: false,
                          auth: {user: 'test', pass: 'test'}, logger: false});
  await c.connect();
  const list = await c.list();
  console.log(JSON.stringify(list.map(m => [m.path, m.specialUse || null,
                                            m.specialUseSource || null])));
  await c.logout();
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


class ImapflowReadsRoles(ListCase):
    """A real client: imapflow's list() reports the roles LIST-EXTENDED gives it."""

    def test_imapflow_special_use(self):
        try:
            from test_qresync_client import MODULES, install
        except ImportError as e:
            self.skipTest("test_qresync_client: %s" % e)
        why = install()
        if why:
            self.skipTest(why)
        s, r = self.serve(["INBOX", "Outgoing", "Sent", "Papers"],
                          special="Outgoing:\\Sent\nSent:\nPapers:\\Archive\n")
        p = subprocess.run(["node", "-e", NODE_SCRIPT, MODULES, str(s.port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        import json
        got = {path: (use, src) for path, use, src in json.loads(p.stdout)}
        self.assertEqual(got["Outgoing"], ("\\Sent", "extension"))
        self.assertEqual(got["Papers"], ("\\Archive", "extension"))
        self.assertNotEqual(got["Sent"][1], "extension")   # the server gave it none


if __name__ == "__main__":
    unittest.main()
