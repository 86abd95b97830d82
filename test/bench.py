#!/usr/bin/env python3
"""make bench: measure imapmem against the limits of the machine it runs on (issues 6, 15).

Python 3 standard library only. It
  * generates deterministic (seeded) mbox corpora in a temporary folder, never in git;
  * starts ./imapmem on each (`-p 0 --uidvalidity 1 FILE`) and talks raw IMAP to it with a
    small fast client (large recv_into()s, {n} literals skipped by count);
  * measures the issue's items 1-7, each as the median of several runs with the spread;
  * measures the machine's own references with build/bench_ref (C): reading the fixture
    from the page cache, a case-insensitive scan of the same bytes, loopback TCP between two
    processes, and how fast this very client can read a recorded response from a C sender;
  * prints one table: imapmem figure, reference, ratio, the issue's target, met or not;
  * item 8 (CONDSTORE): FETCH 1:* (FLAGS) beside FETCH 1:* (FLAGS) (CHANGEDSINCE n) after
    k = 0, 10 and 1000 changes, in the same runs, and the bytes a MODSEQ adds to each
    message (build/bench_sizes, from test/bench_sizes.c);
  * issue 15's targets: the load within 1.3x of reading the fixture and SEARCH TEXT within
    1x of the C scan on every corpus, peak RSS during the load (VmHWM at the ready line)
    <= 1.2x the fixture, RSS after FETCH ENV+BS <= 1.15x + 200 B a message;
  * item 6 (1, 8, 64 and 256 clients) driven by build/bench_load (C, a few epoll threads,
    from test/bench_load.c, at nice -10 where allowed so that the server's runnable threads
    cannot starve it) when it is built: at 256 clients >= 0.9x the commands/s of 8,
    p99 < 10 ms, no failed command;
  * item 9: spawning ./imapmem on fixtures/basic.mbox until its ready line, against
    spawning /bin/true until it exits (median of 21 each): <= 3x;
  * item 10: BENCH_IDLE (10,000) logged-in idle sessions on the smallest corpus (server
    started with --max-connections BENCH_IDLE+100 and its open-file limit raised): RSS a
    session <= 32 KiB, and the next client's NOOP and FETCH p99 < 10 ms.

Environment:
  BENCH_SIZES=1000,10000   corpora to run (message counts); add 100000 for the ~1.1 GB one
  BENCH_RUNS=5             runs per measurement for corpora up to 10,000 messages (the
                           100,000 corpus and the concurrency/APPEND phases use fewer)
  BENCH_PEERS=dovecot      also run Debian's dovecot-imapd (mbox, fcntl locks,
                           mail_fsync=never) privately on loopback, interleaved, and print
                           imapmem/Dovecot ratios; installed with apt-get when missing
  BENCH_IDLE=10000         idle sessions of item 10 (a few thousand while developing)
  BENCH_KEEP=1             keep the temporary folder (its path is printed)
  BENCH_ONLY=sort          run only the SORT/THREAD items (RFC 5256) beside FETCH 1:*
                           (ENVELOPE), on the same corpora, and print their table
  IMAPMEM_BIN              server binary (default ./imapmem); a TLS build (make
                           TLS=openssl bench) adds FETCH BODY[] throughput over TLS
Every loop is bounded in count and time; all traffic goes to 127.0.0.1.
"""
import base64
import binascii
import json
import os
import platform
import random
import re
import resource
import select
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAPMEM = os.environ.get("IMAPMEM_BIN", os.path.join(ROOT, "imapmem"))
BENCH_REF = os.path.join(ROOT, "build", "bench_ref")
BENCH_SIZES = os.path.join(ROOT, "build", "bench_sizes")
BENCH_LOAD = os.path.join(ROOT, "build", "bench_load")
READY = re.compile(rb"^imapmem: listening on (\[[^\]]+\]|[^:]+):(\d+)\n$")
HOST = "127.0.0.1"
NEEDLE = "zebrafish"          # SEARCH TEXT needle, planted in ~0.5% of bodies
FROM_NEEDLE = "hollis"        # SEARCH FROM needle: one sender among many
SINCE_DATE = "1-Jan-2023"     # SEARCH SINCE: about half of the corpus
MIB = 1024 * 1024

now = time.perf_counter


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Corpus generation (deterministic: one seeded Random per corpus)
# ---------------------------------------------------------------------------------------

WORDS = (
    "the of and to in is that for it as with was on be by this are at from or an have not "
    "but which they you were his her all their has one there been if more when will would "
    "who so no can about what out up time them some into only other new could its than then "
    "also two these may first any like now over such our even most made after did many "
    "before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see work long get "
    "here between both life being under never day same another know while last might great "
    "old year off come since against go came right used take three meeting report budget "
    "release server client deploy review schedule invoice quarter project deadline draft "
    "agenda figures summary attached please thanks regards update proposal contract "
    "customer support ticket issue branch merge build test failure latency throughput "
    "mailbox folder message header attachment calendar invitation travel expenses").split()
FIRST = ("alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy "
         "rupert sybil trent victor walter yolanda zoe oscar pat quinn ursula xavier wendy "
         "kim lee sam max ana raj mei tomas ingrid").split()
LAST = ("smith jones brown taylor wilson davies evans thomas johnson roberts walker wright "
        "robinson thompson white hughes edwards green hall wood harris lewis martin jackson "
        "clarke clark turner hill scott cooper morris ward moore king watson baker").split()
DOMAINS = ("example.com example.org example.net mail.example.com corp.example.org "
           "lists.example.net").split()
SUBJ = ("Re: {w} {w} for {m}", "{W} {w} update", "Fwd: {w} {w} {w}", "[{w}] {W} {w} {w}",
        "{W} review", "Meeting: {w} {w}", "Re: Re: {w} {w} {w} ({n})", "{W} {w} {n}")
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
UTF8_SUBJ = ["Grüße aus München", "Réunion budgétaire", "Ώρα για καφέ", "Отчёт за квартал",
             "会議の議事録", "Çalışma planı", "Smørrebrød på fredag", "Zürich Übersicht"]
UTF8_NAMES = ["Jürgen Müller", "Zoë Brontë", "José Núñez", "Łukasz Wróbel", "Søren Kierkegård"]
ATTACH_TYPES = [("application", "pdf", "pdf"), ("image", "png", "png"), ("image", "jpeg", "jpg"),
                ("application", "zip", "zip"),
                ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx")]


def make_pool(rng, nlines=60000):
    """A few MB of plain English-ish text lines; bodies are slices of it."""
    lines = []
    for _ in range(nlines):
        if rng.random() < 0.12:
            lines.append("")
            continue
        n = rng.randint(6, 13)
        words = [rng.choice(WORDS) for _ in range(n)]
        words[0] = words[0].capitalize()
        line = " ".join(words) + rng.choice(".,;:!?..")
        if line.startswith("From "):
            line = ">" + line                    # mboxrd quoting, as an MTA writes it
        lines.append(line)
    return "\n".join(lines) + "\n"


def date_strings(t):
    """(RFC 5322 Date value, mbox From-line date) for Unix time t in +0000."""
    tm = time.gmtime(t)
    d = "%s, %d %s %04d %02d:%02d:%02d +0000" % (DAYS[tm.tm_wday], tm.tm_mday,
                                                 MONTHS[tm.tm_mon - 1], tm.tm_year,
                                                 tm.tm_hour, tm.tm_min, tm.tm_sec)
    f = "%s %s %2d %02d:%02d:%02d %04d" % (DAYS[tm.tm_wday], MONTHS[tm.tm_mon - 1],
                                          tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                                          tm.tm_year)
    return d, f


def rfc2047(rng, s):
    raw = s.encode("utf-8")
    if rng.random() < 0.5:
        return "=?UTF-8?B?%s?=" % base64.b64encode(raw).decode()
    q = "".join(c if c.isascii() and c.isalnum() else
                ("_" if c == " " else "".join("=%02X" % b for b in c.encode("utf-8")))
                for c in s)
    return "=?utf-8?q?%s?=" % q


class Gen:
    def __init__(self, n):
        self.rng = random.Random("imapmem-bench-%d" % n)
        self.pool = make_pool(self.rng)
        self.n = n
        rng = self.rng
        # ~400 correspondents, Zipf-ish popularity; FROM_NEEDLE is one of the rarer ones.
        self.people = []
        for i in range(400):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            addr = "%s.%s%d@%s" % (first, last, i, rng.choice(DOMAINS))
            name = "%s %s" % (first.capitalize(), last.capitalize())
            if rng.random() < 0.06:
                name = rfc2047(rng, rng.choice(UTF8_NAMES))
            elif rng.random() < 0.3:
                name = '"%s, %s"' % (last.capitalize(), first.capitalize())
            self.people.append((name, addr))
        self.people[37] = ("Hollis Fairweather", "h.fairweather@example.net")
        self.weights = [1.0 / (i + 1) ** 0.8 for i in range(len(self.people))]
        self.mids = []
        self.truth = {"text": 0, "from": 0, "since": 0, "unseen": 0}

    def text(self, size):
        pool, rng = self.pool, self.rng
        a = rng.randrange(0, len(pool) - 1)
        a = pool.find("\n", a) + 1
        size = max(size, 40)
        if a + size >= len(pool):
            a = 0
        b = pool.find("\n", a + size)
        if b < 0:
            b = len(pool) - 1
        return pool[a:b + 1]

    def body_size(self):
        return min(int(self.rng.lognormvariate(7.7, 0.9)), 150000)    # median ~2.2 KB

    def plain_part(self, size, plant):
        rng = self.rng
        t = self.text(size)
        if plant:
            i = t.find("\n", len(t) // 2) + 1
            t = t[:i] + "We saw a %s in the tank today.\n" % rng.choice(
                ["zebrafish", "Zebrafish", "ZEBRAFISH", "ZebraFish"]) + t[i:]
        if rng.random() < 0.01:
            t += ">From the archive: see the earlier note.\n"   # mboxrd-quoted From line
        r = rng.random()
        if r < 0.08 and not plant:    # quoted-printable UTF-8
            t = t.replace(" the ", " thé ", 3) + "Grüße, Jürgen\n"
            enc = binascii.b2a_qp(t.encode("utf-8")).decode("ascii")
            return ('Content-Type: text/plain; charset="utf-8"\n'
                    "Content-Transfer-Encoding: quoted-printable\n", enc)
        if r < 0.15 and not plant:
            t = t.replace(" of ", " öf ", 2)
            h = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n"
            return h, t
        return ("Content-Type: text/plain; charset=us-ascii; format=flowed\n"
                "Content-Transfer-Encoding: 7bit\n", t)

    def html_of(self, t):
        paras = [p.replace("\n", " ") for p in t.split("\n\n") if p.strip()]
        html = ("<html><head><meta charset=\"utf-8\"></head><body>\n" +
                "\n".join("<p style=\"margin:0 0 1em 0\">%s</p>" % p for p in paras) +
                "\n</body></html>\n")
        return ("Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: "
                "quoted-printable\n", binascii.b2a_qp(html.encode("utf-8")).decode("ascii"))

    def attachment(self):
        rng = self.rng
        size = int(2048 * (100 ** rng.random()))        # log-uniform 2 KB .. 200 KB
        major, minor, ext = rng.choice(ATTACH_TYPES)
        fname = "%s-%s.%s" % (rng.choice(WORDS), rng.randint(1, 999), ext)
        if rng.random() < 0.1:
            disp = "attachment;\n filename*=utf-8''%C3%BCbersicht-" + fname
        else:
            disp = 'attachment; filename="%s"' % fname
        h = ('Content-Type: %s/%s; name="%s"\nContent-Disposition: %s\n'
             "Content-Transfer-Encoding: base64\n" % (major, minor, fname, disp))
        return h, base64.encodebytes(rng.randbytes(size)).decode("ascii")

    @staticmethod
    def multipart(subtype, parts, boundary):
        out = ["This is a multi-part message in MIME format.\n"]
        for h, b in parts:
            out.append("\n--%s\n%s\n%s" % (boundary, h, b))
        out.append("\n--%s--\n" % boundary)
        return ('Content-Type: multipart/%s;\n boundary="%s"\n' % (subtype, boundary),
                "".join(out))

    def content(self, i, plant, depth=0):
        """(content headers, body) for one message of a realistic mix."""
        rng = self.rng
        r = rng.random()
        bnd = "----=_Part_%d_%d.%d" % (i, depth, rng.randint(100000, 999999))
        if r < 0.68 or depth > 0 and r < 0.8:
            return self.plain_part(self.body_size(), plant)
        if r < 0.87:                                      # text + html
            h, t = self.plain_part(self.body_size(), plant)
            return self.multipart("alternative", [(h, t), self.html_of(t)], bnd)
        if r < 0.944:                                     # text + 1-2 attachments
            parts = [self.plain_part(self.body_size() // 2, plant)]
            parts.append(self.attachment())
            if rng.random() < 0.15:
                parts.append(self.attachment())
            return self.multipart("mixed", parts, bnd)
        if r < 0.964:                                     # nested: alternative + attachment
            h, t = self.plain_part(self.body_size(), plant)
            alt = self.multipart("alternative", [(h, t), self.html_of(t)], bnd + "_alt")
            return self.multipart("mixed", [alt, self.attachment()], bnd)
        # a forwarded message (message/rfc822), itself possibly multipart
        ih, ib = self.content(i, False, depth + 1)
        name, addr = rng.choice(self.people)
        d, _ = date_strings(1577836800 + rng.randrange(0, 6 * 365 * 86400))
        inner = ("From: %s <%s>\nDate: %s\nSubject: %s\nMessage-ID: <fwd.%d.%d@example.org>\n"
                 "MIME-Version: 1.0\n%s\n%s" % (name, addr, d, self.subject(), i, depth, ih, ib))
        return self.multipart("mixed", [self.plain_part(400, plant),
                                        ("Content-Type: message/rfc822\n"
                                         "Content-Disposition: inline\n", inner)], bnd)

    def subject(self):
        rng = self.rng
        if rng.random() < 0.15:
            return rfc2047(rng, rng.choice(UTF8_SUBJ) + " " + rng.choice(WORDS))
        s = rng.choice(SUBJ).format(w=rng.choice(WORDS), W=rng.choice(WORDS).capitalize(),
                                    m=rng.choice(MONTHS), n=rng.randint(1, 99))
        return s.format(w=rng.choice(WORDS))

    def message(self, i, t):
        rng = self.rng
        sender = rng.choices(self.people, self.weights)[0]
        to = rng.choice(self.people)
        d, fd = date_strings(t)
        mid = "%d.%x@%s" % (i, rng.getrandbits(40), sender[1].split("@")[1])
        plant = rng.random() < 0.005
        seen = rng.random() < 0.7
        h = ["Return-Path: <%s>" % sender[1],
             "Received: from mail%d.example.net (mail%d.example.net [192.0.2.%d])\n"
             "\tby mx.example.org (Postfix) with ESMTPS id %X\n\tfor <%s>; %s"
             % (i % 50, i % 50, i % 250 + 1, rng.getrandbits(36), to[1], d),
             "Date: %s" % d,
             "From: %s <%s>" % sender,
             "To: %s <%s>" % to]
        if rng.random() < 0.3:
            cc = rng.sample(self.people, rng.randint(1, 4))
            h.append("Cc: %s" % ",\n ".join("%s <%s>" % p for p in cc))
        h.append("Subject: %s" % self.subject())
        h.append("Message-ID: <%s>" % mid)
        if self.mids and rng.random() < 0.35:
            refs = rng.sample(self.mids[-200:], min(len(self.mids[-200:]), rng.randint(1, 4)))
            h.append("In-Reply-To: <%s>" % refs[-1])
            h.append("References: %s" % "\n ".join("<%s>" % m for m in refs))
        h.append("MIME-Version: 1.0")
        ch, body = self.content(i, plant)
        h.append(ch.rstrip("\n"))
        h.append("X-Mailer: %s" % rng.choice(["Mutt/2.2.9", "Thunderbird 115.3", "Outlook 16.0",
                                              "Apple Mail (2.3731)"]))
        h.append("Status: RO" if seen else "Status: O")
        xs = ("A" if rng.random() < 0.1 else "") + ("F" if rng.random() < 0.05 else "")
        if xs:
            h.append("X-Status: %s" % xs)
        self.mids.append(mid)
        msg = "\n".join(h) + "\n\n" + body
        if not msg.endswith("\n"):
            msg += "\n"
        # ground truth for the SEARCH checks
        if plant:
            self.truth["text"] += 1
        if FROM_NEEDLE in sender[0].lower() or FROM_NEEDLE in sender[1].lower():
            self.truth["from"] += 1
        if t >= 1672531200:          # 2023-01-01
            self.truth["since"] += 1
        if not seen:
            self.truth["unseen"] += 1
        return "From %s %s\n%s\n" % (sender[1], fd, msg)


def generate(path, n):
    g = Gen(n)
    rng = g.rng
    start, span = 1577836800, 6 * 365 * 86400             # 2020 .. 2025
    times = sorted(start + rng.randrange(span) for _ in range(n))
    sizes = []
    with open(path, "wb", buffering=4 * MIB) as f:
        for i, t in enumerate(times):
            b = g.message(i, t).encode("utf-8")
            sizes.append(len(b))
            f.write(b)
    sizes.sort()
    return {"path": path, "n": n, "bytes": sum(sizes), "median": sizes[len(sizes) // 2],
            "p90": sizes[int(len(sizes) * 0.9)], "max": sizes[-1], "truth": g.truth}


# ---------------------------------------------------------------------------------------
# A fast minimal IMAP client
# ---------------------------------------------------------------------------------------

class Reader:
    """Scans IMAP responses in a fixed bytearray filled by recv_into(); a {n} literal is
    skipped by count (received straight into the buffer and dropped), never copied."""

    def __init__(self, cap=4 * MIB):
        self.buf = bytearray(cap)
        self.mv = memoryview(self.buf)
        self.start = self.end = 0
        self.skip = 0          # literal bytes still to be received and dropped
        self.bol = True        # at the beginning of a response line
        self.rx = 0
        self.nrecv = 0         # recv_into() calls that returned data
        self.untagged = 0
        self.keep = None       # a list collects untagged lines (without literals)
        self.record = None     # a file gets every byte received

    def fill(self, sock):
        if self.skip and self.start == self.end:
            n = sock.recv_into(self.mv, min(self.skip, len(self.buf)))
            if not n:
                raise EOFError("connection closed")
            self.rx += n
            self.nrecv += 1
            if self.record:
                self.record.write(self.mv[:n])
            self.skip -= n
            return n
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            if self.start > 0:
                k = self.end - self.start
                self.buf[0:k] = self.buf[self.start:self.end]
                self.start, self.end = 0, k
            else:                                   # one line longer than the buffer
                self.mv.release()
                self.buf.extend(bytes(len(self.buf)))
                self.mv = memoryview(self.buf)
        n = sock.recv_into(self.mv[self.end:])
        if not n:
            raise EOFError("connection closed")
        if self.record:
            self.record.write(self.mv[self.end:self.end + n])
        self.end += n
        self.rx += n
        self.nrecv += 1
        return n

    def scan(self, tag, plus=False):
        """Consume what is buffered; return the tagged line (bytes, tag stripped) once it
        is complete, b"+" for a continuation request when plus, else None."""
        buf = self.buf
        while True:
            if self.skip:
                avail = self.end - self.start
                if avail <= self.skip:
                    self.skip -= avail
                    self.start = self.end = 0
                    return None
                self.start += self.skip
                self.skip = 0
            s = self.start
            i = buf.find(b"\r\n", s, self.end)
            if i < 0:
                return None
            if self.bol:
                if buf.startswith(tag, s):
                    self.start = i + 2
                    return bytes(buf[s + len(tag):i])
                if plus and buf[s] == 43:           # "+"
                    self.start = i + 2
                    return b"+"
                self.untagged += 1
                if self.keep is not None:
                    self.keep.append(bytes(buf[s:i]))
            if i > s and buf[i - 1] == 125:         # "}": a literal follows
                j = buf.rfind(b"{", s, i)
                if j >= 0 and buf[j + 1:i - 1].isdigit():
                    self.skip = int(buf[j + 1:i - 1])
                    self.start = i + 2
                    self.bol = False
                    continue
            self.start = i + 2
            self.bol = True


class Conn:
    """A blocking IMAP connection: cmd() sends one command, waits for its tagged reply."""

    def __init__(self, port, greeting=True, timeout=120, ssl_context=None, reader=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context:        # implicit TLS (a TLS build's --imaps-port)
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname="localhost")
        self.r = reader or Reader()
        self.n = 0
        self.greeting = self.wait(b"* ")[0] if greeting else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def wait(self, tag, keep=False, plus=False):
        r = self.r
        r.untagged = 0
        r.keep = [] if keep else None
        while True:
            line = r.scan(tag, plus)
            if line is not None:
                return line, r.untagged, r.keep
            r.fill(self.sock)

    def cmd(self, text, keep=False):
        """Returns (tagged line without tag, untagged line count, kept lines or None)."""
        self.n += 1
        tag = b"a%d " % self.n
        self.sock.sendall(tag + text + b"\r\n")
        return self.wait(tag, keep)

    def ok(self, text, keep=False):
        res = self.cmd(text, keep)
        if not res[0].startswith(b"OK"):
            raise RuntimeError("%r -> %r" % (text[:80], res[0][:200]))
        return res

    def timed(self, text, keep=False):
        t0 = now()
        res = self.ok(text, keep)
        return now() - t0, res


def tls_throughput(corpus, tmp, runs):
    """FETCH 1:* BODY.PEEK[] over implicit TLS beside plain TCP, from one server, the runs
    interleaved, in a TLS build (make TLS=openssl) only. Returns (protocol and cipher, TLS
    MB/s samples, plain MB/s samples, server CPU seconds a GiB over TLS, the same plain), or
    None for a build without TLS. The client decrypts on the same cores, so the MB/s are of
    the pair; the server's CPU a GiB (its threads' schedstat) is the server's own cost."""
    version = subprocess.run([IMAPMEM, "--version"], stdout=subprocess.PIPE).stdout
    if b"(TLS:" not in version:
        return None
    ca = os.path.join(tmp, "trust.pem")
    proc = subprocess.Popen([IMAPMEM, "-p", "0", "--imaps-port", "0", "--tls-cert-out", ca,
                             "--uidvalidity", "1", corpus["path"]], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        m = re.match(rb"^imapmem: listening on \S+:(\d+), imaps \S+:(\d+)\n$", line)
        if not m:
            raise RuntimeError("imapmem --imaps-port: no ready line: %r" % line)
        conns = {"plain": Conn(int(m.group(1))),
                 "tls": Conn(int(m.group(2)), ssl_context=ssl.create_default_context(cafile=ca))}
        mbs = {"plain": [], "tls": []}
        cpu_gib = {"plain": [], "tls": []}
        for c in conns.values():
            c.ok(b"LOGIN test test")
            c.ok(b"SELECT INBOX")
        for _ in range(runs):
            for k, c in conns.items():
                rx0 = c.r.rx
                cpu0 = proc_cpu_threads(proc.pid)
                t, _ = c.timed(b"FETCH 1:* BODY.PEEK[]")
                cpu_gib[k].append((proc_cpu_threads(proc.pid) - cpu0) * 1024 * MIB
                                  / (c.r.rx - rx0))
                mbs[k].append((c.r.rx - rx0) / MIB / t)
        tls = conns["tls"].sock
        what = "%s %s" % (tls.version(), tls.cipher()[0])
        for c in conns.values():
            c.close()
        return what, mbs["tls"], mbs["plain"], cpu_gib["tls"], cpu_gib["plain"]
    finally:
        stop_process(proc)
        proc.stdout.close()


def search_count(lines):
    for ln in lines:
        if ln.startswith(b"* SEARCH"):
            return len(ln.split()) - 2
    return None


# ---------------------------------------------------------------------------------------
# Servers under test: imapmem and (optionally) a private Dovecot
# ---------------------------------------------------------------------------------------

def proc_count(pid, key):
    """A /proc/PID/status field as the number it shows (Threads; VmRSS in KiB), or 0."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


def proc_status(pid, key):
    """A /proc/PID/status memory field (VmRSS, VmHWM) in bytes."""
    return proc_count(pid, key) * 1024


def proc_cpu(pid, children=False):
    """utime+stime of the whole process (all threads, also those that ended), seconds;
    with children, also the reaped children's (cutime+cstime)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if children:
            ticks += int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def proc_cpu_threads(pid):
    """CPU time of the live threads of pid in seconds, to the nanosecond (schedstat): for
    phases in which no thread exits."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total / 1e9


def proc_tree(root):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def stop_process(proc):
    """SIGTERM, and SIGKILL if it has not ended 20 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Imapmem:
    name = "imapmem"

    def __init__(self, fixture, tmp, args=(), preexec_fn=None):
        self.fixture = fixture
        self.err = tempfile.TemporaryFile(dir=tmp)
        self.t0 = now()
        self.proc = subprocess.Popen([IMAPMEM, "-p", "0", "--uidvalidity", "1"] + list(args)
                                     + [fixture], stdout=subprocess.PIPE, stderr=self.err,
                                     stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
        line = self.proc.stdout.readline()
        self.t_ready = now()
        self.hwm_ready = proc_status(self.proc.pid, "VmHWM")     # peak of the load
        m = READY.match(line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            self.err.seek(0)
            raise RuntimeError("imapmem: no ready line: %r; stderr: %s"
                               % (line, self.err.read().decode("utf-8", "replace")[-2000:]))
        self.port = int(m.group(2))
        self.cpu_ready = proc_cpu_threads(self.proc.pid)

    def rss(self):
        return proc_status(self.proc.pid, "VmRSS")

    def hwm(self):
        return proc_status(self.proc.pid, "VmHWM")

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def cpu_now(self):
        return proc_cpu_threads(self.proc.pid)

    def stop(self):
        stop_process(self.proc)
        self.proc.stdout.close()
        self.err.close()


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


DOVECOT_CONF = """\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = static
  args = password=test
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
mail_location = mbox:~/mail:INBOX=~/inbox.mbox
mbox_read_locks = fcntl
mbox_write_locks = fcntl
mail_fsync = never
protocol imap {{
  mail_max_userip_connections = 1000
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 1024
}}
"""


def dovecot_bin():
    for p in ("/usr/sbin/dovecot", shutil.which("dovecot") or ""):
        if p and os.path.exists(p):
            return p
    return None


def ensure_dovecot():
    if dovecot_bin():
        return True
    log("BENCH_PEERS=dovecot: installing dovecot-imapd with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "dovecot-imapd"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "dovecot-imapd"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return dovecot_bin() is not None


class Dovecot:
    """A private Dovecot on loopback: own config, own dirs, mbox INBOX copied fresh."""
    name = "dovecot"
    seq = 0

    def __init__(self, fixture, tmp):
        Dovecot.seq += 1
        import pwd
        nobody = pwd.getpwnam("nobody")
        d = os.path.join(tmp, "dovecot%d" % Dovecot.seq)
        home = os.path.join(d, "home", "test")
        os.makedirs(os.path.join(home, "mail"))
        shutil.copyfile(fixture, os.path.join(home, "inbox.mbox"))
        for root, dirs, files in os.walk(os.path.join(d, "home")):
            for x in dirs + files:
                os.chown(os.path.join(root, x), nobody.pw_uid, nobody.pw_gid)
        os.chown(os.path.join(d, "home"), nobody.pw_uid, nobody.pw_gid)
        os.chmod(d, 0o755)
        self.dir = d
        self.port = free_port()
        conf = os.path.join(d, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(DOVECOT_CONF.format(d=d, uid=nobody.pw_uid, gid=nobody.pw_gid,
                                        port=self.port))
        # page-cache the copy as imapmem's fixture is, then start the clock
        with open(os.path.join(home, "inbox.mbox"), "rb") as f:
            while f.read(8 * MIB):
                pass
        self.t0 = now()
        self.proc = subprocess.Popen([dovecot_bin(), "-F", "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = now() + 20
        while True:                      # ready = the login service accepts connections
            try:
                s = socket.create_connection((HOST, self.port), timeout=1)
                s.close()
                break
            except OSError:
                if now() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("dovecot did not start; see %s/dovecot.log" % d)
                time.sleep(0.002)
        self.t_ready = now()
        self.cpu_ready = 0.0

    def rss(self):
        return sum(proc_status(p, "VmRSS") for p in proc_tree(self.proc.pid))

    def hwm(self):
        return sum(proc_status(p, "VmHWM") for p in proc_tree(self.proc.pid))

    def cpu(self):
        """The whole instance: live processes and the ended ones the master reaped."""
        return sum(proc_cpu(p, children=True) for p in proc_tree(self.proc.pid))

    cpu_now = cpu

    def stop(self):
        stop_process(self.proc)
        time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Items 1-5: one fresh server per run, sequential commands on one connection
# ---------------------------------------------------------------------------------------

def sort_run(cls, corpus, tmp):
    """One run of the SORT and THREAD items on a fresh server: SORT (SUBJECT) first (it
    reads every header for the sort keys), SORT (DATE) and THREAD REFERENCES on the keys
    made, and FETCH 1:* (ENVELOPE) first and repeated, the issue's yardstick. Each answer
    must name every message. Returns {metric: value}."""
    m = {}
    srv = cls(corpus["path"], tmp)
    try:
        c = Conn(srv.port)
        c.ok(b"LOGIN test test")
        c.ok(b"SELECT INBOX")
        for key, cmd in (("sort_subject", b"SORT (SUBJECT) UTF-8 ALL"),
                         ("sort_date", b"SORT (DATE) UTF-8 ALL"),
                         ("thread_refs", b"THREAD REFERENCES UTF-8 ALL"),
                         ("sort_subject_repeat", b"SORT (SUBJECT) UTF-8 ALL")):
            m[key], (_, _, lines) = c.timed(cmd, keep=True)
            word = cmd.split()[0]
            got = [ln for ln in lines if ln.startswith(b"* " + word)]
            nums = len(re.findall(rb"\d+", got[0])) if got else 0
            if nums != corpus["n"]:
                m.setdefault("warnings", []).append("%s: %s named %d messages, corpus has %d"
                                                    % (srv.name, key, nums, corpus["n"]))
        m["fetch_env_first"], _ = c.timed(b"FETCH 1:* (ENVELOPE)")
        m["fetch_env_repeat"], _ = c.timed(b"FETCH 1:* (ENVELOPE)")
        c.ok(b"LOGOUT")
        c.close()
    finally:
        srv.stop()
    return m


def add_sort_rows(table, c, res):
    """SORT and THREAD beside FETCH 1:* (ENVELOPE): first against first (both read every
    header once), the rest against the repeated FETCH (both on what was computed)."""
    cs, im, dv = short(c["n"]), res["imapmem"], res["dovecot"]
    col = lambda runs, k: [m[k] for m in runs]
    pv = lambda k: col(dv, k) if dv else None
    first, rep = med(col(im, "fetch_env_first")), med(col(im, "fetch_env_repeat"))
    for key, label, ref, against in (
            ("sort_subject", "SORT (SUBJECT), first", "FETCH ENVELOPE first", first),
            ("sort_date", "SORT (DATE)", "FETCH ENVELOPE repeated", rep),
            ("thread_refs", "THREAD REFERENCES", "FETCH ENVELOPE repeated", rep),
            ("sort_subject_repeat", "SORT (SUBJECT) repeated", "FETCH ENVELOPE repeated", rep)):
        v = col(im, key)
        table.add("S " + label, cs, v, "s", "%s %s" % (ref, fmt_time(against)),
                  med(v) / against, *judge(c["n"], "<0.5x", med(v) / against < 0.5),
                  peer=pv(key))
    table.add("S FETCH 1:* (ENVELOPE) first", cs, col(im, "fetch_env_first"), "s",
              peer=pv("fetch_env_first"))


def runs_of(what, run, c, tmp, nruns, peer, notes):
    """nruns of run(server class, corpus, tmp) against imapmem and the peer, interleaved;
    their results by server, their warnings added to notes."""
    res = {"imapmem": [], "dovecot": []}
    for r in range(nruns):
        log("corpus %d: %s run %d/%d" % (c["n"], what, r + 1, nruns))
        res["imapmem"].append(run(Imapmem, c, tmp))
        if peer:
            res["dovecot"].append(run(peer, c, tmp))
    for who in res:
        for m in res[who]:
            notes.extend(m.get("warnings", []))
    return res


def sort_phase(table, c, tmp, runs, peer, notes):
    """The SORT/THREAD items on corpus c (fewer runs on the largest), their rows added to
    table and their warnings to notes."""
    nruns = runs if c["n"] <= 10000 else max(1, min(runs, 3))
    add_sort_rows(table, c, runs_of("SORT", sort_run, c, tmp, nruns, peer, notes))


def sort_main(sizes, runs, peer):
    """BENCH_ONLY=sort: the SORT/THREAD items alone."""
    machine_header()
    tmp = tempfile.mkdtemp(prefix="imapmem-bench-")
    os.chmod(tmp, 0o755)
    table, notes = Table(bool(peer)), []
    try:
        for n in sizes:
            c = generate(os.path.join(tmp, "corpus-%d.mbox" % n), n)
            sort_phase(table, c, tmp, runs, peer, notes)
        table.print()
        for x in sorted(set(notes)):
            print("  warning: " + x)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def every_tenth(n):
    return ",".join(str(i) for i in range(10, n + 1, 10)).encode()


def sequential_run(cls, corpus, tmp, record=None):
    """One run of items 1-5 on a fresh server. Returns {metric: value}."""
    m = {}
    # the client's 4 MiB buffer is made before the clock starts: zeroing it (page faults)
    # took 15-20 ms of "connect+greeting+LOGIN" on a VM with slow faults
    reader = Reader()
    srv = cls(corpus["path"], tmp)
    try:
        c = Conn(srv.port, reader=reader)
        t_conn = now()
        c.ok(b"LOGIN test test")
        t_login = now()
        _, (tagged, _, lines) = c.timed(b"SELECT INBOX", keep=True)
        t_sel = now()
        m["ready_select"] = t_sel - srv.t0
        m["spawn_ready"] = srv.t_ready - srv.t0
        m["hwm_ready"] = getattr(srv, "hwm_ready", 0) or srv.hwm()
        m["connect_login"] = t_login - srv.t_ready
        m["select"] = t_sel - t_login
        m["load_cpu"] = srv.cpu_ready
        exists = [int(x.split()[1]) for x in lines if x.endswith(b" EXISTS")]
        if not exists or exists[0] != corpus["n"]:
            raise RuntimeError("%s: SELECT shows %r messages, corpus has %d"
                               % (srv.name, exists, corpus["n"]))
        m["rss_load"] = srv.rss()
        m["hwm_load"] = srv.hwm()
        m["fetch_fast"], _ = c.timed(b"FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)")
        cpu0 = srv.cpu_now()
        m["fetch_envbs_first"], (_, cnt, _) = c.timed(b"FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
        m["envbs_first_cpu"] = srv.cpu_now() - cpu0
        m["rss_envbs"] = srv.rss()
        m["fetch_envbs_repeat"], _ = c.timed(b"FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
        rx0 = c.r.rx
        cpu0, ccpu0, nrecv0 = srv.cpu_now(), time.process_time(), c.r.nrecv
        m["fetch_body"], _ = c.timed(b"FETCH 1:* BODY.PEEK[]")
        m["fetch_body_cpu"] = srv.cpu_now() - cpu0
        m["fetch_body_client_cpu"] = time.process_time() - ccpu0
        m["fetch_body_recvs"] = c.r.nrecv - nrecv0
        m["fetch_body_bytes"] = c.r.rx - rx0
        if record:       # the same response again, untimed, saved for client_replay()
            with open(record, "wb") as f:
                c.r.record = f
                c.ok(b"FETCH 1:* BODY.PEEK[]")
                c.r.record = None
        m["fetch_body_mbs"] = m["fetch_body_bytes"] / MIB / m["fetch_body"]
        noop = []
        for _ in range(200):
            t, _ = c.timed(b"NOOP")
            noop.append(t)
        m["noop"] = statistics.median(noop)
        truth = corpus["truth"]
        for key, cmd, want in (
                ("search_text", b'SEARCH TEXT "%s"' % NEEDLE.encode(), truth["text"]),
                ("search_text_repeat", b'SEARCH TEXT "%s"' % NEEDLE.encode(), truth["text"]),
                ("search_from", b'SEARCH FROM "%s"' % FROM_NEEDLE.encode(), truth["from"]),
                ("search_since", b"SEARCH SINCE %s" % SINCE_DATE.encode(), truth["since"]),
                ("search_unseen", b"UID SEARCH UNSEEN", truth["unseen"])):
            m[key], (_, _, lines) = c.timed(cmd, keep=True)
            got = search_count(lines)
            if got != want:
                m.setdefault("warnings", []).append("%s: %s found %s, corpus has %d"
                                                    % (srv.name, key, got, want))
        m["store_all"], _ = c.timed(b"STORE 1:* +FLAGS.SILENT (\\Flagged)")
        c.ok(b"STORE " + every_tenth(corpus["n"]) + b" +FLAGS.SILENT (\\Deleted)")
        m["expunge"], (_, cnt, _) = c.timed(b"EXPUNGE")
        if cnt < corpus["n"] // 10:
            m.setdefault("warnings", []).append("%s: EXPUNGE sent %d untagged lines, want %d"
                                                % (srv.name, cnt, corpus["n"] // 10))
        c.ok(b"LOGOUT")
        c.close()
    finally:
        srv.stop()
    # SEARCH TEXT as the first command after SELECT, on another fresh server: nothing that
    # FETCH computed can help it there
    srv = cls(corpus["path"], tmp)
    try:
        c = Conn(srv.port)
        c.ok(b"LOGIN test test")
        c.ok(b"SELECT INBOX")
        m["search_text_cold"], (_, _, lines) = c.timed(b'SEARCH TEXT "%s"' % NEEDLE.encode(),
                                                       keep=True)
        if search_count(lines) != corpus["truth"]["text"]:
            m.setdefault("warnings", []).append("%s: cold SEARCH TEXT found %s, corpus has %d"
                                                % (srv.name, search_count(lines),
                                                   corpus["truth"]["text"]))
        c.close()
    finally:
        srv.stop()
    return m


# ---------------------------------------------------------------------------------------
# Item 8 (CONDSTORE): FETCH 1:* (FLAGS) against FETCH 1:* (FLAGS) (CHANGEDSINCE n) after k
# changes, and what a MODSEQ costs a message
# ---------------------------------------------------------------------------------------

CHANGED_KS = (0, 10, 1000)
CONDSTORE_REPS = 7            # timed repetitions of each FETCH within one run


def spread(n, k):
    """k sequence numbers spread evenly over 1..n, as a sequence set."""
    return ",".join(str(1 + j * n // k) for j in range(k)).encode()


def status_highestmodseq(c):
    _, _, lines = c.ok(b"STATUS INBOX (HIGHESTMODSEQ)", keep=True)
    for ln in lines:
        m = re.search(rb"HIGHESTMODSEQ (\d+)", ln)
        if m:
            return int(m.group(1))
    raise RuntimeError("no HIGHESTMODSEQ in %r" % lines)


def condstore_run(cls, corpus, tmp):
    """One run of item 8 on a fresh server: after ENABLE CONDSTORE and SELECT, the plain
    FETCH 1:* (FLAGS), then for each k: one STORE giving k messages spread over the mailbox
    a new keyword, and FETCH 1:* (FLAGS) (CHANGEDSINCE the HIGHESTMODSEQ before it), which
    must answer exactly k messages.  Each FETCH is timed CONDSTORE_REPS times (median), with
    the server's CPU time.  Returns {metric: value}."""
    m = {}
    n = corpus["n"]
    srv = cls(corpus["path"], tmp)
    try:
        c = Conn(srv.port)
        c.ok(b"LOGIN test test")
        c.ok(b"ENABLE CONDSTORE")
        c.ok(b"SELECT INBOX")
        c.ok(b"FETCH 1:* (FLAGS)")                 # once untimed: both servers warm

        def timed_fetch(cmd, want):
            ts, cpus = [], []
            for _ in range(CONDSTORE_REPS):
                cpu0 = srv.cpu_now()
                t, (_, cnt, _) = c.timed(cmd)
                cpus.append(srv.cpu_now() - cpu0)
                ts.append(t)
                if cnt != want:
                    m.setdefault("warnings", []).append(
                        "%s: %s answered %d messages, want %d"
                        % (srv.name, cmd.decode()[:60], cnt, want))
            return statistics.median(ts), statistics.median(cpus)

        m["cs_plain"], m["cs_plain_cpu"] = timed_fetch(b"FETCH 1:* (FLAGS)", n)
        for k in CHANGED_KS:
            h = status_highestmodseq(c)
            if k:
                c.ok(b"STORE " + spread(n, k) + b" +FLAGS.SILENT ($Bench%d)" % k)
            m["cs_k%d" % k], m["cs_k%d_cpu" % k] = timed_fetch(
                b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h, k)
        c.ok(b"LOGOUT")
        c.close()
    finally:
        srv.stop()
    return m


def modseq_sizes():
    """What a MODSEQ costs each message, from build/bench_sizes (see test/bench_sizes.c)."""
    out = subprocess.run([BENCH_SIZES], stdout=subprocess.PIPE, check=True).stdout
    return json.loads(out)


# ---------------------------------------------------------------------------------------
# Items 6-7: many clients, driven by event loops in a few forked worker processes
# ---------------------------------------------------------------------------------------

def send_all_nb(sock, data):
    view = memoryview(data)
    while view:
        try:
            k = sock.send(view)
            view = view[k:]
        except BlockingIOError:
            select.select([], [sock], [], 5)


APPEND_MSG = None


def append_message():
    global APPEND_MSG
    if APPEND_MSG is None:
        head = ("From: Bench <bench@example.com>\r\nTo: test@example.com\r\n"
                "Subject: append benchmark\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
                "Message-ID: <append@example.com>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
        line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\r\n"
        body = line * ((4096 - len(head)) // len(line) + 1)
        APPEND_MSG = (head + body)[:4096 - 2].encode() + b"\r\n"
    return APPEND_MSG


class Client:
    def __init__(self, port, rng):
        self.c = Conn(port)
        self.c.ok(b"LOGIN test test")
        self.rng = rng
        self.step = 0
        self.iters = 0
        self.tag = None
        self.kind = None
        self.sent = 0.0
        self.plus = False


def worker(port, nclients, mode, nmsgs, duration, max_iter, seed, ready_w, go_r, out_w):
    """Child process: run nclients clients until max_iter loops each or the deadline."""
    res = {"lat": {}, "done": [], "errors": 0, "unfinished": [], "error_lines": [],
           "cpu": 0.0}
    try:
        rng = random.Random(seed)
        clients = [Client(port, random.Random(rng.random())) for _ in range(nclients)]
        os.write(ready_w, b"r")
        start = float(os.read(go_r, 64).decode())
        while time.monotonic() < start:
            time.sleep(0.0005)
        deadline = start + duration
        hard = deadline + 15.0          # outstanding commands may finish until then
        cpu0 = time.process_time()
        sel = selectors.DefaultSelector()
        msg = append_message()

        def issue(cl):
            t = time.monotonic()
            if cl.iters >= max_iter or t >= deadline:
                sel.unregister(cl.c.sock)
                return False
            cl.c.n += 1
            cl.tag = b"w%d " % cl.c.n
            if mode == "mix":
                k = cl.step % 4
                cl.kind = ("SELECT", "FETCH", "STORE", "NOOP")[k]
                if k == 0:
                    cmd = b"SELECT INBOX"
                elif k == 1:
                    cmd = b"FETCH %d BODY.PEEK[]" % cl.rng.randint(1, nmsgs)
                elif k == 2:
                    cmd = b"STORE %d +FLAGS (\\Flagged)" % cl.rng.randint(1, nmsgs)
                else:
                    cmd = b"NOOP"
                    cl.iters += 1
                cl.step += 1
            else:
                cl.kind = "APPEND"
                cmd = b"APPEND INBOX (\\Seen) {%d}" % len(msg)
                cl.plus = True
                cl.iters += 1
            cl.sent = time.monotonic()
            send_all_nb(cl.c.sock, cl.tag + cmd + b"\r\n")
            return True

        active = 0
        for cl in clients:
            cl.c.sock.setblocking(False)
            sel.register(cl.c.sock, selectors.EVENT_READ, cl)
        for cl in clients:
            if issue(cl):
                active += 1
        while active:
            t = time.monotonic()
            if t > hard:
                for key in list(sel.get_map().values()):
                    res["unfinished"].append(t - key.data.sent)
                break
            for key, _ in sel.select(timeout=0.5):
                cl = key.data
                r = cl.c.r
                try:
                    r.fill(cl.c.sock)
                except (BlockingIOError, InterruptedError):
                    continue
                while True:
                    line = r.scan(cl.tag, cl.plus)
                    if line is None:
                        break
                    if line == b"+":
                        cl.plus = False
                        send_all_nb(cl.c.sock, msg + b"\r\n")
                        continue
                    t = time.monotonic()
                    res["lat"].setdefault(cl.kind, []).append(t - cl.sent)
                    res["done"].append(t - start)
                    if not line.startswith(b"OK"):
                        res["errors"] += 1
                        if len(res["error_lines"]) < 3:
                            res["error_lines"].append(line[:120].decode("latin-1"))
                    if not issue(cl):
                        active -= 1
                        break
        res["cpu"] = time.process_time() - cpu0
        for cl in clients:
            cl.c.close()
    except Exception as e:           # report, never hang the parent
        res["exception"] = repr(e)
    os.write(out_w, json.dumps(res).encode())
    os.close(out_w)


STALL_TIME = 1.0       # seconds of commands while the other client is stalled
STALL_LIMIT = 0.5      # a command slower than this means it waited for the stalled one
STALL_TIMEOUT = 5.0    # give up on a command after this long


def stall_check(port, nmsgs):
    """Does a client that stops reading hold up the others? Returns the latencies of the
    other client's commands (max, p50, n, timeouts)."""
    a = Conn(port)
    a.ok(b"LOGIN test test")
    a.ok(b"SELECT INBOX")
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    a.sock.sendall(b"s1 FETCH 1:* BODY.PEEK[]\r\n")   # ...and never read the answer
    time.sleep(0.3)                                    # the server's send buffer fills
    b = Conn(port, timeout=STALL_TIMEOUT)
    lat, timeouts = [], 0
    rng = random.Random(5)
    try:
        b.ok(b"LOGIN test test")
        end = now() + STALL_TIME
        i = 0
        while now() < end and i < 20000:
            cmd = (b"SELECT INBOX", b"FETCH %d BODY.PEEK[]" % rng.randint(1, nmsgs),
                   b"STORE %d +FLAGS (\\Flagged)" % rng.randint(1, nmsgs), b"NOOP")[i % 4]
            i += 1
            t0 = now()
            b.ok(cmd)
            lat.append(now() - t0)
    except (socket.timeout, TimeoutError):
        timeouts += 1
        lat.append(STALL_TIMEOUT)
    finally:
        b.close()
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        a.close()                                      # reset: the server's write fails
    lat.sort()
    return {"max": lat[-1] if lat else STALL_TIMEOUT, "p50": lat[len(lat) // 2] if lat else 0,
            "n": len(lat), "timeouts": timeouts}


def load_run(port, nclients, mode, nmsgs, duration, max_iter, seed, srv):
    """Run nclients clients in up to two worker processes; returns the merged figures."""
    nproc = 1 if nclients == 1 else 2
    split = [nclients // nproc + (1 if i < nclients % nproc else 0) for i in range(nproc)]
    kids = []
    for i, k in enumerate(split):
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                os.close(go_w)
                os.close(out_r)
                worker(port, k, mode, nmsgs, duration, max_iter, seed * 100 + i,
                       ready_w, go_r, out_w)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(go_r)
        os.close(out_w)
        kids.append((pid, ready_r, go_w, out_r))
    for _, ready_r, _, _ in kids:
        os.read(ready_r, 1)
    start = time.monotonic() + 0.05
    cpu0 = srv.cpu()
    for _, _, go_w, _ in kids:
        os.write(go_w, repr(start).encode())
    lat, done, errors, unfinished, error_lines, ccpu = {}, [], 0, [], [], 0.0
    for pid, ready_r, go_w, out_r in kids:
        chunks = []
        while True:
            b = os.read(out_r, 1 << 20)
            if not b:
                break
            chunks.append(b)
        os.waitpid(pid, 0)
        for fd in (ready_r, go_w, out_r):
            os.close(fd)
        r = json.loads(b"".join(chunks) or b"{}")
        if "exception" in r:
            raise RuntimeError("load worker: " + r["exception"])
        for k, v in r["lat"].items():
            lat.setdefault(k, []).extend(v)
        done.extend(r["done"])
        errors += r["errors"]
        ccpu += r["cpu"]
        unfinished.extend(r["unfinished"])
        error_lines.extend(r["error_lines"])
    cpu = srv.cpu() - cpu0
    done.sort()
    window = min(duration, done[-1]) if done else duration
    completed = sum(1 for t in done if t <= window)
    alll = sorted([x for v in lat.values() for x in v] + [float("inf")] * len(unfinished))
    pct = lambda a, p: a[min(len(a) - 1, int(p * len(a)))] if a else float("nan")
    return {"rate": completed / window if window > 0 else 0.0,
            "p50": pct(alll, 0.50), "p99": pct(alll, 0.99), "n": len(alll),
            "errors": errors, "error_lines": error_lines, "unfinished": len(unfinished),
            "server_cpu": cpu / window if window > 0 else 0.0,
            "client_cpu": ccpu / window if window > 0 else 0.0,
            "by_kind": {k: (pct(sorted(v), 0.5), pct(sorted(v), 0.99), len(v))
                        for k, v in lat.items()}}


def parse_kv(out):
    """`key value...` lines (bench_ref, bench_load): numbers as a list of floats, anything
    else as the text after the key."""
    res = {}
    for ln in out.splitlines():
        k, _, rest = ln.partition(" ")
        try:
            res[k] = [float(x) for x in rest.split()]
        except ValueError:
            res[k] = rest
    return res


LOAD_NICE = -10              # the load generator's priority, when the system allows it
load_nice_used = []          # the priority it actually ran at (for the details)


def load_priority():
    """A preexec_fn: run the load generator at LOAD_NICE. With 256 clients the server has up
    to 256 runnable threads, and at equal priority the scheduler gives the generator's few
    threads a 1/128 share: then it is the generator that is measured, not the server."""
    try:
        os.nice(LOAD_NICE)
    except OSError:
        pass


def bench_load_run(port, nclients, seconds, srv):
    """Item 6 with build/bench_load (C, epoll): nclients connections, LOGIN + SELECT, then
    item 6's mix (SELECT, FETCH n BODY.PEEK[], STORE n +FLAGS, NOOP) in a closed loop for
    seconds. Returns the figures load_run() returns."""
    cpu0 = srv.cpu()
    p = subprocess.Popen([BENCH_LOAD, "run", HOST, str(port), "test", "test", "INBOX",
                          str(nclients), "%g" % seconds], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=load_priority)
    try:
        nice = os.getpriority(os.PRIO_PROCESS, p.pid)
    except OSError:
        nice = None
    stdout, stderr = p.communicate(timeout=seconds + 300)
    p = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    if nice is not None and nice not in load_nice_used:
        load_nice_used.append(nice)
    cpu = srv.cpu() - cpu0
    r = parse_kv(p.stdout.decode("utf-8", "replace"))
    if p.returncode != 0 or "commands_per_s" not in r:
        raise RuntimeError("bench_load run %d: exit %d: %s" % (
            nclients, p.returncode, p.stderr.decode("utf-8", "replace")[-500:]))
    kinds = {k[4:]: tuple(v[:2]) + (int(v[2]),) for k, v in r.items() if k.startswith("lat_")}
    return {"rate": r["commands_per_s"][0], "p50": r["p50_s"][0], "p99": r["p99_s"][0],
            "n": int(r["commands"][0]), "errors": int(r["errors"][0]),
            "error_lines": [r["error_line"]] if "error_line" in r else [],
            "unfinished": int(r["unfinished"][0]),
            "server_cpu": cpu / seconds, "client_cpu": r["client_cpu_s"][0] / seconds,
            "threads": int(r["threads"][0]), "by_kind": kinds}


# ---------------------------------------------------------------------------------------
# References (build/bench_ref and this client against a C sender)
# ---------------------------------------------------------------------------------------

def bench_ref(*args):
    out = subprocess.run([BENCH_REF] + [str(a) for a in args], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    res = {}
    for ln in out.splitlines():
        k, *v = ln.split()
        res[k] = [float(x) for x in v]
    return res


def client_replay(path, reps):
    """This client reading a recorded FETCH response from a C sender (bench_ref serve):
    what the benchmark's own client can read over loopback. Returns (parse MB/s samples,
    raw recv MB/s samples)."""
    p = subprocess.Popen([BENCH_REF, "serve", path, str(2 * reps)], stdout=subprocess.PIPE)
    port = int(p.stdout.readline().split()[1])
    size = os.path.getsize(path)
    with open(path, "rb") as f:             # the tag of the recorded command
        f.seek(max(0, size - 4096))
        tag = f.read().rsplit(b"\r\n", 2)[-2].split(b" ", 1)[0] + b" "
    parse, raw = [], []
    try:
        for _ in range(reps):
            c = Conn(port, greeting=False)
            t0 = now()
            c.sock.sendall(tag + b"FETCH 1:* BODY.PEEK[]\r\n")
            c.wait(tag)
            parse.append(size / MIB / (now() - t0))
            c.close()
            s = socket.create_connection((HOST, port))
            buf = bytearray(4 * MIB)
            mv = memoryview(buf)
            got = 0
            t0 = now()
            s.sendall(b"x\r\n")
            while got < size:
                k = s.recv_into(mv)
                if not k:
                    break
                got += k
            raw.append(size / MIB / (now() - t0))
            s.close()
    finally:
        p.wait(30)
    return parse, raw


def spawn_floor(reps=20):
    ts = []
    for _ in range(reps):
        t0 = now()
        p = subprocess.Popen([BENCH_REF, "hello"], stdout=subprocess.PIPE)
        p.stdout.readline()
        ts.append(now() - t0)
        p.wait()
        p.stdout.close()
    return ts


# ---------------------------------------------------------------------------------------
# Issue 15: 10,000 idle sessions, and how fast the server starts
# ---------------------------------------------------------------------------------------

IDLE_PROBES = 200          # NOOPs and FETCHes timed on the N+1st connection


def raise_nofile(want):
    """A preexec_fn: RLIMIT_NOFILE to at least want, soft and hard (root with
    CAP_SYS_RESOURCE may raise the hard limit); if that is refused, the soft limit to the
    hard one."""
    def f():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f


def has_cap_sys_resource():
    """Does this process have CAP_SYS_RESOURCE (bit 24), which raising a hard limit needs?"""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("CapEff:"):
                    return bool(int(ln.split()[1], 16) >> 24 & 1)
    except (OSError, ValueError):
        pass
    return False


def kernel_mem():
    """Machine-wide KernelStack and Slab of /proc/meminfo, bytes: what threads and sockets
    cost outside any process's RSS."""
    out = {"KernelStack": 0, "Slab": 0}
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                k = ln.split(":")[0]
                if k in out:
                    out[k] = int(ln.split()[1]) * 1024
    except OSError:
        pass
    return out


def proc_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def proc_nofile(pid):
    """(soft, hard) Max open files of pid."""
    try:
        with open("/proc/%d/limits" % pid) as f:
            for ln in f:
                if ln.startswith("Max open files"):
                    v = ln.split()[3:5]
                    return tuple(int(x) if x.isdigit() else -1 for x in v)
    except OSError:
        pass
    return (0, 0)


def thread_stacks(pid, nthreads):
    """RSS of the thread stacks of pid (bytes), their mapping size and count: in
    /proc/PID/smaps, the anonymous private mappings of the one size most of the threads
    have (a stack each; its guard page is a mapping of its own)."""
    maps, size = [], None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            anon = False
            for ln in f:
                parts = ln.split()
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", ln):
                    anon = len(parts) == 5 and parts[1].startswith("rw")
                elif anon and parts[0] == "Size:":
                    size = int(parts[1]) * 1024
                elif anon and parts[0] == "Rss:":
                    maps.append((size, int(parts[1]) * 1024))
    except OSError:
        return 0, 0, 0
    bysize = {}
    for sz, rss in maps:
        bysize.setdefault(sz, []).append(rss)
    best = max(bysize.items(), key=lambda kv: len(kv[1]), default=(0, []))
    if len(best[1]) < max(2, nthreads // 2):
        return 0, 0, 0
    return sum(best[1]), best[0], len(best[1])


def idle_run(corpus, tmp, nidle):
    """One run: imapmem with room for nidle+100 sessions and its descriptor limit raised;
    RSS after one client's SELECT, then with nidle more logged-in idle connections (from
    build/bench_load idle), what they cost, and the N+1st client's NOOP and FETCH."""
    m = {}
    srv = Imapmem(corpus["path"], tmp, args=["--max-connections", str(nidle + 100)],
                  preexec_fn=raise_nofile(4 * nidle + 1024))
    try:
        c = Conn(srv.port)
        c.ok(b"LOGIN test test")
        c.ok(b"SELECT INBOX")
        pid = srv.proc.pid
        m["rss0"], m["thr0"], m["fds0"] = srv.rss(), proc_count(pid, "Threads"), proc_fds(pid)
        m["nofile"] = proc_nofile(pid)
        m["kmem0"] = kernel_mem()
        p = subprocess.Popen([BENCH_LOAD, "idle", HOST, str(srv.port), "test", "test",
                              str(nidle), "INBOX", str(IDLE_PROBES)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=raise_nofile(nidle + 1024))
        head = []
        for ln in p.stdout:
            head.append(ln.decode("utf-8", "replace"))
            if ln.startswith(b"idle_ready"):
                break
        m["rss1"], m["thr1"], m["fds1"] = srv.rss(), proc_count(pid, "Threads"), proc_fds(pid)
        m["kmem1"] = kernel_mem()
        m["stack_rss"], m["stack_size"], m["stacks"] = thread_stacks(pid, m["thr1"] - m["thr0"])
        try:
            p.stdin.write(b"go\n")
            p.stdin.flush()
        except OSError:
            pass
        out, err = p.communicate(timeout=300)
        r = parse_kv("".join(head) + out.decode("utf-8", "replace"))
        if "idle_ready" not in r:
            raise RuntimeError("bench_load idle: exit %s: %s"
                               % (p.returncode, err.decode("utf-8", "replace")[-500:]))
        m["connected"] = int(r["connected"][0])
        m["setup"] = r["setup_s"][0]
        for k in ("noop_p50_s", "noop_p99_s", "fetch_p50_s", "fetch_p99_s"):
            m[k] = r.get(k, [float("nan")])[0]
        m["errors"], m["lost"] = int(r["errors"][0]), int(r["lost"][0])
        m["error_line"] = r.get("error_line", "")
        c.close()
    finally:
        srv.stop()
    n = max(1, m["connected"])
    m["kib"] = (m["rss1"] - m["rss0"]) / n / 1024
    m["fds_per"] = (m["fds1"] - m["fds0"]) / n
    m["thr_per"] = (m["thr1"] - m["thr0"]) / n
    return m


def idle_item(table, corpus, tmp, runs, details, notes):
    nidle = int(os.environ.get("BENCH_IDLE", "10000"))
    rr = []
    for r in range(runs):
        log("idle sessions: %d connections, run %d/%d" % (nidle, r + 1, runs))
        rr.append(idle_run(corpus, tmp, nidle))
    cs = short(corpus["n"])
    col = lambda k: [x[k] for x in rr]
    label = "{:,}".format(nidle)
    conn = col("connected")
    table.add("10 %s idle sessions: connected, logged in" % label, cs, conn, "",
              "", None, "all %s, none dropped" % label,
              min(conn) == nidle and not any(col("errors")))
    kib = col("kib")
    table.add("10 %s idle sessions: RSS a session" % label, cs, kib, "KiB",
              "RSS before %.1f MB" % (med(col("rss0")) / MIB), None, "<=32 KiB",
              med(kib) <= 32)
    k1 = nidle + 1
    nth = "{:,}{}".format(k1, "th" if k1 % 100 in (11, 12, 13) else
                          {1: "st", 2: "nd", 3: "rd"}.get(k1 % 10, "th"))
    for k, what in (("noop", "NOOP"), ("fetch", "FETCH 1 (FLAGS ENVELOPE)")):
        v = col(k + "_p99_s")
        table.add("10 %s client, %s: p99" % (nth, what), cs, v, "s",
                  "p50 %s" % fmt_time(med(col(k + "_p50_s"))), None, "<10 ms",
                  med(v) < 0.010)
    x = rr[len(rr) // 2]
    n = max(1, x["connected"])
    stack = ("thread stacks (%d anonymous mappings of %.0f KiB each) %.1f KiB a session "
             "resident, the rest %.1f KiB"
             % (x["stacks"], x["stack_size"] / 1024, x["stack_rss"] / n / 1024,
                x["kib"] - x["stack_rss"] / n / 1024) if x["stacks"] else
             "thread stacks not found in smaps")
    details.append("%s idle sessions (one run): %d connected in %s; the server has %.2f "
                   "threads and %.2f descriptors a session (%d threads, %d descriptors with "
                   "them; open-file limit %s soft, %s hard); RSS %.1f MB -> %.1f MB, "
                   "%.1f KiB a session: %s. Outside RSS, machine-wide (both ends of each "
                   "connection, and whatever else ran): kernel stacks +%.1f KiB and slab "
                   "+%.1f KiB a session"
                   % (label, x["connected"], fmt_time(x["setup"]), x["thr_per"],
                      x["fds_per"], x["thr1"], x["fds1"], x["nofile"][0], x["nofile"][1],
                      x["rss0"] / MIB, x["rss1"] / MIB, x["kib"], stack,
                      (x["kmem1"]["KernelStack"] - x["kmem0"]["KernelStack"]) / n / 1024,
                      (x["kmem1"]["Slab"] - x["kmem0"]["Slab"]) / n / 1024))
    want = 3 * nidle + 1024
    if 0 < x["nofile"][0] < want:
        notes.append("idle sessions: the server's open-file limit stayed at %d (hard %d): "
                     "raising it to %d needs root with CAP_SYS_RESOURCE, which this process "
                     "lacks" % (x["nofile"][0], x["nofile"][1], 4 * nidle + 1024)
                     if not has_cap_sys_resource() else
                     "idle sessions: the server's open-file limit stayed at %d (hard %d)"
                     % x["nofile"])
    for x in rr:
        if x["connected"] < nidle or x["errors"]:
            lim = x["nofile"][0]
            why = ""
            if x["fds_per"] > 0 and x["fds0"] + x["fds_per"] * nidle > lim > 0:
                why = ("; at %.2f descriptors a session the server's open-file limit %d "
                       "holds %d sessions" % (x["fds_per"], lim,
                                              (lim - x["fds0"]) / x["fds_per"]))
            notes.append("idle sessions: %d of %d connected, %d errors (%s), %d dropped%s"
                         % (x["connected"], nidle, x["errors"], x["error_line"], x["lost"],
                            why))


def spawn_item(table, reps=21):
    """./imapmem on the basic fixture until its ready line, against /bin/true until it
    exits: the same Popen, interleaved, reps each."""
    basic = os.path.join(ROOT, "fixtures", "basic.mbox")
    srv, true = [], []
    for _ in range(reps):
        t0 = now()
        p = subprocess.Popen([IMAPMEM, "-p", "0", basic], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        line = p.stdout.readline()
        srv.append(now() - t0)
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        p.stdout.close()
        if not READY.match(line):
            raise RuntimeError("imapmem %s: no ready line: %r" % (basic, line))
        t0 = now()
        p = subprocess.Popen(["/bin/true"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        p.stdout.read()
        p.wait()
        true.append(now() - t0)
        p.stdout.close()
    table.add("9 spawn ./imapmem basic.mbox to its ready line", "basic", srv, "s",
              "/bin/true %s" % fmt_time(med(true)), med(srv) / med(true), "<=3x",
              med(srv) <= 3 * med(true))


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

def med(v):
    return statistics.median(v)


def fmt_time(s):
    if s != s:
        return "nan"
    if s == float("inf"):
        return "inf"
    ms = s * 1000
    if ms >= 1000:
        return "%.2f s" % s
    if ms >= 100:
        return "%.0f ms" % ms
    if ms >= 10:
        return "%.1f ms" % ms
    if ms >= 1:
        return "%.2f ms" % ms
    return "%.3f ms" % ms


def fmt_num(x, unit):
    if unit == "s":
        return fmt_time(x)
    if unit == "MB":
        return "%.1f MB" % (x / MIB)
    if unit == "MB/s":
        return "%.0f MB/s" % x
    if unit == "/s":
        return "%.0f/s" % x if x >= 10 else "%.1f/s" % x
    if unit == "B":
        return "%d B" % x
    if unit == "KiB":
        return "%.1f KiB" % x
    return "%g" % x


def fmt_stat(v, unit):
    if not v:
        return "-"
    if len(v) == 1:
        return fmt_num(v[0], unit)
    lo, hi = min(v), max(v)
    if unit == "s":
        return "%s [%s-%s]" % (fmt_time(med(v)), fmt_time(lo).split()[0], fmt_time(hi))
    if unit == "MB":
        return "%.1f MB [%.1f-%.1f]" % (med(v) / MIB, lo / MIB, hi / MIB)
    if unit == "MB/s":
        return "%.0f MB/s [%.0f-%.0f]" % (med(v), lo, hi)
    if unit == "/s":
        return "%.0f/s [%.0f-%.0f]" % (med(v), lo, hi)
    if unit == "KiB":
        return "%.1f KiB [%.1f-%.1f]" % (med(v), lo, hi)
    return "%g [%g-%g]" % (med(v), lo, hi)


def fmt_ratio(r):
    if r >= 100:
        return "%.0fx" % r
    if r >= 10:
        return "%.1fx" % r
    if r >= 0.1:
        return "%.2fx" % r
    return "%.2gx" % r


class Table:
    def __init__(self, peer):
        self.rows = []
        self.peer = peer

    def add(self, item, corpus, v, unit, ref="", ratio=None, target="", met=None, peer=None,
            higher_better=False):
        pr = ""
        if self.peer:
            if peer:
                pm = med(peer)
                pr = fmt_ratio(med(v) / pm) if pm else "-"
            peer_s = fmt_stat(peer, unit) if peer else "-"
        self.rows.append([item, corpus, fmt_stat(v, unit), ref,
                          "" if ratio is None else "%.2fx" % ratio if ratio >= 0.1
                          else "%.2gx" % ratio, target,
                          "" if met is None else met if isinstance(met, str)
                          else ("MET" if met else "NOT MET")]
                         + ([peer_s, pr] if self.peer else []))

    def print(self):
        head = ["item", "corpus", "imapmem median [min-max]", "reference", "ratio", "target",
                "met"] + (["dovecot median [min-max]", "imapmem/dovecot"] if self.peer else [])
        w = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(len(head))]
        line = lambda r: "  ".join(str(x).ljust(w[i]) for i, x in enumerate(r)).rstrip()
        print(line(head))
        print("  ".join("-" * x for x in w))
        for r in self.rows:
            print(line(r))


def machine_header():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = proc_meminfo()
    envs = " ".join("%s=%s" % (k, os.environ[k]) for k in
                    ("BENCH_SIZES", "BENCH_RUNS", "BENCH_IDLE", "BENCH_PEERS", "BENCH_KEEP",
                     "IMAPMEM_BIN")
                    if k in os.environ)
    cmd = "make bench" if "MAKELEVEL" in os.environ else "python3 test/bench.py"
    print("imapmem benchmark (issues 6 and 15)")
    print("machine: %d cores (nproc), %s, %.1f GiB RAM; kernel %s %s; Python %s"
          % (os.cpu_count() or 0, cpu, mem / 1024 ** 3, platform.release(),
             platform.version(), platform.python_version()))
    print("command: cd %s && %s" % (ROOT, (envs + " " + cmd).strip()))
    print("units: MB = 2^20 bytes, KB = 2^10 bytes; every figure is the median of the runs "
          "with [min-max]")
    sys.stdout.flush()


def proc_meminfo():
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) * 1024
    except OSError:
        return 0


def short(n):
    return "%dk" % (n // 1000) if n >= 1000 and n % 1000 == 0 else str(n)


def main():
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",") if x.strip()]
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    peers = [p for p in os.environ.get("BENCH_PEERS", "").split(",") if p.strip()]
    for p in peers:
        if p != "dovecot":
            sys.exit("bench.py: unknown peer %r (only dovecot)" % p)
    for exe in (IMAPMEM, BENCH_REF, BENCH_SIZES):
        if not os.access(exe, os.X_OK):
            sys.exit("bench.py: %s is missing: run `make bench`" % exe)
    if peers and not ensure_dovecot():
        sys.exit("bench.py: BENCH_PEERS=dovecot but dovecot-imapd could not be installed")
    peer = Dovecot if peers else None
    if os.environ.get("BENCH_ONLY") == "sort":
        return sort_main(sizes, runs, peer)

    machine_header()
    tmp = tempfile.mkdtemp(prefix="imapmem-bench-")
    os.chmod(tmp, 0o755)
    keep = os.environ.get("BENCH_KEEP")
    t_start = now()
    table = Table(bool(peer))
    notes, details = [], []
    try:
        tcp = bench_ref("tcp", 1024, 3)
        tcp_mbs = [tcp["tcp_bytes"][0] / MIB / t for t in tcp["tcp_s"]]
        spawn = spawn_floor()
        corpora = []
        for n in sizes:
            t0 = now()
            path = os.path.join(tmp, "corpus-%d.mbox" % n)
            c = generate(path, n)
            corpora.append(c)
            log("corpus %d: %.1f MB generated in %.1f s" % (n, c["bytes"] / MIB, now() - t0))
        print("corpora (seeded, in %s): %s" % (tmp if keep else "a temporary folder", "; ".join(
            "%d msgs %.1f MB (median %.1f KB, p90 %.1f KB, max %.0f KB)"
            % (c["n"], c["bytes"] / MIB, c["median"] / 1024, c["p90"] / 1024, c["max"] / 1024)
            for c in corpora)))
        print("mix: ~68% text/plain (7bit, QP, 8bit), 19% multipart/alternative, 7.4% "
              "multipart/mixed with base64 attachments 2-200 KB, 2% nested multiparts, 3.6% "
              "message/rfc822; 15% RFC 2047 subjects; 30% unseen")
        print()
        sys.stdout.flush()

        refs, cs_results = {}, {}
        for c in corpora:
            n = c["n"]
            nruns = runs if n <= 10000 else max(1, min(runs, 3))
            rd = bench_ref("read", c["path"], 7)
            sc = bench_ref("scan", c["path"], NEEDLE, 5)
            res = {"imapmem": [], "dovecot": []}
            rec = os.path.join(tmp, "fetch-body-%d.bin" % n)
            for r in range(nruns):
                log("corpus %d: run %d/%d" % (n, r + 1, nruns))
                res["imapmem"].append(sequential_run(Imapmem, c, tmp,
                                                     record=rec if r == 0 else None))
                if peer:
                    res["dovecot"].append(sequential_run(peer, c, tmp))
            cs_results[n] = runs_of("CONDSTORE", condstore_run, c, tmp, nruns, peer, notes)
            replay, raw = client_replay(rec, 5)
            os.unlink(rec)
            refs[n] = {"read": rd["read_file_s"], "read_hot": rd["read_file_hot_s"],
                       "scan": sc["scan_s"], "matches": sc["scan_matches"][0],
                       "replay": replay, "raw": raw}
            for who in res:
                for m in res[who]:
                    notes.extend(m.get("warnings", []))
            add_sequential_rows(table, c, res, refs[n], details)
            log("corpus %d done (%.0f s so far)" % (n, now() - t_start))

        add_condstore_rows(table, corpora, cs_results, details)
        for c in corpora:        # SORT and THREAD (RFC 5256) beside FETCH ENVELOPE
            sort_phase(table, c, tmp, runs, peer, notes)

        worst_search(table, tmp, runs)
        tls = tls_throughput(max(corpora, key=lambda c: c["n"]), tmp, runs) if corpora else None
        if tls:
            cs = short(max(c["n"] for c in corpora))
            table.add("3 FETCH 1:* BODY.PEEK[] over TLS (%s)" % tls[0], cs, tls[1], "MB/s",
                      "plain TCP %.0f MB/s" % med(tls[2]), med(tls[1]) / med(tls[2]))
            table.add("3 the same, server CPU a GiB over TLS", cs, tls[3], "s",
                      "plain TCP %s" % fmt_time(med(tls[4])), med(tls[3]) / med(tls[4]))

        # items 6 and 7 on the 10,000-message corpus (or the largest one up to it)
        lc = max((c for c in corpora if c["n"] <= 10000), key=lambda c: c["n"], default=None)
        if lc:
            load_phase(table, lc, tmp, peer, details, notes)
        # issue 15: idle sessions on the smallest corpus (the sessions matter, not the
        # mailbox), with build/bench_load; and how fast the server starts
        if corpora and os.access(BENCH_LOAD, os.X_OK):
            idle_item(table, min(corpora, key=lambda c: c["n"]), tmp, max(1, min(3, runs)),
                      details, notes)
        elif corpora:
            notes.append("build/bench_load is missing: no idle-sessions item (make bench)")
        spawn_item(table)

        print("References (this machine):")
        print("  loopback TCP, C writer -> C reader (fork, 1 GiB): %s"
              % fmt_stat(tcp_mbs, "MB/s"))
        print("  process start-up floor (spawn bench_ref, read its line): %s"
              % fmt_stat(spawn, "s"))
        for c in corpora:
            rf = refs[c["n"]]
            print("  %s corpus (%.1f MB): read file once %s (buffer already mapped: %s); "
                  "case-insensitive scan %s (%.0f MB/s, %d matches); this client reading "
                  "the recorded FETCH BODY.PEEK[] response from a C sender %s (raw recv "
                  "only: %s)"
                  % (short(c["n"]), c["bytes"] / MIB, fmt_stat(rf["read"], "s"),
                     fmt_stat(rf["read_hot"], "s"), fmt_stat(rf["scan"], "s"),
                     c["bytes"] / MIB / med(rf["scan"]), rf["matches"],
                     fmt_stat(rf["replay"], "MB/s"), fmt_stat(rf["raw"], "MB/s")))
        if tls:
            print("  FETCH 1:* BODY.PEEK[] of the %s corpus from one server over implicit TLS "
                  "(%s): %s, server CPU %s a GiB; over plain TCP: %s, server CPU %s a GiB"
                  % (short(max(c["n"] for c in corpora)), tls[0], fmt_stat(tls[1], "MB/s"),
                     fmt_stat(tls[3], "s"), fmt_stat(tls[2], "MB/s"), fmt_stat(tls[4], "s")))
        print()
        print("Targets (issues 6 and 15) are for the 10k corpus; a target in parentheses is "
              "the same test on another corpus, for information. Issue 15's load and SEARCH "
              "TEXT targets hold on every corpus; items 9 and 10 run once, on the basic "
              "fixture and on the smallest corpus.")
        table.print()
        print()
        if details:
            print("Details:")
            for d in details:
                print("  " + d)
        if notes:
            print("Warnings:")
            for x in sorted(set(notes)):
                print("  " + x)
        print("total benchmark time: %.0f s" % (now() - t_start))
    finally:
        if keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def judge(n, target, ok, every=False):
    """The issue's targets are for the 10,000-message corpus: on another corpus the same
    test is shown in parentheses, for information. every: a target of issue 15 that holds
    on every corpus (the load, SEARCH TEXT)."""
    if n == 10000 or every:
        return target, "MET" if ok else "NOT MET"
    return "(%s)" % target, "(MET)" if ok else "(NOT MET)"


def add_sequential_rows(table, c, res, ref, details):
    n, cs = c["n"], short(c["n"])
    im, dv = res["imapmem"], res["dovecot"]
    col = lambda runs, k: [m[k] for m in runs]
    pv = lambda k: col(dv, k) if dv else None
    read = med(ref["read"])

    v = col(im, "ready_select")
    ratio = med(v) / read
    # issue 15: within 1.3x of reading the fixture into fresh memory, on every corpus
    table.add("1 ready + first SELECT", cs, v, "s", "read file %s" % fmt_time(read), ratio,
              *judge(n, "<=1.3x", ratio <= 1.3, every=True), peer=pv("ready_select"))
    if n >= 100000:           # every run got here: the corpus loaded and was served
        table.add("1 loads without trouble (%d runs)" % len(v), cs, v, "s", target="loads",
                  met="MET")
    # the CPU of the server's live threads: a helper thread (the loader's reader, FETCH's
    # render-ahead) has ended by then, and its CPU is not in these figures
    details.append("%s ready+SELECT phases (medians): spawn->ready line %s (server CPU %s, "
                   "helper threads not counted), "
                   "connect+greeting+LOGIN %s, SELECT %s; peak RSS during load %.1f MB"
                   % (cs, fmt_time(med(col(im, "spawn_ready"))),
                      fmt_time(med(col(im, "load_cpu"))),
                      fmt_time(med(col(im, "connect_login"))), fmt_time(med(col(im, "select"))),
                      med(col(im, "hwm_load")) / MIB))
    fixture = "fixture %.1f MB" % (c["bytes"] / MIB)
    v = col(im, "hwm_ready")      # VmHWM read as soon as the ready line is: the load's peak
    table.add("2 peak RSS during load (VmHWM at ready)", cs, v, "MB", fixture,
              med(v) / c["bytes"], *judge(n, "<=1.2x", med(v) <= 1.2 * c["bytes"]),
              peer=pv("hwm_ready"))
    limit = 1.3 * c["bytes"] + 300 * n         # issue 6
    v = col(im, "rss_load")
    table.add("2 RSS after load (%.0f B/msg)" % (med(v) / n), cs, v, "MB", fixture,
              med(v) / c["bytes"],
              *judge(n, "<=1.3x+300B/msg = %.0f MB" % (limit / MIB), med(v) <= limit),
              peer=pv("rss_load"))
    limit = 1.15 * c["bytes"] + 200 * n        # issue 15
    v = col(im, "rss_envbs")
    table.add("2 RSS after FETCH ENV+BS (%.0f B/msg)" % (med(v) / n), cs, v, "MB", fixture,
              med(v) / c["bytes"],
              *judge(n, "<=1.15x+200B/msg = %.0f MB" % (limit / MIB), med(v) <= limit),
              peer=pv("rss_envbs"))
    table.add("3 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE)", cs, col(im, "fetch_fast"),
              "s", peer=pv("fetch_fast"))
    first, rep = col(im, "fetch_envbs_first"), col(im, "fetch_envbs_repeat")
    table.add("3 FETCH 1:* (ENVELOPE BODYSTRUCTURE) first", cs, first, "s",
              "repeated %s" % fmt_time(med(rep)), med(first) / med(rep),
              *judge(n, "<=2x", med(first) / med(rep) <= 2), peer=pv("fetch_envbs_first"))
    table.add("3 FETCH 1:* (ENVELOPE BODYSTRUCTURE) repeated", cs, rep, "s",
              peer=pv("fetch_envbs_repeat"))
    v = col(im, "fetch_body_mbs")
    cl = med(ref["replay"])
    table.add("3 FETCH 1:* BODY.PEEK[]", cs, v, "MB/s", "client reads %.0f MB/s" % cl,
              med(v) / cl, *judge(n, ">=0.5x", med(v) / cl >= 0.5), peer=pv("fetch_body_mbs"))
    details.append("%s FETCH (medians): ENV+BS first: server CPU %s (its helper thread not "
                   "counted); BODY.PEEK[] %.1f MB in "
                   "%s: server CPU %s, client CPU %s, %d recv()s of %.1f KB on average"
                   % (cs, fmt_time(med(col(im, "envbs_first_cpu"))),
                      med(col(im, "fetch_body_bytes")) / MIB, fmt_time(med(col(im, "fetch_body"))),
                      fmt_time(med(col(im, "fetch_body_cpu"))),
                      fmt_time(med(col(im, "fetch_body_client_cpu"))),
                      med(col(im, "fetch_body_recvs")),
                      med(col(im, "fetch_body_bytes")) / med(col(im, "fetch_body_recvs")) / 1024))
    scan = med(ref["scan"])
    v = col(im, "search_text")
    # issue 15: within 1x of the C scan, on every corpus
    table.add('4 SEARCH TEXT "%s"' % NEEDLE, cs, v, "s", "scan %s" % fmt_time(scan),
              med(v) / scan, *judge(n, "<=1x", med(v) / scan <= 1, every=True),
              peer=pv("search_text"))
    v = col(im, "search_text_repeat")
    table.add("4 SEARCH TEXT (again)", cs, v, "s", "scan %s" % fmt_time(scan), med(v) / scan,
              peer=pv("search_text_repeat"))
    v = col(im, "search_text_cold")           # keeps issue 6's target
    table.add("4 SEARCH TEXT (right after SELECT)", cs, v, "s", "scan %s" % fmt_time(scan),
              med(v) / scan, *judge(n, "<=3x", med(v) / scan <= 3),
              peer=pv("search_text_cold"))
    for key, label in (("search_from", '4 SEARCH FROM "%s"' % FROM_NEEDLE),
                       ("search_since", "4 SEARCH SINCE %s" % SINCE_DATE),
                       ("search_unseen", "4 UID SEARCH UNSEEN")):
        table.add(label, cs, col(im, key), "s", peer=pv(key))
    noop = med(col(im, "noop"))
    v = col(im, "store_all")
    table.add("5 STORE 1:* +FLAGS.SILENT (\\Flagged)", cs, v, "s", "NOOP rtt %s"
              % fmt_time(noop), med(v) / noop, *judge(n, "<10 ms", med(v) < 0.010),
              peer=pv("store_all"))
    v = col(im, "expunge")
    table.add("5 EXPUNGE of 10%", cs, v, "s", "NOOP rtt %s" % fmt_time(noop), med(v) / noop,
              *judge(n, "<10 ms", med(v) < 0.010), peer=pv("expunge"))


def add_condstore_rows(table, corpora, cs_results, details):
    """Item 8: per corpus, the plain FETCH 1:* (FLAGS) and the CHANGEDSINCE FETCH after k
    changes as a ratio of it (same runs); across corpora, the CHANGEDSINCE FETCH on the
    largest corpus against the smallest (the mailbox 10 times larger, the same k); and the
    bytes a MODSEQ adds to each message."""
    col = lambda runs, k: [m[k] for m in runs]
    for c in corpora:
        n, cs = c["n"], short(c["n"])
        im, dv = cs_results[n]["imapmem"], cs_results[n]["dovecot"]
        pv = lambda k: col(dv, k) if dv else None
        plain = col(im, "cs_plain")
        table.add("8 FETCH 1:* (FLAGS), CONDSTORE on", cs, plain, "s", peer=pv("cs_plain"))
        for k in CHANGED_KS:
            v = col(im, "cs_k%d" % k)
            table.add("8 FETCH 1:* (FLAGS) (CHANGEDSINCE) after %d changes" % k, cs, v, "s",
                      "FLAGS %s" % fmt_time(med(plain)), med(v) / med(plain),
                      peer=pv("cs_k%d" % k))
        details.append("%s CHANGEDSINCE (medians of the runs' medians): server CPU for FETCH "
                       "1:* (FLAGS) %s; with CHANGEDSINCE after %s"
                       % (cs, fmt_time(med(col(im, "cs_plain_cpu"))), ", ".join(
                           "%d changes %s" % (k, fmt_time(med(col(im, "cs_k%d_cpu" % k))))
                           for k in CHANGED_KS)))
    if len(corpora) >= 2:
        small, big = corpora[0], corpora[-1]
        ims, imb = cs_results[small["n"]]["imapmem"], cs_results[big["n"]]["imapmem"]
        grow = big["n"] / small["n"]
        # judged by the server's CPU time (per thread, to the nanosecond): the wall time of
        # a 40 us command is mostly the round trip and the machine's other work.  A cost
        # proportional to the mailbox would show about 10x; independent of it, 1x; the line
        # is drawn at 3x, since tens of microseconds of CPU still scatter on a busy machine
        for k in CHANGED_KS[1:]:
            if k > small["n"]:
                continue
            key = "cs_k%d_cpu" % k
            ts, tb = med(col(ims, key)), med(col(imb, key))
            table.add("8 CHANGEDSINCE after %d changes, server CPU: %s corpus / %s" % (
                k, short(big["n"]), short(small["n"])), short(big["n"]), col(imb, key),
                "s", "%s corpus %s" % (short(small["n"]), fmt_time(ts)), tb / ts,
                "<=3x (mailbox %.0fx)" % grow, tb / ts <= 3)
    sz = modseq_sizes()
    cost = sz["message"] - sz["without"]
    table.add("8 MODSEQ bytes a message (sizeof)", "-", [cost], "B",
              "struct message %d B" % sz["message"], cost / sz["message"], "<=16 B",
              cost <= 16)
    details.append("MODSEQ memory: struct message (one element of a mailbox's array of "
                   "messages) is %d B; its RFC 7162 fields (modseq, older, newer: the MODSEQ "
                   "and the change-list links) are %d B, and without them it would be at "
                   "least %d B (the other fields' bytes rounded up to its %d-byte alignment), "
                   "so they cost at most %d B a message. An RSS difference of %d B a message "
                   "is lost in the RSS of the bytes (item 2)."
                   % (sz["message"], sz["modseq_fields"], sz["without"], sz["align"], cost,
                      cost))


# ---------------------------------------------------------------------------------------
# Item 4b (issue 9): SEARCH BODY on texts that make a naive case-insensitive search slow
# ---------------------------------------------------------------------------------------

WORST_BODY = 1 << 20
WORST_CASES = (
    # body text, needles: a first letter present in one case only, repeated prefixes
    ("lower-case words", "words", ("Elephant", "Tomorrow", "Zebrafish")),
    ("a" * 8, "aaaa", ("aab", "a" * 19 + "b")),
    ("A" * 8, "AAAA", ("aab", "a" * 19 + "b")),
)


def worst_body(kind, rng):
    if kind == "words":
        out, n = [], 0
        while n < WORST_BODY:
            w = rng.choice(WORDS)
            out.append(w)
            n += len(w) + 1
        text = " ".join(out)
        lines = [text[i:i + 76] for i in range(0, len(text), 76)]
        return ("\n".join(lines))[:WORST_BODY]
    return (kind * (WORST_BODY // len(kind) + 1))[:WORST_BODY]


def worst_search(table, tmp, runs):
    """One single-case 1 MB body per mailbox; SEARCH BODY with each needle against the C
    scan of exactly those body bytes (bench_ref scan). Target: within 2x."""
    rng = random.Random(9)
    for label, kind, needles in WORST_CASES:
        body = worst_body(kind, rng)
        assert body.lower() == body or body.upper() == body
        mbox = os.path.join(tmp, "worst-%s.mbox" % kind)
        with open(mbox, "w") as f:
            f.write("From a@example.org Mon Jan  2 03:04:05 2023\nFrom: a@example.org\n"
                    "Subject: worst case\n\n%s\n" % body)
        raw = os.path.join(tmp, "worst-%s.txt" % kind)
        with open(raw, "w") as f:              # the body as imapmem stores it (CRLF)
            f.write(body.replace("\n", "\r\n") + "\r\n")
        srv = Imapmem(mbox, tmp)
        try:
            c = Conn(srv.port)
            c.ok(b"LOGIN test test")
            c.ok(b"SELECT INBOX")
            for needle in needles:
                want = body.lower().count(needle.lower())
                ref = bench_ref("scan", raw, needle, max(3, runs))["scan_s"]
                v = []
                for _ in range(max(3, runs)):
                    t, (_, _, lines) = c.timed(b'SEARCH BODY "%s"' % needle.encode(), keep=True)
                    if (search_count(lines) == 1) != (want > 0):
                        raise RuntimeError("SEARCH BODY %s: %r" % (needle, lines))
                    v.append(t)
                shown = needle if len(needle) < 12 else needle[:3] + "..." + needle[-3:]
                table.add('4 SEARCH BODY "%s" in 1 MB of %s' % (shown, label), "worst", v,
                          "s", "scan %s" % fmt_time(med(ref)), med(v) / med(ref),
                          "<=2x", med(v) / med(ref) <= 2)
            c.ok(b"LOGOUT")
            c.close()
        finally:
            srv.stop()


def load_phase(table, c, tmp, peer, details, notes):
    n, cs = c["n"], short(c["n"])
    runs = int(os.environ.get("BENCH_LOAD_RUNS", "3" if peer else "5"))
    duration = 4.0
    # the C load generator when it is built (make bench builds it), else the Python workers
    use_c = os.access(BENCH_LOAD, os.X_OK)
    levels = (1, 8, 64, 256) if use_c else (1, 8, 64)
    mix = ((lambda srv, lv, r: bench_load_run(srv.port, lv, duration, srv)) if use_c else
           (lambda srv, lv, r: load_run(srv.port, lv, "mix", n, duration,
                                        max(50, 100000 // lv), r * 1000 + lv, srv)))
    out = {lv: {"imapmem": [], "dovecot": []} for lv in levels}
    app = {"imapmem": [], "dovecot": []}
    stall = {"imapmem": [], "dovecot": []}
    servers = [("imapmem", Imapmem)] + ([("dovecot", peer)] if peer else [])
    started = {}
    try:
        for who, cls in servers:
            started[who] = cls(c["path"], tmp)
            log("load: warm-up, 8 clients for 1 s, %s" % who)
            if use_c:
                bench_load_run(started[who].port, 8, 1.0, started[who])
            else:
                load_run(started[who].port, 8, "mix", n, 1.0, 10000, 99, started[who])
        for r in range(runs):
            for lv in levels:
                for who, _ in servers:
                    log("load: %d clients, run %d/%d, %s" % (lv, r + 1, runs, who))
                    out[lv][who].append(mix(started[who], lv, r))
        for r in range(runs):       # APPEND last: it changes the mailbox
            for who, _ in servers:
                log("load: APPEND, 4 clients, run %d/%d, %s" % (r + 1, runs, who))
                app[who].append(load_run(started[who].port, 4, "append", n, duration, 5000,
                                         r + 7, started[who]))
        for r in range(runs):       # last: a peer may keep a lock of the stalled session
            for who, _ in servers:
                log("load: stalled-reader check, run %d/%d, %s" % (r + 1, runs, who))
                stall[who].append(stall_check(started[who].port, n))
    finally:
        for s in started.values():
            s.stop()
    pv = lambda runs, k: [x[k] for x in runs] if runs else None
    rate8 = med([x["rate"] for x in out[8]["imapmem"]])
    if use_c:
        details.append("items 6: clients driven by build/bench_load (C, %d threads, each an "
                       "epoll loop over its share of the connections, at nice %s so that "
                       "hundreds of runnable server threads cannot starve it); item 7 "
                       "(APPEND) by the Python workers"
                       % (out[8]["imapmem"][0]["threads"],
                          ",".join(str(x) for x in load_nice_used) or "?"))
    for lv in levels:
        im, dv = out[lv]["imapmem"], out[lv]["dovecot"]
        v = [x["rate"] for x in im]
        if lv == 64:
            # "no lower": a median below the 8-client one by less than the runs' spread is
            # not a measured difference; it is marked "NOT MET*" and explained under Details
            r8 = [x["rate"] for x in out[8]["imapmem"]]
            tgt, met = judge(n, ">= 8 clients", med(v) >= rate8)
            if med(v) < rate8 and max(v) >= min(r8):
                met = met.replace("NOT MET", "NOT MET*")
                details.append("NOT MET*: 64 clients %.1f%% below 8 clients, within the run-to-run "
                               "spread (8: %.0f-%.0f/s, 64: %.0f-%.0f/s): not a measured "
                               "difference" % (100 * (1 - med(v) / rate8), min(r8), max(r8),
                                               min(v), max(v)))
            table.add("6 %d clients: commands/s" % lv, cs, v, "/s", "8 clients %.0f/s" % rate8,
                      med(v) / rate8, tgt, met, peer=pv(dv, "rate"))
        elif lv == 256:          # issue 15
            table.add("6 %d clients: commands/s" % lv, cs, v, "/s", "8 clients %.0f/s" % rate8,
                      med(v) / rate8, *judge(n, ">=0.9x", med(v) >= 0.9 * rate8),
                      peer=pv(dv, "rate"))
        else:
            table.add("6 %d client%s: commands/s" % (lv, "s" if lv > 1 else ""), cs, v, "/s",
                      peer=pv(dv, "rate"))
        who_s = "%d client%s" % (lv, "s" if lv > 1 else "")
        table.add("6 %s: p50 latency" % who_s, cs, [x["p50"] for x in im], "s",
                  peer=pv(dv, "p50"))
        p99 = [x["p99"] for x in im]
        if lv == 64:
            table.add("6 %s: p99 latency" % who_s, cs, p99, "s",
                      *("", None), *judge(n, "<50 ms", med(p99) < 0.050), peer=pv(dv, "p99"))
        elif lv == 256:
            table.add("6 %s: p99 latency" % who_s, cs, p99, "s",
                      *("", None), *judge(n, "<10 ms", med(p99) < 0.010), peer=pv(dv, "p99"))
        else:
            table.add("6 %s: p99 latency" % who_s, cs, p99, "s", peer=pv(dv, "p99"))
        for who, rr in (("imapmem", im), ("dovecot", dv)):
            if not rr:
                continue
            last = rr[len(rr) // 2]
            kinds = ", ".join("%s p50 %s p99 %s" % (k, fmt_time(a), fmt_time(b))
                              for k, (a, b, _) in sorted(last["by_kind"].items()))
            details.append("%s %s (%s, one run): %s; CPU in %% of one core: server "
                           "%.0f%%, client processes %.0f%%"
                           % (cs, who_s, who, kinds, 100 * last["server_cpu"],
                              100 * last["client_cpu"]))
            for x in rr:
                if x["errors"] or x["unfinished"]:
                    notes.append("%s %d clients: %d commands failed, %d unfinished after the "
                                 "deadline %s" % (who, lv, x["errors"], x["unfinished"],
                                                  x["error_lines"][:1]))
    if use_c:                    # issue 15: no errors, at any level, in any run
        bad = [x["errors"] + x["unfinished"] for lv in levels for x in out[lv]["imapmem"]]
        table.add("6 failed commands (%s clients, every run)"
                  % ", ".join(str(lv) for lv in levels), cs, [sum(bad)], "", *("", None),
                  *judge(n, "none", sum(bad) == 0),
                  peer=[sum(x["errors"] + x["unfinished"] for lv in levels
                            for x in out[lv]["dovecot"])] if peer else None)
    im, dv = stall["imapmem"], stall["dovecot"]
    v = [x["max"] for x in im]
    table.add("6 stalled reader: others' max latency", cs, v, "s", "%d cmds, p50 %s"
              % (med([x["n"] for x in im]), fmt_time(med([x["p50"] for x in im]))),
              target="no lock across net I/O", met=max(v) < STALL_LIMIT,
              peer=pv(dv, "max"))
    details.append("stalled reader: one client sends FETCH 1:* BODY.PEEK[] and reads nothing "
                   "(the server's socket buffer fills), another runs SELECT/FETCH/STORE/NOOP "
                   "for %.1f s; a lock held while writing to the stalled socket would hold "
                   "it up (met: every command under %s in every run)"
                   % (STALL_TIME, fmt_time(STALL_LIMIT)))
    for who, rr in (("imapmem", im), ("dovecot", dv)):
        for x in rr:
            if x["timeouts"]:
                notes.append("%s stalled-reader check: a command got no reply in %s"
                             % (who, fmt_time(STALL_TIMEOUT)))
    im, dv = app["imapmem"], app["dovecot"]
    table.add("7 APPEND 4 KB, 4 clients: messages/s", cs, [x["rate"] for x in im], "/s",
              peer=pv(dv, "rate"))
    for who, rr in (("imapmem", im), ("dovecot", dv)):
        if rr:
            last = rr[len(rr) // 2]
            details.append("%s APPEND (%s, one run): p50 %s, p99 %s; CPU in %% of one core: "
                           "server %.0f%%, client processes %.0f%%"
                           % (cs, who, fmt_time(last["p50"]), fmt_time(last["p99"]),
                              100 * last["server_cpu"], 100 * last["client_cpu"]))
            for x in rr:
                if x["errors"] or x["unfinished"]:
                    notes.append("%s APPEND: %d failed, %d unfinished %s"
                                 % (who, x["errors"], x["unfinished"], x["error_lines"][:1]))


if __name__ == "__main__":
    main()
