"""Wire tests for namespaces (RFC 2342), organised by its sections, with the other users'
mailboxes ("Other Users/NAME/...") and the shared tree ("Shared/...", --shared).

The fixtures are those of test_acl.py: fixtures/acl/alice (alice's mailboxes and the .acl
that lets bob and carol into some of them) and fixtures/acl/shared (the shared tree).
"""
import unittest

from wire import (ServerCase, capabilities, exists, fetches, fixture, quote, responses, run,
                  name_of)

ALICE = fixture("acl", "alice")
SHARED = fixture("acl", "shared")
USERS = ("-u", "alice:apw:" + ALICE, "-u", "bob:bpw", "-u", "carol:cpw", "-u", "dave:dpw")
PASSWORDS = {"alice": "apw", "bob": "bpw", "carol": "cpw", "dave": "dpw"}


def namespace_of(data):
    ns = responses(data, "NAMESPACE")
    assert len(ns) == 1, data
    return ns[0][1:]


class NamespaceCase(ServerCase):
    ARGS = USERS + ("--shared", SHARED)

    def login(self, s, who):
        return self.raw(s, login=(who, PASSWORDS[who]))


# ========================================================================================
# 4: the capability, and the states NAMESPACE is valid in

class Requirements(NamespaceCase):
    def test_capability(self):
        r = self.login(self.start(), "bob")
        self.assertIn("NAMESPACE", capabilities(r.ok("CAPABILITY")))

    def test_authenticated_and_selected_only(self):
        s = self.start()
        r = self.raw(s, login=None)
        self.assertBAD(r.cmd("NAMESPACE")[1])
        r.ok("LOGIN bob bpw")
        self.assertOK(r.cmd("NAMESPACE")[1])
        r.ok("SELECT INBOX")
        self.assertOK(r.cmd("NAMESPACE")[1])

    def test_switched_off(self):
        """--capability -NAMESPACE: no NAMESPACE command, the mailboxes stay reachable."""
        s = self.start(*(self.ARGS + ("--capability", "-NAMESPACE")))
        r = self.login(s, "bob")
        self.assertNotIn("NAMESPACE", capabilities(r.ok("CAPABILITY")))
        self.assertBAD(r.cmd("NAMESPACE")[1])
        self.assertEqual(exists(r.ok('EXAMINE "Other Users/alice/Team"')), 3)


# ========================================================================================
# 5: the NAMESPACE response and the names in each namespace

class Response(NamespaceCase):
    def test_three_parts(self):
        """Personal "", other users "Other Users/", shared "Shared/", all with "/"."""
        r = self.login(self.start(), "bob")
        u, t = r.cmd("NAMESPACE")
        self.assertOK(t)
        self.assertEqual(namespace_of(u), [[[b"", b"/"]], [[b"Other Users/", b"/"]],
                                           [[b"Shared/", b"/"]]])
        self.assertIn(b'* NAMESPACE (("" "/")) (("Other Users/" "/")) (("Shared/" "/"))', u)

    def test_example_5_3_public_folders(self):
        """Example 5.3's shared prefix, set with --namespace; names follow it."""
        s = self.start(*(self.ARGS + ("--namespace", "Other Users/,Public Folders/")))
        r = self.login(s, "bob")
        self.assertEqual(namespace_of(r.ok("NAMESPACE"))[2], [[b"Public Folders/", b"/"]])
        self.assertEqual(exists(r.ok('EXAMINE "Public Folders/News"')), 2)
        self.assertIn("Public Folders/News", self.list(r, "", "*"))
        self.assertNO(r.cmd('EXAMINE "Shared/News"')[1])

    def test_example_5_4_hash_prefixes(self):
        """Example 5.4-style "#" prefixes for both (a client that assumes #shared)."""
        s = self.start(*(self.ARGS + ("--namespace", "#users/,#shared/")))
        r = self.login(s, "bob")
        self.assertEqual(namespace_of(r.ok("NAMESPACE"))[1:],
                         [[[b"#users/", b"/"]], [[b"#shared/", b"/"]]])
        self.assertEqual(exists(r.ok('EXAMINE "#users/alice/Team"')), 3)
        self.assertEqual(exists(r.ok('EXAMINE "#shared/News"')), 2)
        self.assertEqual(set(self.list(r, "", "#users/%")), {"#users/alice"})

    def test_bad_prefixes_refused(self):
        for value in ("~,Shared/", "Other Users/,Other Users/", "Other Users/", "a/b/,Shared/",
                      "INBOX/,Shared/", "a*/,Shared/", ",Shared/"):
            p = run(["-p", "0", "--namespace", value])
            self.assertEqual(p.returncode, 2, value)
            self.assertIn(b"namespace", p.stderr.lower(), value)

    def test_example_5_7_list_other_users(self):
        """Example 5.7: LIST "" "Other Users/%" names only users who granted access."""
        s = self.start()
        for who, want in (("bob", {"Other Users/alice"}), ("dave", {"Other Users/alice"}),
                          ("alice", set())):
            got = self.list(self.login(s, who), "", "Other Users/%")
            self.assertEqual(set(got), want, who)
            for attrs in got.values():
                self.assertIn("\\noselect", attrs)

    def test_example_5_8_list_one_user(self):
        """Example 5.8: the user's name after the prefix lists that user's mailboxes."""
        r = self.login(self.start(), "bob")
        self.assertEqual(set(self.list(r, "", "Other Users/alice/%")),
                         {"Other Users/alice/Team", "Other Users/alice/Archive"})
        self.assertEqual(set(self.list(r, "Other Users/alice/", "*")),
                         {"Other Users/alice/Team", "Other Users/alice/Archive",
                          "Other Users/alice/Projects/Secret"})

    def test_top_level_shows_the_namespaces(self):
        r = self.login(self.start(), "bob")
        top = self.list(r, "", "%")
        self.assertEqual(set(top), {"INBOX", "Other Users", "Shared"})
        self.assertEqual(top["Shared"], {"\\noselect", "\\haschildren"})

    def test_own_mailboxes_have_their_own_names(self):
        r = self.login(self.start(), "alice")
        self.assertEqual(exists(r.ok("EXAMINE Team")), 3)
        u, t = r.cmd('EXAMINE "Other Users/alice/Team"')
        self.assertEqual(t, b"NO [NONEXISTENT] Mailbox does not exist: Other Users/alice/Team")

    def test_levels_are_not_mailboxes(self):
        r = self.login(self.start(), "bob")
        for name in ("Other Users", "Other Users/alice", "Shared", "Other Users/nobody"):
            self.assertCode(r.cmd("SELECT " + quote(name))[1], "NONEXISTENT")
            self.assertNO(r.cmd("CREATE " + quote(name))[1])

    def test_lsub_of_other_users_mailboxes(self):
        """A subscribed mailbox of another user is selectable in LSUB while it is visible."""
        s = self.start()
        r = self.login(s, "bob")
        r.ok('SUBSCRIBE "Other Users/alice/Team"')
        r.ok('SUBSCRIBE "Other Users/alice/Private"')
        r.ok('SUBSCRIBE "Shared/News"')
        got = self.list(r, "", "*", cmd="LSUB")
        self.assertEqual(got, {"Other Users/alice/Team": set(), "Shared/News": set(),
                               "Other Users/alice/Private": {"\\noselect"}})
        self.login(s, "alice").ok("SETACL Team bob -l")
        self.assertEqual(self.list(r, "", "Other Users/alice/Team", cmd="LSUB"),
                         {"Other Users/alice/Team": {"\\noselect"}})

    def test_status_in_other_namespaces(self):
        r = self.login(self.start(), "bob")
        self.assertEqual(self.status(r, "Other Users/alice/Team", "MESSAGES"), {"MESSAGES": 3})
        self.assertEqual(self.status(r, "Shared/News", "MESSAGES"), {"MESSAGES": 2})


# ========================================================================================
# The shared tree: --shared folders and files

class SharedTree(NamespaceCase):
    def test_an_mbox_file_is_the_shared_inbox(self):
        s = self.start(*(USERS + ("--shared", fixture("basic.mbox"))))
        r = self.login(s, "alice")
        # Nobody owns the shared tree: without an ACL nobody may see it.
        self.assertCode(r.cmd("EXAMINE Shared/INBOX")[1], "NONEXISTENT")
        self.assertEqual(set(self.list(r, "", "Shared/*")), set())

    def test_no_shared_tree(self):
        r = self.login(self.start(*USERS), "bob")
        self.assertEqual(set(self.list(r, "", "*")) - {"INBOX"},
                         {"Other Users", "Other Users/alice", "Other Users/alice/Team",
                          "Other Users/alice/Archive", "Other Users/alice/Projects/Secret"})

    def test_unreadable_shared_path(self):
        p = run(["-p", "0", "--shared", "/nonexistent/shared"])
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"/nonexistent/shared", p.stderr)


# ========================================================================================
# A real client browses another user's shared mailbox

class RealClient(NamespaceCase):
    def test_imaplib_browses(self):
        s = self.start()
        c = s.imap("bob", "bpw")
        typ, data = c.namespace()
        self.assertEqual(typ, "OK")
        self.assertIn(b'(("Other Users/" "/"))', data[0])
        typ, data = c.list('"Other Users/alice/"', "*")
        self.assertEqual(typ, "OK")
        names = [d.split(b' "/" ')[1] for d in data]
        self.assertIn(b'"Other Users/alice/Team"', names)
        typ, data = c.select('"Other Users/alice/Team"', readonly=True)
        self.assertEqual((typ, data), ("OK", [b"3"]))
        typ, data = c.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = [part[1] for part in data if isinstance(part, tuple)]
        self.assertEqual([x.strip() for x in subjects],
                         [b"Subject: Sprint plan", b"Subject: Release notes", b"Subject: Retro"])
        typ, data = c.myrights('"Other Users/alice/Team"')
        self.assertEqual(typ, "OK")
        c.close()
        typ, data = c.select('"Shared/News"', readonly=True)
        self.assertEqual((typ, data), ("OK", [b"2"]))
        c.logout()


if __name__ == "__main__":
    unittest.main()
