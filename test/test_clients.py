"""Real IMAP clients from Debian against imapmem: curl over TCP, mbsync (isync) over --stdio.

.ci/run installs both; where one is missing locally its tests are skipped.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import wire
from wire import ServerCase, fixture


def curl(srv, path, *extra):
    p = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", "test:test",
                        "imap://%s:%d/%s" % (srv.host, srv.port, path)] + list(extra),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    return p.returncode, p.stdout, p.stderr


@unittest.skipUnless(shutil.which("curl"), "curl is not installed")
class Curl(ServerCase):
    def test_fetch_list_search_examine(self):
        srv = self.start(fixture("basic.mbox"))
        rc, out, err = curl(srv, "INBOX;UID=1")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith(b"Return-Path: <alice@example.com>\r\n"), out[:80])
        self.assertIn(b"\r\n\r\nHello Test,\r\n", out)
        rc, out, err = curl(srv, "")
        self.assertEqual((rc, out), (0, b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'), err)
        rc, out, err = curl(srv, "INBOX?UNSEEN")
        self.assertEqual((rc, out), (0, b"* SEARCH 2 4\r\n"), err)
        rc, out, err = curl(srv, "", "-X", "EXAMINE INBOX")
        self.assertEqual(rc, 0, err)
        self.assertIn(b"* 6 EXISTS\r\n", out)
        self.assertIn(b"* OK [PERMANENTFLAGS ()]", out)

    def test_wrong_password_fails(self):
        srv = self.start(fixture("basic.mbox"))
        p = subprocess.run(["curl", "-sS", "--max-time", "10", "-u", "test:nope",
                            "imap://%s:%d/INBOX;UID=1" % (srv.host, srv.port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 67, p.stderr)   # CURLE_LOGIN_DENIED


MBSYNCRC = """IMAPAccount test
Tunnel "{bin} --stdio --uidvalidity 1 --save {saved} {source}"

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Near
Sync All
SyncState *
"""


@unittest.skipUnless(shutil.which("mbsync"), "mbsync (isync) is not installed")
class Mbsync(ServerCase):
    """mbsync copies every mailbox over a --stdio tunnel, then pushes a flag back."""

    def sync(self, d, source, saved):
        rc = os.path.join(d, "mbsyncrc")
        with open(rc, "w") as f:
            f.write(MBSYNCRC.format(bin=wire.BIN, saved=saved, source=source,
                                    maildir=os.path.join(d, "mail")))
        p = subprocess.run(["mbsync", "-c", rc, "-a"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        self.assertNoSanitizerReport(p.stdout.decode("utf-8", "replace"))   # imapmem's stderr

    def maildir(self, d, box):
        cur = os.path.join(d, "mail", box, "cur")
        return sorted(os.listdir(cur)) if os.path.isdir(cur) else []

    def test_mirror_and_push_a_flag(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "mail"))
            tree = fixture("tree")
            self.sync(d, tree, os.path.join(d, "saved1"))
            # every selectable mailbox of the fixture arrives with all its messages
            for box in ["INBOX", "Sent", "Lists", "Lists/ietf", "Work/Projects", "Work/Old"]:
                src = open(os.path.join(tree, box + ".mbox"), "rb").read()
                n = len(re.findall(rb"(?:^|\n\n)From ", src))
                self.assertEqual(len(self.maildir(d, box)), n, box)
            self.assertEqual(self.maildir(d, "Drafts"), [])
            # flag INBOX's UID 1 locally (maildir flag F), sync again
            (first,) = [f for f in self.maildir(d, "INBOX") if ",U=1:" in f]
            cur = os.path.join(d, "mail", "INBOX", "cur")
            m = re.match(r"(.*:2,)(.*)$", first)
            os.rename(os.path.join(cur, first), os.path.join(cur, m.group(1) + "".join(sorted(m.group(2) + "F"))))
            self.sync(d, os.path.join(d, "saved1"), os.path.join(d, "saved2"))
            saved = open(os.path.join(d, "saved2", "INBOX.mbox"), "rb").read()
            first_msg = saved.split(b"\n\nFrom ")[0]
            self.assertRegex(first_msg, rb"\nX-Status: [A-Z]*F")
            second_msg = saved.split(b"\n\nFrom ")[1]
            self.assertNotRegex(second_msg, rb"\nX-Status: [A-Z]*F")

    def test_the_readme_tunnel_twice(self):
        """The README's tunnel line as it stands (no --uidvalidity): a second run finds the
        same UIDVALIDITY, so mbsync syncs nothing again and duplicates nothing."""
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "mail"))
            tree = os.path.join(d, "tree")
            shutil.copytree(fixture("tree"), tree)   # a copy: another path and mtime, same bytes
            rc = os.path.join(d, "mbsyncrc")
            with open(rc, "w") as f:
                f.write(MBSYNCRC.format(bin=wire.BIN, saved=os.path.join(d, "unused"),
                                        source=tree, maildir=os.path.join(d, "mail"))
                        .replace(" --uidvalidity 1 --save " + os.path.join(d, "unused"), ""))
            for run in (1, 2):
                if run == 2:
                    time.sleep(1.1)  # a restart in another second (a time-based one changes)
                p = subprocess.run(["mbsync", "-c", rc, "-a"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=60)
                self.assertEqual(p.returncode, 0, "run %d: %s" % (run, p.stdout.decode()))
                self.assertNoSanitizerReport(p.stdout.decode("utf-8", "replace"))
                if run == 2:          # (the first creates the local side: it says so)
                    self.assertNotIn(b"UIDVALIDITY", p.stdout, p.stdout.decode())
                src = open(os.path.join(tree, "INBOX.mbox"), "rb").read()
                n = len(re.findall(rb"(?:^|\n\n)From ", src))
                self.assertEqual(len(self.maildir(d, "INBOX")), n, "run %d" % run)


if __name__ == "__main__":
    unittest.main()
