"""Write the seed corpora of the libFuzzer targets: test/fuzz/corpus/<target>/.

Usage: python3 test/fuzz/seed.py [--check]

Seeds come from the fixtures and from the tests:
  mbox     every fixture file (fixtures/*.mbox, fixtures/tree/, fixtures/bad/), and a few
           files in the layout --save writes (X-IMAPbase, X-Imapmem-Eol, saved fields)
  mime     the messages of those files, one a file, as the loader stores them (CRLF,
           >From unquoted, flag headers removed), a few hand-made structures, the cases
           of test/test_fidelity.py and the smaller of test/mimegen.py's first 60
  session  one mode byte (see fuzz_session.c) and then IMAP commands: the annotated
           transcript in README.md, and the commands the wire tests send (test/test_*.py:
           the strings given to cmd(), ok(), check(), search(), fetch(), section(),
           send() and imaplib calls), a few to a file
  args     one mode byte (see fuzz_args.c) and the argument text: SEARCH keys and FETCH
           arguments from the same tests, sequence sets, flag lists, dates, mailbox names,
           LIST patterns, needles and encoded words

The folders are rewritten from scratch each time, so the output depends only on the
fixtures and the tests. --check fails (exit 1) if the committed corpora differ from what
the script would write now.
"""
import ast
import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "fixtures")

# fuzz_session.c: the first byte picks how the session starts (byte % 8)
S_NOTAUTH, S_AUTH, S_SELECT, S_EXAMINE, S_MIME, S_SEARCH = 0, 1, 2, 5, 6, 7
# fuzz_args.c: the first byte picks what is parsed (byte % 8; +8 for the UID form)
A_SEARCH, A_FETCH, A_SEQSET, A_FLAGS, A_DATE, A_MAILBOX, A_NEEDLE, A_DECODE = range(8)

MAX_SEED = 60000           # fuzz_session's -max_len


def fixture_files():
    files = sorted(glob.glob(os.path.join(FIX, "*.mbox")))
    files += sorted(glob.glob(os.path.join(FIX, "**", "*.mbox"), recursive=True))
    seen, out = set(), []
    for f in files:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def split_mbox(data):
    """The messages of an mbox as the loader stores them: CRLF, >From unquoted."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    msgs, cur = [], None
    for i, line in enumerate(lines):
        if line.startswith(b"From ") and (i == 0 or lines[i - 1] == b""):
            if cur is not None:
                msgs.append(cur)
            cur = []
            continue
        if cur is not None:
            cur.append(line)
    if cur is not None:
        msgs.append(cur)
    out = []
    for m in msgs:
        while m and m[-1] == b"":
            m.pop()
        body = []
        for line in m:
            if re.match(rb"^>+From ", line):
                line = line[1:]
            body.append(line)
        out.append(b"".join(l + b"\r\n" for l in body))
    return out


# ---------------------------------------------------------------------------------------
# Commands from the tests
IMAPLIB = {"select", "examine", "create", "delete", "rename", "subscribe", "unsubscribe",
           "status", "store", "copy", "move", "fetch", "search", "list", "lsub", "expunge",
           "noop", "capability", "namespace", "check", "close", "uid", "append", "login"}
COMMAND_WORDS = ("CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "AUTHENTICATE", "LOGIN",
                 "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
                 "LIST", "LSUB", "STATUS", "APPEND", "IDLE", "NAMESPACE", "CHECK", "CLOSE",
                 "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE", "UID")


def const(node):
    """The text of a constant argument (str or bytes, % formatting filled with dummies)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes, int)):
        v = node.value
        return str(v).encode() if isinstance(v, int) else v.encode() if isinstance(v, str) else v
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        left = const(node.left)
        if left is None:
            return None
        n = len(node.right.elts) if isinstance(node.right, ast.Tuple) else 1
        try:
            return left % tuple([b"1"] * n) if n else left
        except (TypeError, ValueError):
            return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        a, b = const(node.left), const(node.right)
        if a is not None and b is not None:
            return a + b
        return a if a is not None else None
    return None


def is_command(b):
    w = b.split(b" ", 1)[0].upper()
    return w.decode("latin-1") in COMMAND_WORDS


def commands_of(path):
    """(kind, bytes) in source order: kind "cmd" (untagged command) or "raw" (wire bytes)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call) or not isinstance(n.func, ast.Attribute) or not n.args:
            continue
        name = n.func.attr
        if isinstance(n.func.value, ast.Name) and n.func.value.id in ("re", "os", "shutil"):
            continue                   # re.search(), os.rename(): not IMAP
        a0 = const(n.args[0])
        if name == "search" and a0 is None and len(n.args) >= 2 and const(n.args[1]):
            a0 = const(n.args[1])      # imaplib: search(charset, criteria)
        if name in ("cmd", "ok"):
            text = next((c for c in map(const, n.args) if c), None)   # ok(r, "NOOP") too
            if text:
                found.append((n.lineno, "cmd", text))
        elif name == "select" and any(k.arg == "params" for k in n.keywords):
            params = const(next(k.value for k in n.keywords if k.arg == "params"))
            if params:
                found.append((n.lineno, "cmd", b"SELECT INBOX (" + params + b")"))
        elif name == "check" and a0 is not None and "search" in path:
            found.append((n.lineno, "cmd", b"SEARCH " + a0 if a0 else b"SEARCH ALL"))
        elif name == "search" and a0:
            found.append((n.lineno, "cmd", a0 if is_command(a0) else b"SEARCH " + a0))
        elif name in ("section", "assertSection") and len(n.args) >= 2:
            seq = const(n.args[0]) or b"1"
            spec = const(n.args[1])
            if spec is not None:
                found.append((n.lineno, "cmd", b"FETCH " + seq + b" (BODY.PEEK[" + spec + b"])"))
        elif name == "fetch" and len(n.args) >= 2 and const(n.args[1]):
            seq = const(n.args[0]) or b"1"
            found.append((n.lineno, "cmd", b"FETCH " + seq + b" " + const(n.args[1])))
        elif name in ("send", "sendall") and a0 and (b"\r\n" in a0 or b"\n" in a0):
            found.append((n.lineno, "raw", a0))
        if name in IMAPLIB and name not in ("search", "fetch") and a0 is not None:
            args = [const(a) for a in n.args]
            if all(a is not None or isinstance(x, ast.Constant) for a, x in zip(args, n.args)):
                words = [name.upper().encode()] + [a for a in args if a]
                if name == "uid":
                    words = [b"UID"] + [a for a in args if a]
                found.append((n.lineno, "cmd", b" ".join(words)))
    found.sort(key=lambda x: x[0])
    out, seen = [], set()
    for _, kind, b in found:
        if kind == "cmd" and b.endswith(b" "):
            b += b"INBOX"              # an argument the source computes
        if b in seen or len(b) > 4000 or (kind == "cmd" and not is_command(b)):
            continue
        seen.add(b)
        out.append((kind, b))
    return out


def readme_transcript():
    text = open(os.path.join(ROOT, "README.md"), "rb").read()
    return [line[3:] for line in text.split(b"\n") if line.startswith(b"C: ")]


def tag(i):
    return b"t%d" % i


def script(items):
    """Commands (kind, bytes) as wire bytes with tags."""
    out = b""
    for i, (kind, b) in enumerate(items):
        if kind == "raw":
            out += b.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
            if not out.endswith(b"\r\n"):
                out += b"\r\n"
        else:
            out += tag(i) + b" " + b + b"\r\n"
    return out


# ---------------------------------------------------------------------------------------
HANDMADE_MIME = [
    b"From: a@b\r\nSubject: plain\r\n\r\nhello\r\n",
    b"",
    b"no header at all",
    b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\n\r\ncaf=E9 =\r\nsoft\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\none\r\n--c\r\n"
    b"Content-Type: text/html\r\n\r\n<p>two</p>\r\n--c--\r\n\r\n--b\r\n"
    b"Content-Type: application/octet-stream; name*0=\"long\"; name*1=\"name.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename*=utf-8''%e2%82%ac"
    b"\r\nContent-Language: en, de\r\nContent-Location: http://x/y\r\nContent-MD5: abc\r\n\r\n"
    b"aGVsbG8gd29ybGQ=\r\n--b--\r\nepilogue\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nx\r\n"
    b"--d\r\nContent-Type: text/plain\r\n\r\ny\r\n--d--\r\n",
    b"Subject: =?utf-8?B?w6l0w6k=?= =?iso-8859-1?q?caf=E9?=\r\nFrom: \"A, B\" <a@b>, group: c@d,"
    b" e@f;, <@route,@x:g@h>\r\nTo: undisclosed-recipients:;\r\nCc: (comment) x\r\n"
    b"Date: Tue, 1 Jul 03 10:52:37 +0200 (CEST)\r\nMessage-ID: <m@x>\r\nIn-Reply-To: <r@x>\r\n"
    b"Sender: \r\nReply-To: \"quoted \\\" name\" <q@x>\r\n\r\nbody\r\n",
    b"Content-Type: multipart/mixed\r\n\r\nno boundary: text/plain\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter at all\r\n",
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Content-Type: text/plain\r\n\r\ndeep\r\n",
    b"Content-Type: text/plain\n\nbare LF\nlines\n",
    b"Subject: bare CR\rX: y\r\n\r\nbody\rmore",
]


def nested(depth, kind):
    """A message nested depth levels deep (multipart or message/rfc822)."""
    if kind == "multipart":
        m = b"Content-Type: text/plain\r\n\r\nleaf\r\n"
        for i in range(depth):
            b = b"b%d" % i
            m = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" +
                 m + b"\r\n--" + b + b"--\r\n")
        return m
    m = b"Subject: leaf\r\n\r\nleaf\r\n"
    for i in range(depth):
        m = b"Subject: level %d\r\nContent-Type: message/rfc822\r\n\r\n" % i + m
    return m


HANDMADE_MBOX = [
    b"",
    b"From a@b Mon Jan  1 00:00:00 2024\n\n",
    b"From imapmem Thu Jan  1 00:00:00 1970 +0000\nSubject: saved\nX-IMAPbase: 7 9 $Forwarded work\n"
    b"Status: RO\nX-Status: AFTD\nX-Keywords: work $Forwarded\nX-UID: 9\n"
    b"X-Imapmem-Eol: lf=2,4-5 noeol\nX-Imapmem-Original-Status: kept\n\n>From quoted\n>>From twice\n"
    b"line\r\n\n",
    b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nFrom: Mail System Internal Data "
    b"<MAILER-DAEMON@imapmem>\nSubject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
    b"X-IMAP: 1234 56 k1 k2\nStatus: RO\n\nThis text is part of the internal format.\n\n"
    b"From a Tue Nov 24 10:00:00 2026 -0130\nX-UID: 57\n\nafter the pseudo message\n",
    b"From a@b Mon Jan  1 00:00:00 2024\r\nSubject: crlf\r\nX-Keywords: a,b,,c\r\n"
    b" continued\r\n\r\nbody\r\n\r\nFrom b Sat Feb 29 23:59:60 2020\r\nDate: 1 Jan 2020 00:00 EST\r\n"
    b"\r\nFrom not a separator\r\n",
]

SEARCH_EXTRA = [b"CHARSET UTF-8 TEXT \"\xc3\xa9t\xc3\xa9\"", b"OR (SEEN FLAGGED) NOT 1:3,*",
                b"HEADER X-Custom \"\"", b"BODY {3}\r\nabc", b"SENTBEFORE \"1-Jan-2030\" LARGER 10",
                b"UID 1:* SMALLER 4294967295 KEYWORD $Label1 UNKEYWORD work", b"(((ALL)))",
                b"NOT " * 70 + b"ALL", b"TEXT aaaaaaaaaaaaaaaaaab"]
FETCH_EXTRA = [b"1:* ALL", b"* FAST", b"1,2:3 FULL", b"1 BODY.PEEK[1.2.3.MIME]<0.4294967295>",
               b"1:* (BODY[HEADER.FIELDS.NOT (\"a b\" {1}\r\nc)] RFC822.TEXT)",
               b"2:* (BODY[2.1.TEXT] BODY[2.HEADER] BODY[2.1.1])", b"* BODY[]<10.5>",
               b"1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)"]
ARGS_EXTRA = {
    A_SEQSET: [b"1,3:4,*,9:7", b"4294967295:*", b"*:*", b"1:2,3:4,5:6,7:8,9:10,11"],
    A_FLAGS: [b"(\\Seen \\Deleted $Label1 foo $label1)", b"\\Flagged \\Draft kw", b"()",
              b"(\\*)", b"(\\Answered)"],
    A_DATE: [b"\" 5-Nov-2026 10:11:12 -0130\"", b"\"29-Feb-2000 23:59:60 +9959\"",
             b"\"01-Jan-0000 00:00:00 -1200\"", b"1-Feb-2026", b"\"31-Dec-9999\""],
    A_MAILBOX: [b"inbox/Sub\x00*", b"Work/\x00%/%", b"\"a \\\" b\"\x00*b*", b"{5}\r\nINBOX\x00inbox",
                b"Lists/ietf\x00L*%f", b"%%%%%%%%%%%%%%%%%%%%a\x00" + b"b" * 40],
    A_NEEDLE: [b"abc\x00xxabcxx", b"aab\x00" + b"a" * 300 + b"b", b"ABAB\x00abababab",
               b"\x00anything", b"zebrafish\x00the ZEBRAFISH"],
    A_DECODE: [b"=?utf-8?B?w6l0w6k=?= =?iso-8859-1?q?caf=E9?=", b"AHRlc3QAdGVzdA==",
               b"soft=\r\nbreak=3D=4", b"=?x*en?Q?a_b?= c"],
}


def mbox_seeds():
    out = {}
    for f in fixture_files():
        name = os.path.relpath(f, FIX).replace("/", "_")
        out["fixture_" + name] = open(f, "rb").read()
    for i, b in enumerate(HANDMADE_MBOX):
        out["handmade_%02d" % i] = b
    return out


def mime_seeds():
    out = {}
    for f in fixture_files():
        base = os.path.relpath(f, FIX).replace("/", "_").replace(".mbox", "")
        for i, m in enumerate(split_mbox(open(f, "rb").read())):
            out["%s_%02d" % (base, i + 1)] = m
    for i, m in enumerate(HANDMADE_MIME):
        out["handmade_%02d" % i] = m
    for d in (3, 20, 63, 64, 70):
        out["nested_multipart_%d" % d] = nested(d, "multipart")
    for d in (3, 20, 63, 64):
        out["nested_message_%d" % d] = nested(d, "message")
    # the hand-written half of make difftest's corpus, and the smaller generated messages
    sys.path.insert(0, os.path.join(ROOT, "test"))
    import mimegen
    import test_fidelity
    crlf = lambda m: m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for i, m in enumerate(test_fidelity.corpus()):
        out["fidelity_%02d" % i] = crlf(m)
    for i, m in enumerate(mimegen.messages()[:60]):
        if len(m) <= 4000:
            out["mimegen_%02d" % i] = crlf(m)
    return out


def test_commands():
    cmds = {}
    for f in sorted(glob.glob(os.path.join(ROOT, "test", "test_*.py"))):
        cmds[os.path.basename(f)[5:-3]] = commands_of(f)
    return cmds


def session_seeds(cmds):
    out = {}
    readme = readme_transcript()
    out["readme_transcript"] = bytes([S_NOTAUTH]) + b"".join(l + b"\r\n" for l in readme)
    for name, items in cmds.items():
        for k in range(0, len(items), 8):
            chunk = items[k:k + 8]
            text = script(chunk)
            if not text or len(text) > MAX_SEED:
                continue
            mode = [S_SELECT, S_MIME, S_SEARCH, S_EXAMINE, S_AUTH][(k // 8) % 5]
            if any(kind == "cmd" and b.upper().startswith((b"LOGIN", b"AUTHENTICATE"))
                   for kind, b in chunk):
                mode = S_NOTAUTH
            out["%s_%03d" % (name, k // 8)] = bytes([mode]) + text
    out["handmade_literals"] = bytes([S_SELECT]) + (
        b"a APPEND INBOX (\\Seen $x) \" 1-Jan-2020 00:00:00 +0000\" {31}\r\n"
        b"Subject: appended\r\n\r\nbody\r\n\r\nb APPEND Mime {5+}\r\nhello\r\nc FETCH * (BODY[] "
        b"BODYSTRUCTURE)\r\nd UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\ne UID EXPUNGE 2:4\r\n"
        b"f MOVE 1 Search\r\ng IDLE\r\nDONE\r\nh CLOSE\r\n")
    out["handmade_qresync"] = bytes([S_AUTH]) + (
        b"a ENABLE QRESYNC\r\nb SELECT INBOX (QRESYNC (1 1 1:10 (1:3 1,2,3)))\r\n"
        b"c UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\nd STORE 1 +FLAGS (\\Deleted)\r\n"
        b"e EXPUNGE\r\nf SEARCH MODSEQ 1\r\ng UID STORE 2 (UNCHANGEDSINCE 1) +FLAGS (x)\r\n"
        b"h SEARCH RETURN (MIN MAX COUNT ALL) ALL\r\ni EXAMINE Mime (CONDSTORE)\r\n"
        b"j FETCH 1:* (MODSEQ) (CHANGEDSINCE 0)\r\nk APPEND INBOX {4-}\r\nabcd\r\n")
    out["handmade_auth"] = bytes([S_NOTAUTH]) + (
        b"a AUTHENTICATE PLAIN\r\nAHRlc3QAdGVzdA==\r\nb AUTHENTICATE PLAIN AHRlc3QAdGVzdA==\r\n"
        b"c LOGIN {4}\r\ntest {4+}\r\ntest\r\nd ID (\"name\" \"fuzz\")\r\ne NAMESPACE\r\n")
    out["handmade_mailboxes"] = bytes([S_AUTH]) + (
        b"a CREATE Work/New/Deep\r\nb RENAME Work Play\r\nc LIST \"\" *\r\nd LSUB \"\" %\r\n"
        b"e SUBSCRIBE Play/New\r\nf STATUS Play/New (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)"
        b"\r\ng DELETE Play/New/Deep\r\nh COPY 1 INBOX\r\ni SELECT Lists/ietf\r\nj UNSELECT\r\n"
        b"k LOGOUT\r\n")
    return out


def args_seeds(cmds):
    out = {}
    searches, fetches = set(), set()
    for items in cmds.values():
        for kind, b in items:
            if kind != "cmd":
                continue
            u = b.upper()
            if u.startswith(b"UID "):
                b, u = b[4:], u[4:]
            if u.startswith(b"SEARCH ") and len(b) < 2000:
                searches.add(b[7:])
            elif u.startswith(b"FETCH ") and len(b) < 2000:
                fetches.add(b[6:])
    for i, s in enumerate(sorted(searches) + SEARCH_EXTRA):
        out["search_%03d" % i] = bytes([A_SEARCH + (8 if i % 4 == 3 else 0)]) + s
    for i, s in enumerate(sorted(fetches) + FETCH_EXTRA):
        out["fetch_%03d" % i] = bytes([A_FETCH + (8 if i % 4 == 3 else 0)]) + s
    names = {A_SEQSET: "seqset", A_FLAGS: "flags", A_DATE: "date", A_MAILBOX: "mailbox",
             A_NEEDLE: "needle", A_DECODE: "decode"}
    for mode, items in ARGS_EXTRA.items():
        for i, s in enumerate(items):
            out["%s_%02d" % (names[mode], i)] = bytes([mode]) + s
    return out


def write(root, target, seeds):
    d = os.path.join(root, target)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return len(seeds), sum(len(v) for v in seeds.values())


def generate(root):
    cmds = test_commands()
    sizes = {}
    for target, seeds in (("mbox", mbox_seeds()), ("mime", mime_seeds()),
                          ("session", session_seeds(cmds)), ("args", args_seeds(cmds))):
        sizes[target] = write(root, target, seeds)
    return sizes


def tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode() + b"\0" + open(p, "rb").read() + b"\0")
    return h.hexdigest()


def main(argv):
    corpus = os.path.join(HERE, "corpus")
    if argv[1:] == ["--check"]:
        with tempfile.TemporaryDirectory() as tmp:
            generate(tmp)
            same = os.path.isdir(corpus) and tree_digest(tmp) == tree_digest(corpus)
        print("seed corpora are %s" % ("up to date" if same else "STALE: run test/fuzz/seed.py"))
        return 0 if same else 1
    sizes = generate(corpus)
    total_n = total_b = 0
    for target, (n, b) in sizes.items():
        print("%-8s %4d files %8d bytes" % (target, n, b))
        total_n, total_b = total_n + n, total_b + b
    print("%-8s %4d files %8d bytes" % ("total", total_n, total_b))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
