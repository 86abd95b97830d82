#!/usr/bin/env python3
"""Run by hand (not by make test): the same mailbox-list commands against imapmem and a
private Dovecot 2.3, side by side, for README "Mailbox lists" (its differences paragraph).

    python3 test/dovecot_list_shapes.py                 # the built-in commands
    python3 test/dovecot_list_shapes.py 'LIST "" %' ... # these commands instead

Both servers start empty; the same CREATEs and SUBSCRIBEs build RFC 5258 5's hierarchies
(examples 1 and 9), then each command's answers are printed, Dovecot's first, or once when
the two are the same line for line.  Dovecot comes from /work/tools/dovecot-private.py
(maildir storage, `special_use` for Sent, Trash and Archive); it needs root.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from wire import Raw, Server  # noqa: E402

DOVECOT = os.environ.get("DOVECOT_PRIVATE", "/work/tools/dovecot-private.py")
EXTRA = r"""
namespace inbox {
  mailbox Sent {
    special_use = \Sent
  }
  mailbox Trash {
    special_use = \Trash
  }
  mailbox Archive {
    special_use = \Archive
  }
}
"""
SETUP = ["CREATE Sent", "CREATE Trash", "CREATE Archive", "CREATE Fruit/Apple",
         "CREATE Fruit/Banana", "CREATE Tofu", "CREATE Vegetable/Broccoli",
         "CREATE Vegetable/Corn", "CREATE Vegetable", "CREATE foo2/bar1", "CREATE foo2/bar2",
         "CREATE baz2/bar2", "CREATE baz2/bar22", "CREATE eps2/mamba", "SUBSCRIBE INBOX",
         "SUBSCRIBE Fruit/Banana", "SUBSCRIBE Fruit/Peach", "SUBSCRIBE Vegetable",
         "SUBSCRIBE Vegetable/Broccoli", "SUBSCRIBE foo2/bar1", "SUBSCRIBE foo2/bar2",
         "SUBSCRIBE baz2/bar2", "SUBSCRIBE baz2/bar22", "SUBSCRIBE eps2", "SUBSCRIBE eps2/mamba",
         "SUBSCRIBE qux2/bar2"]
COMMANDS = [
    'LIST "" *', 'LIST (SUBSCRIBED) "" *', 'LIST () "" % RETURN (CHILDREN)',
    'LIST (REMOTE) "" % RETURN (CHILDREN)', 'LIST "" * RETURN (SUBSCRIBED)',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" %', 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*2"',
    'LIST (RECURSIVEMATCH SUBSCRIBED) "" "*"', 'LIST "" ("INBOX" "Fruit/%")',
    'LIST "" % RETURN (SPECIAL-USE)', 'LIST (SPECIAL-USE) "" *',
    'LIST "" % RETURN (STATUS (MESSAGES UNSEEN SIZE))',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (STATUS (MESSAGES))',
    'LIST (SUBSCRIBED) "" * RETURN (CHILDREN)', 'LIST (SUBSCRIBED SPECIAL-USE) "" *',
    'LIST () "" ""', 'LIST "" ("" "Tofu")', 'LIST (SPECIAL-USE RECURSIVEMATCH) "" *',
    'CREATE MySpecial (USE (\\Drafts \\Sent))', 'CREATE Everything (USE (\\All))',
    'LIST "" My* RETURN (SPECIAL-USE)', 'STATUS INBOX (SIZE DELETED)']


def transcript(r, commands):
    for c in SETUP:
        r.cmd(c)
    out = []
    for c in commands:
        u, t = r.cmd(c)
        out.append((u + t).decode("utf-8", "replace"))
    return out


def main():
    commands = sys.argv[1:] or COMMANDS
    spec = importlib.util.spec_from_file_location("dovecot_private", DOVECOT)
    dp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dp)
    with dp.DovecotPrivate(extra_conf=EXTRA, storage="maildir") as d:
        r = Raw("127.0.0.1", d.port)
        r.ok("LOGIN tester secret")
        theirs = transcript(r, commands)
    with Server() as s:
        ours = transcript(s.raw(login=("test", "test")), commands)
    for c, a, b in zip(commands, theirs, ours):
        print("=== C: " + c)
        if a.split("\r\n")[:-2] == b.split("\r\n")[:-2]:
            print("  both:\n" + b)
        else:
            print("  dovecot:\n" + a + "  imapmem:\n" + b)


if __name__ == "__main__":
    main()
