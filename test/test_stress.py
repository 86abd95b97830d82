"""Stress: many clients at once on one mailbox, in the manner of imaptest's stress mode.

Dovecot's imaptest (its default stress profile) logs N clients in to one server, selects
INBOX and issues a random mix of FETCH, STORE, EXPUNGE, APPEND, SEARCH, COPY, NOOP and
LOGOUT, checking every response against a model of what each client has been told.  This
is the same idea in Python, so the project's tests do not need imaptest:

* the server is loaded with a generated INBOX of NMSG messages with unique Message-IDs (and
  an empty Trash); every client logs in, SELECTs INBOX, fetches 1:* (UID FLAGS) and then
  issues a fixed number of commands (not a fixed time: a slow sanitizer build does the same
  work), chosen by a seeded random generator from:
    FETCH (FLAGS UID), FETCH ([UID] BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]), FETCH BODY[]
    on sequence numbers, ranges, n:* and 1:*; UID FETCH; STORE and UID STORE +FLAGS/-FLAGS
    [.SILENT] with system flags and $Label1..$Label5 (never \\Deleted); STORE +FLAGS
    (\\Deleted) then EXPUNGE; APPEND of a new message with a unique Message-ID (sometimes
    with flags and keywords); SEARCH and UID SEARCH; COPY into INBOX; MOVE to Trash; NOOP;
    now and then LOGOUT and a new connection;
* each client models its view: the UIDs by sequence number (None until a FETCH tells it),
  grown by EXISTS and shrunk by EXPUNGE, and the keywords the last `* FLAGS` announced;
* every response is checked, and every inconsistency is an error of a named kind:
  - a tagged NO or BAD, except NO [EXPUNGEISSUED] to COPY and MOVE (RFC 2180 4.4.1, as
    Dovecot says it), and with --strict-expunge also to FETCH and STORE (RFC 2180 4.1.2,
    4.2.2); without it FETCH of a message another session expunged answers it as it was
    and STORE on it changes nothing (4.1.1, as Dovecot and Cyrus);
  - a FETCH or EXPUNGE number outside the view, EXISTS that shrinks it, an EXPUNGE while
    FETCH, STORE or SEARCH is answered (RFC 3501 7.4.1), a SEARCH number outside the view;
  - UIDs not strictly ascending in the view, a FETCH UID that is not the model's UID for
    that number, a UID coming back after its EXPUNGE (in this session, or in one selected
    after another session was told of it);
  - a keyword in FETCH FLAGS that no `* FLAGS` response announced first (RFC 3501 7.2.6);
  - a requested message left out of a FETCH answer (unless NO [EXPUNGEISSUED] under
    --strict-expunge); a message whose non-silent STORE answer does not show the change
    (no FETCH, or only an older one) although the next NOOP or EXPUNGE does not report it
    expunged (then the STORE rightly changed nothing); under --strict-expunge, a STORE
    that says OK without showing every change;
  - the Message-ID or the bytes of a UID changing (from the fixture, APPENDUID, COPYUID,
    or the first FETCH of it); a \\Deleted message surviving EXPUNGE, a moved one MOVE;
  - a lost connection, a missing `* BYE` at LOGOUT, no answer within CMD_TIMEOUT.
A run reports every error in its assertion message: counts by kind, the first 20, and the
first of each kind not among them.
IMAPMEM_STRESS_SEED=N runs it with another seed.
"""
import collections
import os
import random
import re
import socket
import tempfile
import threading
import time
import traceback

import imapref
from wire import (ParseError, Raw, ServerCase, expand_set, parse_line, status_parts, upper,
                  write_mbox)

SEED = int(os.environ.get("IMAPMEM_STRESS_SEED", "20261204"))
NMSG = 50
UIDVALIDITY = 1
SYSTEM_FLAGS = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"]
KEYWORDS = ["$Label%d" % i for i in range(1, 6)]
CMD_TIMEOUT = 30.0        # no answer this long: the server hangs (a hang fails, never blocks)
RUN_TIMEOUT = 240.0       # the whole run, sanitizer builds included
SHOW = 20                 # errors quoted in the assertion message

MID_RE = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]*>)", re.I | re.M)


def fixture_text(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        body = "".join("Line %d of message %d: %s\n" % (k, i, "x" * rng.randint(0, 70))
                       for k in range(rng.randint(1, 40)))
        out.append("From stress@example.com Mon Jan %2d 10:%02d:00 2024\n"
                   "From: Stress <stress@example.com>\n"
                   "To: Test <test@example.com>\n"
                   "Subject: stress message %d\n"
                   "Date: Mon, %d Jan 2024 10:%02d:00 +0000\n"
                   "Message-ID: <fixture-%d.%d@stress.imapmem.test>\n"
                   "%s\n%s" % (1 + i % 28, i % 60, i, 1 + i % 28, i % 60, i, seed,
                               "Status: RO\n" if i % 3 == 0 else "", body))
    return "\n".join(out)


def message_id(body):
    m = MID_RE.search(body)
    return m.group(1) if m else None


def norm(flag):
    return flag.lower() if isinstance(flag, str) else str(flag).lower()


class Abort(Exception):
    """The client cannot go on (connection lost, no answer, run stopped)."""


class Ctx:
    """What one command's answer said, beyond the model updates."""

    def __init__(self, text, verb):
        self.text = text
        self.verb = verb                 # "FETCH", "UID STORE", ...
        self.no_expunge = verb in ("FETCH", "STORE", "SEARCH")   # RFC 3501 7.4.1
        self.fetch = {}                  # seq -> merged items
        self.fetch_flags = collections.defaultdict(list)   # seq -> [FLAGS value, ...]
        self.search = None
        self.expunged = []               # UIDs (or None) of EXPUNGE responses
        self.codes = []                  # untagged OK [CODE ...] as token lists
        self.bye = False
        self.status = None               # "OK", "NO", "BAD"
        self.tagged = b""


class Run:
    """State shared by the clients of one run: what is known of each UID, and the errors."""

    def __init__(self, host, port, strict, seed, truth):
        self.host, self.port, self.strict, self.seed = host, port, strict, seed
        self.lock = threading.Lock()
        self.bodies = dict(truth)        # uid -> message bytes
        self.mids = {u: message_id(b) for u, b in truth.items()}   # uid -> Message-ID
        self.expunged_at = {}            # uid -> monotonic time a client was first told
        self.errors = []                 # (time, client, kind, detail)
        self.stop = threading.Event()
        self.clients = []

    def error(self, client, kind, detail):
        with self.lock:
            self.errors.append((time.monotonic(), client, kind, detail))

    def learn_mid(self, client, uid, mid, where):
        with self.lock:
            old = self.mids.setdefault(uid, mid)
        if old != mid:
            self.error(client, "Message-ID of a UID changed",
                       "%s: UID %d had %r, now %r" % (where, uid, old, mid))

    def learn_body(self, client, uid, body, where):
        with self.lock:
            old = self.bodies.setdefault(uid, body)
        if old != body:
            self.error(client, "message bytes of a UID changed",
                       "%s: UID %d: %d bytes %r..., now %d bytes %r..."
                       % (where, uid, len(old), old[:60], len(body), body[:60]))
        self.learn_mid(client, uid, message_id(body), where)

    def copied(self, client, src, dst, where):
        with self.lock:
            body = self.bodies.get(src)
        if body is not None:
            self.learn_body(client, dst, body, where + " (copy of UID %d)" % src)

    def told_expunged(self, uid):
        with self.lock:
            self.expunged_at.setdefault(uid, time.monotonic())

    def expunged_before(self, uid, t):
        with self.lock:
            at = self.expunged_at.get(uid)
        return at is not None and at < t

    def report(self, title):
        errs = sorted(self.errors, key=lambda e: e[0])
        kinds = collections.Counter(e[2] for e in errs)
        lines = ["%s: %d errors" % (title, len(errs)), "  by kind:"]
        lines += ["  %6d  %s" % (n, k) for k, n in kinds.most_common()]
        lines.append("  first %d:" % min(SHOW, len(errs)))
        lines += ["    c%d %s: %s" % (c, k, d) for _, c, k, d in errs[:SHOW]]
        shown = {e[2] for e in errs[:SHOW]}
        rest = [e for e in errs[SHOW:] if e[2] not in shown and not shown.add(e[2])]
        if rest:
            lines.append("  first of each other kind:")
            lines += ["    c%d %s: %s" % (c, k, d) for _, c, k, d in rest]
        return "\n".join(lines)


class Client:
    def __init__(self, run, cid, ncommands):
        self.run, self.cid, self.ncommands = run, cid, ncommands
        self.rng = random.Random(run.seed * 1000 + cid)
        self.conn = None
        self.view = []                   # UID (or None: not yet told) by sequence number - 1
        self.announced = set()           # keywords of the last * FLAGS, lower case
        self.expunged_uids = set()       # UIDs this client was told are expunged
        self.must_expunge = {}           # UID -> command that left it out of its answer
        self.selected_at = 0.0
        self.done = 0
        self.nappend = 0
        self.command = ""

    # -- errors and I/O ------------------------------------------------------------------

    def error(self, kind, detail=""):
        self.run.error(self.cid, kind, "#%d %s: %s" % (self.done, self.command[:120], detail))

    def read_unit(self):
        try:
            return self.conn.read_response_line()
        except socket.timeout:
            self.error("no answer within %ds" % CMD_TIMEOUT, "buffer %r" % self.conn.buf[:200])
            raise Abort()
        except (EOFError, OSError) as e:
            if not self.run.stop.is_set():
                self.error("connection lost", repr(e)[:200])
            raise Abort()

    def send(self, data):
        try:
            self.conn.send(data)
        except OSError as e:
            if not self.run.stop.is_set():
                self.error("connection lost", "sending: %r" % e)
            raise Abort()

    def cmd(self, text, literal=None):
        """Send one command (APPEND's literal after the '+'), process every untagged
        response in order, check the tagged one; returns the Ctx."""
        if self.run.stop.is_set():
            raise Abort()
        self.command = text
        verb = " ".join(text.split()[:2]).upper() if text.upper().startswith("UID ") \
            else text.split()[0].upper()
        ctx = Ctx(text, verb)
        tag = self.conn.tag()
        t = tag.encode() + b" "
        self.send("%s %s\r\n" % (tag, text))
        if literal is not None:
            while True:
                unit = self.read_unit()
                if unit.startswith(b"+"):
                    break
                if unit.startswith(t):
                    self.tagged(ctx, unit[len(t):])
                    self.error("APPEND refused its literal", unit[:200])
                    return ctx
                self.untagged(unit, ctx)
            self.send(literal + b"\r\n")
        while True:
            unit = self.read_unit()
            if unit.startswith(t):
                self.tagged(ctx, unit[len(t):])
                return ctx
            self.untagged(unit, ctx)

    def tagged(self, ctx, line):
        line = line.rstrip(b"\r\n")
        ctx.tagged = line
        ctx.status = line.split(b" ", 1)[0].decode("latin-1").upper()
        if ctx.status == "OK":
            return
        expungeissued = line.startswith(b"NO [EXPUNGEISSUED]")
        if expungeissued and ctx.verb in ("COPY", "MOVE", "UID COPY", "UID MOVE"):
            return
        if expungeissued and self.run.strict and ctx.verb in ("FETCH", "STORE", "UID FETCH",
                                                             "UID STORE"):
            return
        try:
            code = status_parts(line)[1]
        except (ParseError, ValueError):
            code = None
        code = " [%s]" % code[0] if code else ""
        self.error("tagged %s%s to %s" % (ctx.status, code, ctx.verb), line[:200])

    # -- the model -----------------------------------------------------------------------

    def untagged(self, unit, ctx):
        try:
            r = parse_line(unit)
        except (ParseError, ValueError, IndexError) as e:
            kind = "unparsable FETCH response" if b" FETCH " in unit[:24] else "unparsable response"
            self.error(kind, "%s: %r" % (e, unit[:200]))
            return
        if len(r) == 2 and isinstance(r[0], int) or r[1:2] == ["FETCH"]:
            n, word = r[0], upper(r[1])
            if word == "FETCH":
                self.on_fetch(n, r, unit, ctx)
            elif word == "EXISTS":
                if n < len(self.view):
                    self.error("EXISTS shrinks the view", "%d EXISTS, view %d"
                               % (n, len(self.view)))
                else:
                    self.view += [None] * (n - len(self.view))
            elif word == "EXPUNGE":
                self.on_expunge(n, ctx)
            if word in ("FETCH", "EXISTS", "EXPUNGE", "RECENT"):
                return
        word = upper(r[0]) if r else None
        if word == "FLAGS":
            if len(r) != 2 or not isinstance(r[1], list):
                self.error("bad FLAGS response", unit[:200])
                return
            self.announced = {norm(f) for f in r[1] if not str(f).startswith("\\")}
        elif word == "SEARCH":
            self.on_search(r[1:], ctx)
        elif word == "OK":
            if r[1]:
                ctx.codes.append(r[1])
        elif word == "BYE":
            ctx.bye = True
        elif word in ("CAPABILITY",):
            pass
        else:
            self.error("unexpected untagged response", unit[:200])

    def on_expunge(self, n, ctx):
        if ctx.no_expunge:
            self.error("EXPUNGE while %s is answered" % ctx.verb, "* %d EXPUNGE" % n)
        if not 1 <= n <= len(self.view):
            self.error("EXPUNGE number outside the view", "* %d EXPUNGE, view %d"
                       % (n, len(self.view)))
            return
        uid = self.view.pop(n - 1)
        ctx.expunged.append(uid)
        if uid is not None:
            self.expunged_uids.add(uid)
            self.must_expunge.pop(uid, None)
            self.run.told_expunged(uid)

    def learn_uid(self, n, uid, where):
        cur = self.view[n - 1]
        if cur is not None:
            if cur != uid:
                self.error("FETCH UID is not the model's UID for that number",
                           "%s: seq %d is UID %d, FETCH says %d" % (where, n, cur, uid))
            return
        if uid in self.expunged_uids:
            self.error("UID back after its EXPUNGE", "%s: seq %d UID %d" % (where, n, uid))
        elif self.run.expunged_before(uid, self.selected_at):
            self.error("UID expunged before SELECT is in the view",
                       "%s: seq %d UID %d" % (where, n, uid))
        for j in range(n - 2, -1, -1):
            if self.view[j] is not None:
                if self.view[j] >= uid:
                    self.error("UIDs not strictly ascending", "%s: seq %d UID %d, seq %d UID %d"
                               % (where, j + 1, self.view[j], n, uid))
                break
        for j in range(n, len(self.view)):
            if self.view[j] is not None:
                if self.view[j] <= uid:
                    self.error("UIDs not strictly ascending", "%s: seq %d UID %d, seq %d UID %d"
                               % (where, n, uid, j + 1, self.view[j]))
                break
        self.view[n - 1] = uid

    def on_fetch(self, n, r, unit, ctx):
        if not 1 <= n <= len(self.view):
            self.error("FETCH number outside the view", "view %d: %r" % (len(self.view),
                                                                          unit[:150]))
            return
        items = dict(zip(r[2][0::2], r[2][1::2]))
        uid = items.get("UID")
        if uid is not None:
            if not isinstance(uid, int):
                self.error("unparsable FETCH response", "UID %r" % (uid,))
                return
            self.learn_uid(n, uid, "* %d FETCH" % n)
        uid = self.view[n - 1]
        flags = items.get("FLAGS")
        if flags is not None:
            if not isinstance(flags, list):
                self.error("unparsable FETCH response", "FLAGS %r" % (flags,))
                return
            for f in flags:
                if not str(f).startswith("\\") and norm(f) not in self.announced:
                    self.error("keyword in FETCH FLAGS not announced by * FLAGS first",
                               "%s in %r; announced %s" % (f, unit[:120],
                                                          sorted(self.announced)))
            ctx.fetch_flags[n].append({norm(f) for f in flags})
        for key, val in items.items():
            if key.startswith("BODY[HEADER.FIELDS") and uid is not None:
                if not isinstance(val, bytes):
                    self.error("unparsable FETCH response", "%s %r" % (key, val))
                    continue
                self.run.learn_mid(self.cid, uid, message_id(val),
                                   "#%d %s" % (self.done, self.command[:60]))
            elif key == "BODY[]" and uid is not None:
                if not isinstance(val, bytes):
                    self.error("unparsable FETCH response", "%s %r" % (key, val))
                    continue
                self.run.learn_body(self.cid, uid, val,
                                    "#%d %s" % (self.done, self.command[:60]))
        ctx.fetch.setdefault(n, {}).update(items)

    def on_search(self, nums, ctx):
        if not all(isinstance(x, int) for x in nums):
            self.error("unparsable SEARCH response", repr(nums)[:200])
            return
        if nums != sorted(set(nums)):
            self.error("SEARCH numbers not ascending", repr(nums)[:200])
        if ctx.verb == "SEARCH":
            bad = [x for x in nums if not 1 <= x <= len(self.view)]
            if bad:
                self.error("SEARCH number outside the view", "%r, view %d"
                           % (bad[:10], len(self.view)))
        ctx.search = nums

    def check_told(self, ctx):
        """After NOOP or EXPUNGE: whatever a FETCH or STORE left out was expunged."""
        for uid, where in sorted(self.must_expunge.items()):
            self.error("left out of (or unchanged in) an answer, yet not expunged by the "
                       "next %s" % ctx.verb, "UID %d: %s" % (uid, where))
        self.must_expunge.clear()

    # -- sets ----------------------------------------------------------------------------

    def seqset(self, small=False):
        """(text, [sequence numbers]) within the view; the view is not empty."""
        rng, n = self.rng, len(self.view)
        r = rng.random()
        if r < 0.4 or (small and r < 0.7):
            k = rng.randint(1, n)
            return str(k), [k]
        if r < 0.7 or small:
            a = rng.randint(1, n)
            b = min(n, a + rng.randint(1, 3 if small else 8))
            return ("%d:%d" % (a, b) if rng.random() < 0.8 else "%d:%d" % (b, a)), \
                list(range(a, b + 1))
        if r < 0.8:
            a = rng.randint(max(1, n - 6), n)
            return "%d:*" % a, list(range(a, n + 1))
        if r < 0.9:
            a, b = sorted(rng.sample(range(1, n + 1), 2)) if n > 1 else (1, 1)
            return "%d,%d" % (a, b), sorted({a, b})
        return "1:*", list(range(1, n + 1))

    def uidset(self):
        """(text, set of known UIDs of the view it names) or None without known UIDs."""
        known = [u for u in self.view if u is not None]
        if not known:
            return None
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            u = rng.choice(known)
            return str(u), {u}
        if r < 0.8:
            a, b = sorted(rng.sample(known, 2)) if len(known) > 1 else (known[0], known[0])
            return "%d:%d" % (a, b), {u for u in known if a <= u <= b}
        if r < 0.9:
            a = rng.choice(known[-5:])
            return "%d:*" % a, {u for u in known if u >= a}
        pick = sorted(set(rng.sample(known, min(3, len(known)))))
        return ",".join(map(str, pick)), set(pick)

    # -- connection ----------------------------------------------------------------------

    def connect(self):
        try:
            self.conn = Raw(self.run.host, self.run.port, timeout=CMD_TIMEOUT)
        except (OSError, EOFError) as e:
            self.error("cannot connect", repr(e))
            raise Abort()
        with self.run.lock:
            self.run.clients.append(self.conn)
        if not self.conn.greeting.startswith(b"* OK"):
            self.error("bad greeting", self.conn.greeting[:200])
        self.must_expunge.clear()
        self.cmd("LOGIN test test")
        self.view, self.announced = [], set()
        self.selected_at = time.monotonic()
        ctx = self.cmd("SELECT INBOX")
        if ctx.status != "OK":
            raise Abort()
        uv = [c for c in ctx.codes if upper(c[0]) == "UIDVALIDITY"]
        if not uv or uv[0][1:] != [UIDVALIDITY]:
            self.error("UIDVALIDITY not %d" % UIDVALIDITY, repr(uv))
        if self.view:
            self.fetch_and_check("1:*", list(range(1, len(self.view) + 1)), "(UID FLAGS)",
                                 "FLAGS")

    def logout(self):
        ctx = self.cmd("LOGOUT")
        if not ctx.bye:
            self.error("LOGOUT without * BYE", ctx.tagged[:100])
        self.conn.close()
        self.conn = None

    # -- commands ------------------------------------------------------------------------

    def fetch_and_check(self, sset, seqs, items, key):
        ctx = self.cmd("FETCH %s %s" % (sset, items))
        missing = [n for n in seqs if not any(k.startswith(key) for k in ctx.fetch.get(n, ()))]
        if missing:
            if self.run.strict and ctx.status == "NO":
                for n in missing:
                    if n <= len(self.view) and self.view[n - 1] is not None:
                        self.must_expunge[self.view[n - 1]] = ctx.text
            else:
                self.error("FETCH left out requested messages",
                           "numbers %r (%s)" % (missing[:10], ctx.tagged[:60]))

    def do_fetch(self):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            sset, seqs = self.seqset()
            self.fetch_and_check(sset, seqs, rng.choice(["(FLAGS UID)", "(UID FLAGS)",
                                                         "FLAGS"]), "FLAGS")
        elif r < 0.8:
            sset, seqs = self.seqset()
            items = rng.choice(["(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                                "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                                "(UID FLAGS BODY.PEEK[HEADER.FIELDS (Message-ID)])"])
            self.fetch_and_check(sset, seqs, items, "BODY[HEADER.FIELDS")
        else:
            sset, seqs = self.seqset(small=True)
            items = rng.choice(["BODY[]", "(UID BODY[])", "(UID BODY.PEEK[])"])
            self.fetch_and_check(sset, seqs, items, "BODY[]")

    def do_uid_fetch(self):
        picked = self.uidset()
        if picked is None:
            return self.do_fetch()
        uset, want = picked
        items, key = self.rng.choice([("(FLAGS)", "FLAGS"),
                                      ("(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                                       "BODY[HEADER.FIELDS"),
                                      ("(FLAGS BODY.PEEK[])", "BODY[]")])
        ctx = self.cmd("UID FETCH %s %s" % (uset, items))
        got = set()
        for d in ctx.fetch.values():
            if not any(k.startswith(key) for k in d):
                continue
            u = d.get("UID")
            if u is None:
                if key != "FLAGS":           # RFC 3501 6.4.8
                    self.error("UID FETCH answer without UID", repr(sorted(d))[:100])
                continue
            got.add(u)
            if key != "FLAGS" and not self.uid_in(u, uset):
                self.error("UID FETCH answered a UID outside the set", "UID %r" % (u,))
        missing = sorted(want - got - set(ctx.expunged))
        if missing:
            if self.run.strict and ctx.status == "NO":
                for u in missing:
                    self.must_expunge[u] = ctx.text
            else:
                self.error("UID FETCH left out requested messages",
                           "UIDs %r (%s)" % (missing[:10], ctx.tagged[:60]))

    @staticmethod
    def uid_in(uid, uset):
        if not isinstance(uid, int):
            return False
        for part in uset.split(","):
            a, _, b = part.partition(":")
            if not b:
                if uid == int(a):
                    return True
            elif b == "*":
                if uid >= int(a):
                    return True
            elif min(int(a), int(b)) <= uid <= max(int(a), int(b)):
                return True
        return False

    def flag_change(self):
        rng = self.rng
        flags = rng.sample(SYSTEM_FLAGS + KEYWORDS, rng.choice([1, 1, 1, 2, 3]))
        op = rng.choice("+-")
        silent = rng.random() < 0.25
        return op, flags, "%sFLAGS%s (%s)" % (op, ".SILENT" if silent else "", " ".join(flags)), \
            silent

    def shows_change(self, op, flags, seen):
        want = {norm(f) for f in flags}
        return any((want <= s) if op == "+" else not (want & s) for s in seen)

    def store_answered(self, ctx, op, flags, answers):
        """answers: [(what, UID or None, [FLAGS seen for it])] for the messages a STORE named.
        Each answer shows the change, or the message was expunged by another session (then
        STORE changed nothing: a FETCH for it, if any, is older; the next NOOP must say
        EXPUNGE); with --strict-expunge that must make STORE say NO [EXPUNGEISSUED]."""
        for what, uid, seen in answers:
            if seen and self.shows_change(op, flags, seen):
                continue
            if self.run.strict and ctx.status == "OK":
                self.error("%s OK, but its answer does not show the change" % ctx.verb,
                           "%s: %r" % (what, seen))
            if uid is not None:
                self.must_expunge[uid] = "%s (%s)" % (
                    ctx.text, "not answered" if not seen else "answered %r" % seen)

    def do_store(self):
        sset, seqs = self.seqset()
        op, flags, item, silent = self.flag_change()
        ctx = self.cmd("STORE %s %s" % (sset, item))
        if silent or not (ctx.status == "OK" or ctx.status == "NO" and self.run.strict):
            return
        self.store_answered(ctx, op, flags, [("seq %d" % n, self.view[n - 1],
                                              ctx.fetch_flags.get(n))
                                             for n in seqs if n <= len(self.view)])

    def do_uid_store(self):
        picked = self.uidset()
        if picked is None:
            return self.do_store()
        uset, want = picked
        op, flags, item, silent = self.flag_change()
        ctx = self.cmd("UID STORE %s %s" % (uset, item))
        if silent or not (ctx.status == "OK" or ctx.status == "NO" and self.run.strict):
            return
        by_uid = collections.defaultdict(list)
        for n, d in ctx.fetch.items():
            if "UID" in d:
                by_uid[d["UID"]] += ctx.fetch_flags.get(n, [])
        self.store_answered(ctx, op, flags, [("UID %d" % u, u, by_uid.get(u))
                                             for u in sorted(want - set(ctx.expunged))])

    def do_expunge(self):
        n = self.rng.randint(1, len(self.view))
        uid = self.view[n - 1]
        silent = self.rng.random() < 0.5
        if self.rng.random() < 0.3 and uid is not None:
            self.cmd("UID STORE %d +FLAGS%s (\\Deleted)" % (uid, ".SILENT" if silent else ""))
        else:
            self.cmd("STORE %d +FLAGS%s (\\Deleted)" % (n, ".SILENT" if silent else ""))
        self.done += 1
        ctx = self.cmd("EXPUNGE")
        if ctx.status == "OK":
            if uid is not None and uid in self.view:
                self.error("\\Deleted message survived EXPUNGE", "UID %d" % uid)
            self.check_told(ctx)

    def new_message(self):
        self.nappend += 1
        rng = self.rng
        mid = "<c%d.%d.%d@stress.imapmem.test>" % (self.cid, self.nappend, self.run.seed)
        body = "".join("Appended line %d: %s\r\n" % (k, "y" * rng.randint(0, 70))
                       for k in range(rng.randint(1, 30)))
        return ("From: Client %d <c%d@example.com>\r\nTo: Test <test@example.com>\r\n"
                "Subject: appended %d by client %d\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
                "Message-ID: %s\r\n\r\n%s" % (self.cid, self.cid, self.nappend, self.cid, mid,
                                              body)).encode()

    def do_append(self):
        msg = self.new_message()
        rng = self.rng
        flags = ""
        if rng.random() < 0.4:
            flags = "(%s) " % " ".join(rng.sample(["\\Seen", "\\Flagged"] + KEYWORDS,
                                                  rng.randint(1, 2)))
        known = [u for u in self.view if u is not None]
        ctx = self.cmd("APPEND INBOX %s{%d}" % (flags, len(msg)), literal=msg)
        if ctx.status != "OK":
            return
        code = status_parts(ctx.tagged)[1]
        if not code or upper(code[0]) != "APPENDUID" or len(code) != 3:
            self.error("APPEND OK without APPENDUID", ctx.tagged[:100])
            return
        uv, uid = code[1], code[2]
        if uv != UIDVALIDITY:
            self.error("APPENDUID with another UIDVALIDITY", ctx.tagged[:100])
        if known and uid <= max(known):
            self.error("APPENDUID not above the UIDs of the view",
                       "UID %d, view up to %d" % (uid, max(known)))
        self.run.learn_body(self.cid, uid, msg, "APPENDUID")

    def copyuid(self, code, where):
        try:
            if upper(code[0]) != "COPYUID" or code[1] != UIDVALIDITY:
                raise ValueError(code)
            src, dst = expand_set(code[2]), expand_set(code[3])
            if len(src) != len(dst):
                raise ValueError(code)
        except (ValueError, IndexError, TypeError) as e:
            self.error("bad COPYUID", repr(e)[:200])
            return []
        for s, d in zip(src, dst):
            self.run.copied(self.cid, s, d, where)
        return src

    def do_copy(self):
        sset, seqs = self.seqset(small=True)
        ctx = self.cmd("COPY %s INBOX" % sset)
        if ctx.status != "OK":
            return
        code = status_parts(ctx.tagged)[1]
        if not code or upper(code[0]) != "COPYUID":
            self.error("COPY OK without COPYUID", ctx.tagged[:100])
            return
        self.copyuid(code, "COPYUID")

    def do_move(self):
        n = self.rng.randint(1, len(self.view))
        uid = self.view[n - 1]
        ctx = self.cmd("MOVE %d Trash" % n)
        if ctx.status != "OK":
            return
        codes = [c for c in ctx.codes if upper(c[0]) == "COPYUID"]
        if not codes:
            self.error("MOVE without * OK [COPYUID]", ctx.tagged[:100])
        if uid is not None and uid in self.view:
            self.error("moved message still in the view", "UID %d" % uid)

    def do_search(self):
        rng = self.rng
        known = [u for u in self.view if u is not None]
        target = rng.choice(known) if known else None
        with self.run.lock:
            mid = self.run.mids.get(target)
        choices = ["ALL", "FLAGGED", "UNSEEN", "SEEN ANSWERED", "NOT DELETED",
                   "KEYWORD %s" % rng.choice(KEYWORDS), "UNKEYWORD %s" % rng.choice(KEYWORDS),
                   "OR FLAGGED KEYWORD %s" % rng.choice(KEYWORDS), "LARGER 1500",
                   "%d:*" % rng.randint(1, max(1, len(self.view)))]
        by_mid = mid is not None and rng.random() < 0.3
        crit = 'HEADER Message-ID "%s"' % mid.decode() if by_mid else rng.choice(choices)
        uid_form = rng.random() < 0.3
        ctx = self.cmd("%sSEARCH %s" % ("UID " if uid_form else "", crit))
        if ctx.status != "OK":
            return
        if ctx.search is None:
            self.error("SEARCH without * SEARCH")
            return
        if by_mid:   # every hit is a copy of the message
            for x in ctx.search:
                u = x if uid_form else (self.view[x - 1] if x <= len(self.view) else None)
                if u is None:
                    continue
                with self.run.lock:
                    got = self.run.mids.get(u)
                if got is not None and got != mid:
                    self.error("SEARCH HEADER Message-ID found another message",
                               "%s found UID %d with %r" % (mid, u, got))

    def do_noop(self):
        ctx = self.cmd("NOOP")
        if ctx.status == "OK":
            self.check_told(ctx)

    def step(self):
        n = len(self.view)
        if n == 0:
            self.do_append()
            return
        actions = [(self.do_fetch, 26), (self.do_uid_fetch, 6), (self.do_store, 18),
                   (self.do_uid_store, 6), (self.do_expunge, 4 if n < 80 else 12),
                   (self.do_append, 6 if n < 60 else 2), (self.do_search, 9),
                   (self.do_copy, 1), (self.do_move, 1), (self.do_noop, 8),
                   (self.reconnect, 1)]
        r = self.rng.random() * sum(w for _, w in actions)
        for action, w in actions:
            r -= w
            if r < 0:
                action()
                return

    def reconnect(self):
        self.logout()
        self.connect()

    def main(self):
        try:
            self.connect()
            while self.done < self.ncommands:
                self.step()
                self.done += 1
            self.logout()
        except Abort:
            pass
        except Exception:
            self.error("the test client crashed", traceback.format_exc()[-1500:])
        finally:
            if self.conn is not None:
                self.conn.close()


def truth_of(path):
    """UID -> message bytes as IMAP serves them (UIDs 1..n in file order)."""
    return {m.seq: m.raw for m in imapref.read_mbox(path)}


class StressTest(ServerCase):

    def stress(self, clients, commands, *server_args):
        d = tempfile.TemporaryDirectory(prefix="imapmem-stress-")
        self.addCleanup(d.cleanup)
        inbox = write_mbox(d.name, "INBOX.mbox", fixture_text(NMSG, SEED))
        write_mbox(d.name, "Trash.mbox", "")
        srv = self.start(*server_args, d.name, uidvalidity=UIDVALIDITY)
        run = Run(srv.host, srv.port, "--strict-expunge" in server_args, SEED,
                  truth_of(inbox))
        workers = [Client(run, k, commands) for k in range(clients)]
        threads = [threading.Thread(target=w.main, daemon=True) for w in workers]
        for t in threads:
            t.start()
        end = time.monotonic() + RUN_TIMEOUT
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        hung = [w for w, t in zip(workers, threads) if t.is_alive()]
        if hung:
            run.stop.set()
            for w in hung:
                run.error(w.cid, "client not done within %ds" % RUN_TIMEOUT,
                          "#%d %s" % (w.done, w.command[:120]))
            with run.lock:
                for c in run.clients:     # unblock them
                    try:
                        c.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            for t in threads:
                t.join(5)
        if srv.proc.poll() is not None:
            run.error(-1, "the server died", "status %r; stderr %s"
                      % (srv.proc.returncode, srv.stderr()[-1500:]))
        title = "stress, %d clients x %d commands%s, seed %d" % (
            clients, commands, " (%s)" % " ".join(server_args) if server_args else "", SEED)
        if run.errors:
            self.fail(run.report(title))

    def test_8_clients(self):
        self.stress(8, 300)

    def test_64_clients(self):
        self.stress(64, 150)

    def test_8_clients_strict_expunge(self):
        self.stress(8, 300, "--strict-expunge")


if __name__ == "__main__":
    import unittest
    unittest.main()
