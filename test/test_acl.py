"""Wire tests for access control lists (RFC 4314), organised by its sections.

The fixtures: fixtures/acl/alice is alice's folder; its .acl gives bob "lrswi" and carol
"lr" on Team, bob "lr" on Projects/Secret (but nothing on Projects), "anyone" "lr" on
Archive less carol's "-carol lr"; Private is alice's alone. fixtures/acl/shared is the
shared tree (--shared): News for anyone "lr", Board for alice (everything) and bob "lrs",
Hidden for nobody.
"""
import os
import signal
import unittest

from wire import (ServerCase, capabilities, exists, fetches, fixture, flagset, numbers,
                  parse, quote, responses, run, name_of, status_parts, upper)

ALICE = fixture("acl", "alice")
SHARED = fixture("acl", "shared")
USERS = ("-u", "alice:apw:" + ALICE, "-u", "bob:bpw", "-u", "carol:cpw", "-u", "dave:dpw")
PASSWORDS = {"alice": "apw", "bob": "bpw", "carol": "cpw", "dave": "dpw"}
A = "Other Users/alice/"
MSG = "From: x@example.org\r\nSubject: appended\r\n\r\nbody\r\n"


def rights_of(value):
    """A rights string from a response as a set of letters."""
    return set(name_of(value))


def acl_of(data):
    """{identifier: set of rights} from the one ACL response in data."""
    acl = responses(data, "ACL")
    assert len(acl) == 1, data
    pairs = acl[0][2:]
    return {name_of(pairs[i]): rights_of(pairs[i + 1]) for i in range(0, len(pairs), 2)}


class AclCase(ServerCase):
    ARGS = USERS + ("--shared", SHARED)

    def login(self, s, who, select=None):
        return self.raw(s, login=(who, PASSWORDS[who]), select=select)

    def myrights(self, r, box):
        u, t = r.cmd("MYRIGHTS " + quote(box))
        self.assertOK(t, box)
        m = responses(u, "MYRIGHTS")
        self.assertEqual(name_of(m[0][1]), box)
        return rights_of(m[0][2])


# ========================================================================================
# 2 and 5.1.1: the capabilities

class Capabilities(AclCase):
    def test_acl_and_rights(self):
        """5.1.1: ACL, with RIGHTS= naming t, e, x and k."""
        r = self.login(self.start(), "bob")
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertIn("ACL", caps)
        rights = [c for c in caps if c.startswith("RIGHTS=")]
        self.assertEqual(len(rights), 1)
        self.assertEqual(set(rights[0][7:].lower()), set("texk"))

    def test_one_switch(self):
        """--capability -ACL takes RIGHTS=texk too, and the commands with it."""
        s = self.start(*(self.ARGS + ("--capability", "-ACL")))
        r = self.login(s, "alice")
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertFalse({"ACL"} & caps or [c for c in caps if c.startswith("RIGHTS=")])
        for cmd in ("GETACL Team", "SETACL Team bob l", "DELETEACL Team bob",
                    "LISTRIGHTS Team bob", "MYRIGHTS Team"):
            self.assertBAD(r.cmd(cmd)[1], cmd)


# ========================================================================================
# 2.1.1: the virtual rights "c" and "d"

class VirtualRights(AclCase):
    def test_rfc_example_d(self):
        """2.1.1: "d" given expands to "et", and "d" comes back with them."""
        r = self.login(self.start(), "alice")
        r.ok("SETACL Team David lrswida")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["David"], set("lrswideta"))

    def test_rfc_example_c(self):
        """2.1.1: "k" set: "c" is shown too."""
        r = self.login(self.start(), "alice")
        r.ok("SETACL Team Byron lrswikda")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["Byron"], set("lrswikcdeta"))

    def test_member_alone_shows_virtual(self):
        """Any one member brings its virtual right: "x" shows "c", "t" shows "d"."""
        r = self.login(self.start(), "alice")
        r.ok("SETACL Team ed x")
        r.ok("SETACL Team fay t")
        acl = acl_of(r.ok("GETACL Team"))
        self.assertEqual(acl["ed"], set("xc"))
        self.assertEqual(acl["fay"], set("td"))

    def test_myrights_and_listrights_show_them(self):
        s = self.start()
        self.assertEqual(self.myrights(self.login(s, "bob"), A + "Team"), set("lrswi"))
        r = self.login(s, "alice")
        self.assertEqual(self.myrights(r, "Team"), set("lrswipkxteacd"))
        optional = [name_of(x) for x in responses(r.ok("LISTRIGHTS Team bob"), "LISTRIGHTS")[0][4:]]
        self.assertIn("c", optional)
        self.assertIn("d", optional)


# ========================================================================================
# 3.1 SETACL

class SetAcl(AclCase):
    def test_rfc_example(self):
        """3.1: "+cda" adds to what Chris had; uppercase and unknown rights are BAD."""
        r = self.login(self.start(), "alice")
        r.ok("SETACL Team Chris lrswi")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["Chris"], set("lrswi"))
        r.ok("SETACL Team Chris +cda")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["Chris"], set("lrswicdakxet"))
        u, t = r.cmd("SETACL Team John lrQswicda")
        self.assertBAD(t)
        self.assertIn(b"Uppercase", t)
        u, t = r.cmd("SETACL Team John lrqswicda")
        self.assertBAD(t)
        self.assertIn(b"q right", t)
        self.assertNotIn("John", acl_of(r.ok("GETACL Team")))

    def test_minus_and_replace(self):
        r = self.login(self.start(), "alice")
        r.ok("SETACL Team bob -sw")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["bob"], set("lri"))
        r.ok("SETACL Team bob lr")
        self.assertEqual(acl_of(r.ok("GETACL Team"))["bob"], set("lr"))
        r.ok('SETACL Team bob ""')          # no rights left: the entry goes
        self.assertNotIn("bob", acl_of(r.ok("GETACL Team")))

    def test_bad_identifier_and_arguments(self):
        r = self.login(self.start(), "alice")
        for cmd in ('SETACL Team "" lr', "SETACL Team - lr", "SETACL Team bob",
                    "SETACL Team", "SETACL Team bob lr extra", "SETACL Team bob +9"):
            self.assertBAD(r.cmd(cmd)[1], cmd)

    def test_owner_rights_are_fixed(self):
        r = self.login(self.start(), "alice")
        self.assertNO(r.cmd("SETACL Team alice lr")[1])
        self.assertNO(r.cmd("SETACL Team -alice lr")[1])
        self.assertEqual(self.myrights(r, "Team"), set("lrswipkxteacd"))

    def test_takes_effect_for_the_other_user(self):
        s = self.start()
        a, d = self.login(s, "alice"), self.login(s, "dave")
        self.assertNO(d.cmd('SELECT "%sPrivate"' % A)[1])
        a.ok("SETACL Private dave lr")
        self.assertEqual(exists(d.ok('EXAMINE "%sPrivate"' % A)), 1)


# ========================================================================================
# 3.2 DELETEACL, 3.3 GETACL, with negative rights (2)

class DeleteAndGetAcl(AclCase):
    def test_rfc_example(self):
        """3.2: deleting Fred leaves -Fred and $team."""
        r = self.login(self.start(), "alice")
        r.ok("SETACL Private Fred rwipslxetad")
        r.ok("SETACL Private -Fred wetd")
        r.ok("SETACL Private $team w")
        acl = acl_of(r.ok("GETACL Private"))
        self.assertEqual(acl["Fred"], set("rwipslxetadc"))
        r.ok("DeleteAcl Private Fred")
        acl = acl_of(r.ok("GETACL Private"))
        self.assertNotIn("Fred", acl)
        self.assertEqual(acl["-Fred"], set("wetd"))
        self.assertEqual(acl["$team"], set("w"))

    def test_getacl_lists_owner_and_fixture_entries(self):
        r = self.login(self.start(), "alice")
        u = r.ok("GETACL Team")
        acl = responses(u, "ACL")[0]
        self.assertEqual(name_of(acl[1]), "Team")
        self.assertEqual(acl_of(u), {"alice": set("lrswipkxteacd"), "bob": set("lrswi"),
                                     "carol": set("lr")})

    def test_negative_rights(self):
        """2: "-carol" takes from carol what "anyone" gives; others keep it."""
        s = self.start()
        c, d = self.login(s, "carol"), self.login(s, "dave")
        self.assertEqual(self.myrights(d, A + "Archive"), set("lr"))
        self.assertNO(c.cmd('EXAMINE "%sArchive"' % A)[1])
        self.assertNotIn(A + "Archive", self.list(c, "", "*"))

    def test_deleteacl_of_absent_entry_is_ok(self):
        r = self.login(self.start(), "alice")
        self.assertOK(r.cmd("DELETEACL Team nobody")[1])

    def test_deleteacl_owner_refused(self):
        r = self.login(self.start(), "alice")
        self.assertNO(r.cmd("DELETEACL Team alice")[1])


# ========================================================================================
# 3.4 LISTRIGHTS, 3.5 MYRIGHTS

class ListRightsMyRights(AclCase):
    def test_listrights(self):
        """3.4, 3.7: the identifier as given; none required, each right alone."""
        r = self.login(self.start(), "alice")
        u = r.ok("LISTRIGHTS Team Smith")
        lr = responses(u, "LISTRIGHTS")
        self.assertEqual(len(lr), 1, u)
        self.assertEqual(name_of(lr[0][1]), "Team")
        self.assertEqual(name_of(lr[0][2]), "Smith")
        self.assertEqual(name_of(lr[0][3]), "")
        optional = [name_of(x) for x in lr[0][4:]]
        self.assertEqual(sorted("".join(optional)), sorted(set("".join(optional))))
        self.assertEqual(set("".join(optional)), set("lrswipkxteacd"))
        u = r.ok("LISTRIGHTS Team alice")      # the owner: always everything
        self.assertEqual(rights_of(responses(u, "LISTRIGHTS")[0][3]), set("lrswipkxteacd"))

    def test_listrights_needs_a(self):
        r = self.login(self.start(), "bob")
        u, t = r.cmd('LISTRIGHTS "%sTeam" bob' % A)
        self.assertNO(t)
        self.assertEqual(responses(u, "LISTRIGHTS"), [])

    def test_myrights_rfc_example(self):
        """3.5: MYRIGHTS INBOX: the owner has every right."""
        r = self.login(self.start(), "alice")
        u = r.ok("MYRIGHTS INBOX")
        m = responses(u, "MYRIGHTS")[0]
        self.assertEqual(name_of(m[1]), "INBOX")
        self.assertEqual(rights_of(m[2]), set("lrswipkxteacd"))

    def test_myrights_needs_any_right(self):
        s = self.start()
        self.assertEqual(self.myrights(self.login(s, "carol"), A + "Team"), set("lr"))
        self.assertNO(self.login(s, "dave").cmd('MYRIGHTS "%sTeam"' % A)[1])


# ========================================================================================
# 4: the rights each command needs

class RightsTable(AclCase):
    def test_list_needs_l(self):
        """4: LIST shows what "l" allows; a level above one without "l" is left out."""
        s = self.start()
        b = self.login(s, "bob")
        names = self.list(b, "", "*")
        self.assertIn(A + "Team", names)
        self.assertIn(A + "Projects/Secret", names)
        self.assertNotIn(A + "Projects", names)
        self.assertNotIn(A + "Private", names)
        self.assertNotIn(A + "INBOX", names)
        self.assertIn("Shared/News", names)
        self.assertNotIn("Shared/Hidden", names)
        self.assertEqual(names["Other Users"], {"\\noselect", "\\haschildren"})
        d = self.login(s, "dave")
        self.assertEqual({n for n in self.list(d, "", "*") if n.startswith(A)},
                         {A + "Archive"})

    def test_select_examine_status_need_r(self):
        s = self.start()
        a = self.login(s, "alice")
        a.ok("SETACL Private dave l")       # dave may see it, not read it
        d = self.login(s, "dave")
        for cmd in ("SELECT", "EXAMINE"):
            u, t = d.cmd('%s "%sPrivate"' % (cmd, A))
            self.assertNO(t)
            self.assertEqual(self.assertCode(t, "NOPERM"), [])
        u, t = d.cmd('STATUS "%sPrivate" (MESSAGES)' % A)
        self.assertCode(t, "NOPERM")
        self.assertEqual(responses(u, "STATUS"), [])
        a.ok("SETACL Private dave +r")
        self.assertEqual(self.status(d, A + "Private", "MESSAGES"), {"MESSAGES": 1})

    def test_append_needs_i_and_keeps_only_permitted_flags(self):
        """4: APPEND needs "i"; \\Seen needs "s", \\Deleted "t", the others "w"."""
        s = self.start()
        a, c = self.login(s, "alice"), self.login(s, "carol")
        u, t = c.cmd('APPEND "%sTeam" (\\Seen) {%d+}\r\n%s' % (A, len(MSG), MSG))
        self.assertCode(t, "NOPERM")
        self.assertEqual(self.count(a, "Team"), 3)
        a.ok("SETACL Team carol +is")
        u, t = c.cmd('APPEND "%sTeam" (\\Seen \\Deleted \\Flagged $Work) {%d+}\r\n%s'
                     % (A, len(MSG), MSG))
        self.assertOK(t)
        a.ok("SELECT Team")
        self.assertEqual(self.flags(a, "4"), {4: {"\\seen", "\\recent"}})

    def test_copy_rfc_example(self):
        """4, the COPY example: with "rwis" \\Deleted is lost; with "rsti" the others are."""
        s = self.start()
        a, b = self.login(s, "alice"), self.login(s, "bob")
        b.ok("CREATE Source")
        for flags in ("\\Draft \\Deleted", "\\Answered", "$Forwarded \\Seen"):
            self.assertOK(b.cmd("APPEND Source (%s) {%d+}\r\n%s" % (flags, len(MSG), MSG))[1])
        a.ok("CREATE Target")
        a.ok("SETACL Target bob rwis")
        b.ok("SELECT Source")
        self.assertEqual(self.myrights(b, A + "Target"), set("rwis"))
        b.ok('COPY 1:3 "%sTarget"' % A)
        a.ok("SETACL Target bob rsti")
        b.ok('COPY 1:3 "%sTarget"' % A)
        a.ok("EXAMINE Target")
        got = {k: v - {"\\recent"} for k, v in self.flags(a).items()}
        self.assertEqual(got, {1: {"\\draft"}, 2: {"\\answered"}, 3: {"$forwarded", "\\seen"},
                               4: {"\\deleted"}, 5: set(), 6: {"\\seen"}})

    def test_copy_needs_i(self):
        s = self.start()
        b = self.login(s, "bob", select="INBOX")
        b.ok("APPEND INBOX {%d+}\r\n%s" % (len(MSG), MSG))
        b.ok("NOOP")
        u, t = b.cmd('COPY 1 "%sProjects/Secret"' % A)
        self.assertCode(t, "NOPERM")
        self.assertOK(b.cmd('COPY 1 "%sTeam"' % A)[1])
        self.assertEqual(self.count(self.login(s, "alice"), "Team"), 4)

    def test_store_needs_s_w_t(self):
        """4: STORE changes only the flags the rights allow, and fails only if none."""
        s = self.start()
        a = self.login(s, "alice")
        a.ok("SETACL Team bob lrs")
        b = self.login(s, "bob", select=A + "Team")
        self.assertCode(b.cmd("STORE 1 +FLAGS (\\Flagged)")[1], "NOPERM")
        self.assertCode(b.cmd("STORE 1 +FLAGS (\\Deleted)")[1], "NOPERM")
        u = b.ok("STORE 1 +FLAGS (\\Seen \\Flagged \\Deleted)")
        self.assertEqual(flagset(fetches(u)[1]["FLAGS"]) - {"\\recent"}, {"\\seen"})
        a.ok("EXAMINE Team")
        self.assertEqual(self.flags(a, "1")[1], {"\\seen"})

    def test_fetch_sets_seen_only_with_s(self):
        """4: a FETCH that implies \\Seen must not set it without "s"."""
        s = self.start()
        a = self.login(s, "alice")
        a.ok("SETACL Team bob lrw")         # write, but not seen
        b = self.login(s, "bob", select=A + "Team")
        b.ok("FETCH 1 BODY[]")
        self.assertNotIn("\\seen", self.flags(b, "1")[1])
        a.ok("EXAMINE Team")
        self.assertNotIn("\\seen", self.flags(a, "1")[1])

    def test_expunge_needs_e_close_without_e_expunges_nothing(self):
        s = self.start()
        a = self.login(s, "alice")
        a.ok("SETACL Team bob lrswit")      # may mark \Deleted, may not expunge
        b = self.login(s, "bob", select=A + "Team")
        b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        self.assertCode(b.cmd("EXPUNGE")[1], "NOPERM")
        self.assertCode(b.cmd("UID EXPUNGE 1")[1], "NOPERM")
        self.assertOK(b.cmd("CLOSE")[1])    # succeeds, expunges nothing
        self.assertEqual(self.count(a, "Team"), 3)
        a.ok("SETACL Team bob +e")
        b.ok('SELECT "%sTeam"' % A)
        b.ok("CLOSE")
        self.assertEqual(self.count(a, "Team"), 2)

    def test_move_needs_t_and_e_on_source(self):
        """RFC 6851 4.2: MOVE needs what UID STORE, UID COPY and UID EXPUNGE need."""
        s = self.start()
        b = self.login(s, "bob", select=A + "Team")
        self.assertCode(b.cmd("MOVE 1 INBOX")[1], "NOPERM")
        self.assertEqual(self.count(self.login(s, "alice"), "Team"), 3)

    def test_create_needs_k_on_parent_and_inherits(self):
        """4: CREATE needs "k" on the nearest existing parent; the new one inherits its ACL."""
        s = self.start()
        a, b = self.login(s, "alice"), self.login(s, "bob")
        self.assertCode(b.cmd('CREATE "%sTeam/Notes"' % A)[1], "NOPERM")
        a.ok("SETACL Team bob +k")
        b.ok('CREATE "%sTeam/Notes"' % A)
        self.assertIn("Team/Notes", self.list(a, "", "Team/*"))
        self.assertEqual(acl_of(a.ok("GETACL Team/Notes"))["bob"], set("lrswikc"))
        self.assertCode(b.cmd('CREATE "%sTopLevel"' % A)[1], "NOPERM")

    def test_delete_needs_x(self):
        s = self.start()
        a, b = self.login(s, "alice"), self.login(s, "bob")
        self.assertCode(b.cmd('DELETE "%sTeam"' % A)[1], "NOPERM")
        a.ok("SETACL Team bob +x")
        b.ok('DELETE "%sTeam"' % A)
        self.assertNotIn("Team", self.list(a, "", "*"))

    def test_delete_drops_the_acl(self):
        """4: DELETE deletes the mailbox's ACL: a new one of that name has none."""
        s = self.start()
        a = self.login(s, "alice")
        a.ok("DELETE Team")
        a.ok("CREATE Team")
        self.assertEqual(acl_of(a.ok("GETACL Team")), {"alice": set("lrswipkxteacd")})

    def test_rename_needs_x_and_k(self):
        """4: RENAME needs "x" on the mailbox and "k" on the new parent; ACLs stay."""
        s = self.start()
        a, b = self.login(s, "alice"), self.login(s, "bob")
        self.assertCode(b.cmd('RENAME "%sTeam" "%sTeam2"' % (A, A))[1], "NOPERM")
        a.ok("CREATE Parent")
        a.ok("SETACL Team bob +x")
        a.ok("SETACL Parent bob lk")
        self.assertCode(b.cmd('RENAME "%sTeam" "%sTeam2"' % (A, A))[1], "NOPERM")
        b.ok('RENAME "%sTeam" "%sParent/Team"' % (A, A))
        self.assertEqual(acl_of(a.ok("GETACL Parent/Team"))["bob"], set("lrswixc"))
        self.assertRefused(b.cmd('RENAME "%sParent/Team" Mine' % A)[1])

    def test_setacl_getacl_need_a(self):
        s = self.start()
        b = self.login(s, "bob")
        for cmd in ("GETACL", "SETACL %s bob lrswipkxtea", "DELETEACL %s carol"):
            box = quote(A + "Team")
            cmd = cmd % box if "%s" in cmd else cmd + " " + box
            self.assertCode(b.cmd(cmd)[1], "NOPERM")
        self.assertEqual(self.myrights(b, A + "Team"), set("lrswi"))
        self.login(s, "alice").ok("SETACL Team bob +a")
        self.assertIn("carol", acl_of(b.ok('GETACL "%sTeam"' % A)))


# ========================================================================================
# 5.1.1 and 5.2: PERMANENTFLAGS and READ-ONLY / READ-WRITE follow the rights

class ReadOnlyReadWrite(AclCase):
    def test_lr_is_read_only(self):
        s = self.start()
        c = self.login(s, "carol")
        u, t = c.cmd('SELECT "%sTeam"' % A)
        self.assertCode(t, "READ-ONLY")
        self.assertIn(b"[PERMANENTFLAGS ()]", u)
        self.assertCode(c.cmd("STORE 1 +FLAGS (\\Seen)")[1], "READ-ONLY")

    def test_rit_is_read_write(self):
        """5.2 Example 2: "rit" answers READ-WRITE; PERMANENTFLAGS has \\Deleted only."""
        s = self.start()
        self.login(s, "alice").ok("SETACL Team carol lrit")
        u, t = self.login(s, "carol").cmd('SELECT "%sTeam"' % A)
        self.assertCode(t, "READ-WRITE")
        pf = [l for l in u.split(b"\r\n") if b"PERMANENTFLAGS" in l][0]
        self.assertIn(b"[PERMANENTFLAGS (\\Deleted)]", pf)

    def test_owner_keeps_every_flag(self):
        u, t = self.login(self.start(), "alice").cmd("SELECT Team")
        self.assertCode(t, "READ-WRITE")
        self.assertIn(b"\\*)]", u)


# ========================================================================================
# 5.2: \Seen is shared, and two users keep their own views

class SharedMailboxViews(AclCase):
    def test_seen_is_shared(self):
        """\\Seen set by bob (who has "s") is \\Seen for alice too: one flag per message."""
        s = self.start()
        b = self.login(s, "bob", select=A + "Team")
        b.ok("FETCH 2 BODY[]")
        a = self.login(s, "alice", select="Team")
        self.assertIn("\\seen", self.flags(a, "2")[2])
        self.assertNotIn("\\seen", self.flags(a, "1")[1])

    def test_two_users_one_mailbox(self):
        """Sequence numbers, \\Recent and untagged updates stay right for each user."""
        s = self.start()
        a = self.login(s, "alice", select="Team")
        b = self.login(s, "bob", select=A + "Team")
        u, t = b.cmd('APPEND "%sTeam" {%d+}\r\n%s' % (A, len(MSG), MSG))
        self.assertOK(t)
        self.assertEqual(numbers(u + b.ok("NOOP"), "EXISTS"), [4])
        self.assertEqual(numbers(a.ok("NOOP"), "EXISTS"), [4])
        recent = ["\\recent" in self.flags(x, "4")[4] for x in (a, b)]
        self.assertEqual(sorted(recent), [False, True])  # \Recent in exactly one session
        a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        u = b.ok("NOOP")
        self.assertEqual(numbers(u, "EXPUNGE"), [1])
        self.assertEqual(len(self.uids(b)), 3)
        b.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
        u = a.ok("NOOP")
        f = fetches(u)
        self.assertIn("\\flagged", flagset(f[1]["FLAGS"]))


# ========================================================================================
# 6: a mailbox the user may not look up answers as one that does not exist

# Each command with a mailbox in it, as the user would send it; %s is the mailbox.
COMMANDS = [
    "SELECT %s", "EXAMINE %s", "STATUS %s (MESSAGES)", "APPEND %s {5+}\r\nhello",
    "DELETE %s", "RENAME %s Elsewhere", "GETACL %s", "SETACL %s dave lr",
    "DELETEACL %s dave", "LISTRIGHTS %s dave", "MYRIGHTS %s",
]
SELECTED = ["COPY 1 %s", "MOVE 1 %s", "UID COPY 1 %s"]


class LearnsNothing(AclCase):
    def answers(self, r, name, commands):
        out = {}
        for cmd in commands:
            r.ok("SELECT INBOX")
            u, t = r.cmd(cmd % quote(name))
            out[cmd] = (u, t.replace(name.encode(), b"NAME"))
        return out

    def check_same(self, r, hidden, missing, commands):
        got, want = self.answers(r, hidden, commands), self.answers(r, missing, commands)
        for cmd in commands:
            self.assertNO(got[cmd][1], cmd)
            self.assertEqual(got[cmd], want[cmd], cmd)

    def test_every_command_across_users_and_namespaces(self):
        s = self.start()
        r = self.login(s, "dave", select="INBOX")
        r.ok("APPEND INBOX {%d+}\r\n%s" % (len(MSG), MSG))
        r.ok("NOOP")
        pairs = [(A + "Private", A + "Nothing"), (A + "INBOX", A + "Nothing"),
                 (A + "Projects/Secret", A + "Projects/Nothing"),
                 ("Shared/Hidden", "Shared/Nothing"),
                 ("Other Users/nobody/INBOX", A + "Nothing")]
        for hidden, missing in pairs:
            self.check_same(r, hidden, missing, COMMANDS + SELECTED)
        self.assertEqual(self.count(r), 1)     # nothing was copied or moved anywhere

    def test_trycreate_is_the_same(self):
        s = self.start()
        r = self.login(s, "dave")
        u, t = r.cmd('APPEND "%sPrivate" {5+}\r\nhello' % A)
        self.assertCode(t, "TRYCREATE")

    def test_create_under_hidden_and_missing_parents(self):
        """CREATE without "k" answers [NOPERM] whether the parent exists or not."""
        s = self.start()
        r = self.login(s, "dave")
        self.check_same(r, A + "Private/x", A + "Nothing/x", ["CREATE %s"])
        self.check_same(r, "Shared/Hidden/x", "Shared/Nothing/x", ["CREATE %s"])

    def test_list_and_lsub(self):
        s = self.start()
        r = self.login(s, "dave")
        r.ok('SUBSCRIBE "%sPrivate"' % A)
        for pat in ("*", "%", A + "*", "Shared/*", "Other Users/%"):
            for name in self.list(r, "", pat):
                self.assertFalse(name.endswith(("Private", "Hidden", "Secret", "INBOX"))
                                 and name != "INBOX", name)
        u = r.ok('LIST "" "%sPrivate"' % A)
        self.assertEqual(responses(u, "LIST"), [])

    def test_imaplib_client(self):
        """A real client (Python's imaplib) sees the same: NO, no data."""
        s = self.start()
        c = s.imap("dave", "dpw")
        typ, data = c.select('"%sPrivate"' % A)
        self.assertEqual(typ, "NO")
        typ, data = c.getacl('"%sPrivate"' % A)
        self.assertEqual(typ, "NO")
        typ, data = c.myrights('"%sArchive"' % A)
        self.assertEqual(typ, "OK")
        c.logout()


# ========================================================================================
# Fixtures: the .acl file, --save and reset

class Fixtures(AclCase):
    def test_malformed_acl_file(self):
        d = self.tempdir()
        with open(os.path.join(d, "INBOX.mbox"), "w"):
            pass
        for text, why in (("INBOX bob lr\n", b"expected MAILBOX<TAB>"),
                          ("INBOX\tbob\tlrQ\n", b"'Q' is no RFC 4314 right"),
                          ("Nowhere\tbob\tlr\n", b"no mailbox Nowhere")):
            with open(os.path.join(d, ".acl"), "w") as f:
                f.write("# comment\n\n" + text)
            p = run(["-p", "0", "-u", "alice:apw:" + d])
            self.assertEqual(p.returncode, 2, text)
            self.assertIn(b".acl", p.stderr)
            self.assertIn(why, p.stderr)

    def test_save_keeps_acls(self):
        d = self.tempdir()
        sd = self.tempdir()
        s = self.start(*(USERS[:2] + ("--save", d, "--shared", SHARED, "--save-shared", sd)))
        a = self.login(s, "alice")
        a.ok("SETACL Private bob lrs")
        a.ok("SETACL Shared/Board carol lr")
        a.ok("DELETEACL Team carol")
        self.assertEqual(s.stop(signal.SIGTERM), 0)
        with open(os.path.join(d, ".acl")) as f:
            self.assertIn("Private\tbob\tlrs\n", f.read())
        s2 = self.start("-u", "alice:apw:" + d, "-u", "bob:bpw", "-u", "carol:cpw",
                        "--shared", sd)
        a2 = self.login(s2, "alice")
        self.assertEqual(acl_of(a2.ok("GETACL Private"))["bob"], set("lrs"))
        self.assertNotIn("carol", acl_of(a2.ok("GETACL Team")))
        self.assertEqual(acl_of(a2.ok("GETACL Shared/Board"))["carol"], set("lr"))
        self.assertEqual(exists(self.login(s2, "carol").ok("EXAMINE Shared/Board")), 1)

    def test_reset_restores_fixture_acls(self):
        s = self.start()
        a = self.login(s, "alice")
        a.ok("SETACL Team bob lr")
        a.ok("SETACL Shared/Board bob lrswi")
        s.proc.send_signal(signal.SIGHUP)
        self.assertIn(b"reset", s.proc.stdout.readline())
        a = self.login(s, "alice")
        self.assertEqual(acl_of(a.ok("GETACL Team"))["bob"], set("lrswi"))
        self.assertEqual(acl_of(a.ok("GETACL Shared/Board"))["bob"], set("lrs"))


# ========================================================================================
# 4 with the other extensions: the extended LIST (RFC 5258), LIST-STATUS (RFC 5819),
# STATUS=SIZE and QUOTA (RFC 9208) follow the same rights

class WithOtherExtensions(AclCase):
    def xlist(self, r, command):
        """{name: set of lower-case attributes} and {name: status dict} of a LIST."""
        u, t = r.cmd(command)
        self.assertOK(t, command)
        names, status = {}, {}
        for resp in parse(u):
            kind = upper(resp[0]) if resp and isinstance(resp[0], str) else None
            if kind == "LIST":
                self.assertNotIn(name_of(resp[3]), names, command)
                names[name_of(resp[3])] = {a.lower() for a in resp[1]}
            elif kind == "STATUS":
                d = resp[2]
                status[name_of(resp[1])] = dict(zip([k.upper() for k in d[0::2]], d[1::2]))
        return names, status

    def test_extended_list_shows_what_plain_list_shows(self):
        """RFC 5258 with 4: the other namespaces, "l" deciding, as a plain LIST."""
        s = self.start()
        for who in ("bob", "carol", "dave"):
            r = self.login(s, who)
            plain = self.list(r, "", "*")
            for cmd in ('LIST "" (*)', 'LIST () "" "*" RETURN (CHILDREN)',
                        'LIST "" * RETURN (SPECIAL-USE)'):
                self.assertEqual(self.xlist(r, cmd)[0], plain, (who, cmd))
        b = self.login(s, "bob")
        names = self.xlist(b, 'LIST "" ("Other Users/%" "Shared/%")')[0]
        self.assertEqual(set(names), {"Other Users/alice", "Shared/News", "Shared/Board"})
        self.assertEqual(names["Other Users/alice"], {"\\noselect", "\\haschildren"})

    def test_extended_list_learns_nothing(self):
        """A hidden mailbox, subscribed or not, lists as a missing one would."""
        s = self.start()
        d = self.login(s, "dave")
        for box in (A + "Private", A + "Nothing", "Shared/Hidden", "Shared/Nothing"):
            d.ok("SUBSCRIBE " + quote(box))
        for cmd in ('LIST "" (*)', 'LIST (SUBSCRIBED) "" *', 'LIST (SUBSCRIBED RECURSIVEMATCH) '
                    '"" %', 'LIST "" * RETURN (CHILDREN STATUS (MESSAGES))',
                    'LIST (SPECIAL-USE) "" *'):
            names, status = self.xlist(d, cmd)
            for hidden, missing in ((A + "Private", A + "Nothing"),
                                    ("Shared/Hidden", "Shared/Nothing")):
                self.assertEqual(names.get(hidden), names.get(missing), cmd)
                self.assertNotIn(hidden, status, cmd)
            self.assertFalse({A + "INBOX", A + "Projects", A + "Projects/Secret"} & set(names))
        names = self.xlist(d, 'LIST (SUBSCRIBED) "" *')[0]
        self.assertLessEqual({"\\nonexistent", "\\subscribed"}, names[A + "Private"])

    def test_list_status_needs_r(self):
        """RFC 5819 2: with "l" but not "r", \\Noselect and no STATUS; with "r", STATUS."""
        s = self.start()
        a, d = self.login(s, "alice"), self.login(s, "dave")
        a.ok("SETACL Private dave l")
        names, status = self.xlist(d, 'LIST "" "%s*" RETURN (STATUS (MESSAGES SIZE))' % A)
        self.assertIn("\\noselect", names[A + "Private"])
        self.assertNotIn(A + "Private", status)
        self.assertEqual(status[A + "Archive"]["MESSAGES"],
                         self.status(a, "Archive", "MESSAGES")["MESSAGES"])
        a.ok("SETACL Private dave lr")
        names, status = self.xlist(d, 'LIST "" "%s*" RETURN (STATUS (MESSAGES SIZE))' % A)
        self.assertNotIn("\\noselect", names[A + "Private"])
        self.assertEqual(status[A + "Private"]["MESSAGES"], 1)
        self.assertGreater(status[A + "Private"]["SIZE"], 0)

    def test_status_size_of_hidden_is_missing(self):
        s = self.start()
        d = self.login(s, "dave")
        got = [d.cmd("STATUS %s (SIZE DELETED)" % quote(box))
               for box in (A + "Private", A + "Nothing")]
        self.assertEqual(got[0][0], got[1][0])
        self.assertEqual(got[0][1].replace(b"Private", b"Nothing"), got[1][1])
        self.assertCode(got[0][1], "NONEXISTENT")

    def test_quota_is_the_owners(self):
        """RFC 9208 with 4: an APPEND or COPY into alice's mailbox counts against alice's
        quota, not the appender's; rights are checked first, so a hidden mailbox still
        answers as a missing one and one without "i" [NOPERM], never [OVERQUOTA]."""
        s = self.start(*(self.ARGS + ("--quota", "bob:STORAGE=1")))
        b = self.login(s, "bob", select="INBOX")
        self.assertCode(b.cmd("APPEND INBOX {%d+}\r\n%s" % (len(MSG * 40), MSG * 40))[1],
                        "OVERQUOTA")
        self.assertOK(b.cmd('APPEND "%sTeam" {%d+}\r\n%s' % (A, len(MSG * 40), MSG * 40))[1])
        s = self.start(*(self.ARGS + ("--quota", "alice:MESSAGE=1")))
        b, c, d = (self.login(s, who) for who in ("bob", "carol", "dave"))
        self.assertCode(b.cmd('APPEND "%sTeam" {%d+}\r\n%s' % (A, len(MSG), MSG))[1],
                        "OVERQUOTA")
        self.assertCode(c.cmd('APPEND "%sTeam" {%d+}\r\n%s' % (A, len(MSG), MSG))[1],
                        "NOPERM")
        self.assertCode(d.cmd('APPEND "%sPrivate" {%d+}\r\n%s' % (A, len(MSG), MSG))[1],
                        "TRYCREATE")
        b.ok("APPEND INBOX {%d+}\r\n%s" % (len(MSG), MSG))   # bob's own: no limit
        b.ok("SELECT INBOX")
        self.assertCode(b.cmd('COPY 1 "%sTeam"' % A)[1], "OVERQUOTA")
        self.assertCode(b.cmd('COPY 1 "%sPrivate"' % A)[1], "TRYCREATE")
        self.assertEqual(self.count(self.login(s, "alice"), "Team"), 3)


if __name__ == "__main__":
    unittest.main()
