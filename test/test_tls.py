"""TLS, the opt-in build (make TLS=openssl): STARTTLS (RFC 3501 6.2.1, RFC 9051 6.2.1) and
implicit TLS on --imaps-port (RFC 8314) with real clients that verify the certificate,
trusting only the --tls-cert-out file (Python, curl, openssl s_client, mbsync, mutt, each
skipped when it is not installed; .ci/run installs them); require-TLS; the
plaintext-injection guard; the handshake timeout; given certificates; certificate faults;
--stdio-tls.

Against a build without TLS only what such a build promises runs: TLS options exit 2
with a message saying how to build with TLS, and STARTTLS is neither offered nor done.
"""
import fcntl
import os
import pty
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import termios
import time
import unittest

import imapref
from wire import BIN, LOGIN, Raw, ServerCase, exists, fixture, has_tls, responses, run

BASIC = fixture("basic.mbox")
TLS = has_tls()
NO_TLS = "%s was built without TLS (make TLS=openssl builds it with)" % os.path.basename(BIN)
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
MBSYNC = shutil.which("mbsync")
MUTT = shutil.which("mutt")
# isync matches the certificate against Host as a name, never as an IP address: Host
# localhost (isync 1.4 spells TLSType as SSLType)
MBSYNCRC = """IMAPAccount a
Host localhost
Port {port}
User test
Pass test
SSLType {tls}
CertificateFile {ca}
SystemCertificates no

IMAPStore remote
Account a

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
"""

# mutt as its user has it, with the settings a test needs on top: ssl_force_tls,
# ssl_starttls, ssl_verify_host and ssl_verify_dates keep their defaults (all on), and the
# one certificate it trusts is the --tls-cert-out file. Nothing is cached or pre-accepted:
# certificate_file (certificates a user accepted "always") is a file that does not exist.
MUTTRC = """set ssl_ca_certificates_file="{ca}"
set certificate_file="{home}/accepted-certificates"
set folder="{home}"
set imap_user=test
set imap_pass=test
set header_cache=
set message_cachedir=
set confirmcreate=no
set wait_key=no
set sendmail=/bin/true
set copy=yes
"""


def verifying(cafile):
    """What a careful client does: verify the chain and the host name, strictly (the
    key usage, basic constraints and key identifiers Python 3.13 checks by default)."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


def verifying_wait(cafile, timeout=10):
    """verifying(), once cafile is there (a --stdio-tls server writes it as it starts)."""
    end = time.monotonic() + timeout
    while not os.path.exists(cafile) and time.monotonic() < end:
        time.sleep(0.02)
    return verifying(cafile)


def trusting_anything():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def close_imaplib(c):
    """After a test, whether or not it logged out."""
    if c.state != "LOGOUT":
        c.shutdown()


class TLSRaw(Raw):
    """A Raw client over implicit TLS (the imaps port)."""

    def __init__(self, host, port, ctx, timeout=10):
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock = ctx.wrap_socket(sock, server_hostname="localhost")
        self.buf = b""
        self.n = 0
        self.greeting = self.readline()


def starttls(raw, ctx):
    """STARTTLS on a Raw client; the rest of the conversation goes over TLS."""
    raw.ok("STARTTLS")
    assert raw.buf == b"", raw.buf
    raw.sock = ctx.wrap_socket(raw.sock, server_hostname="localhost")


def caps(raw):
    untagged, tagged = raw.cmd("CAPABILITY")
    assert tagged.startswith(b"OK"), tagged
    return {str(c).upper() for c in responses(untagged, "CAPABILITY")[0][1:]}


@unittest.skipIf(TLS, "this imapmem has TLS")
class WithoutTLS(ServerCase):
    """A plain build: TLS options exit 2 and say how to get TLS; nothing else changes."""

    def test_tls_options_exit_2_with_how_to_build(self):
        for args in (["--imaps-port", "0"], ["--require-tls"], ["--tls-cert-out", "/tmp/x"],
                     ["--tls-cert", "c.pem", "--tls-key", "k.pem"], ["--tls-fault", "expired"],
                     ["--imaps-port=993"], ["--stdio-tls"]):
            p = run(["-p", "0"] + args + [BASIC], timeout=5)
            self.assertEqual(p.returncode, 2, args)
            self.assertNotIn(b"listening", p.stdout)
            self.assertIn(b"make TLS=openssl", p.stderr, args)
            self.assertIn(args[0].split("=")[0].encode(), p.stderr, args)

    def test_links_neither_libssl_nor_libcrypto(self):
        ldd = shutil.which("ldd")
        if not ldd:
            self.skipTest("no ldd")
        p = subprocess.run([ldd, BIN], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:             # a static or musl binary: nothing linked at all
            self.skipTest("ldd cannot list %s: %r" % (BIN, p.stdout[:100]))
        self.assertNotIn(b"libssl", p.stdout)
        self.assertNotIn(b"libcrypto", p.stdout)

    def test_starttls_neither_offered_nor_done(self):
        r = self.raw(self.start(BASIC), login=None)
        self.assertNotIn("STARTTLS", caps(r))
        self.assertBAD(r.cmd("STARTTLS")[1])
        r.ok("LOGIN test test")


@unittest.skipUnless(TLS, NO_TLS)
class TLSCase(ServerCase):
    def tls_server(self, *args):
        """A TLS server with an imaps port; .ca is the --tls-cert-out file."""
        ca = os.path.join(self.tempdir(), "trust.pem")
        s = self.start("--imaps-port", "0", "--tls-cert-out", ca, *(args or (BASIC,)))
        s.ca = ca
        return s


class GeneratedCertificate(TLSCase):
    def test_cert_out_is_a_certificate_written_before_the_ready_line(self):
        s = self.tls_server()
        with open(s.ca) as f:
            pem = f.read()
        self.assertTrue(pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:40])
        self.assertNotIn("PRIVATE KEY", pem)
        self.assertEqual(os.listdir(os.path.dirname(s.ca)), ["trust.pem"])   # no temp file
        self.assertIsNotNone(s.imaps_port)
        self.assertRegex(s.ready_line.decode(), r"^imapmem: listening on 127\.0\.0\.1:\d+, "
                         r"imaps 127\.0\.0\.1:\d+\n$")

    def test_the_leaf_names_localhost_and_the_loopback_addresses(self):
        s = self.tls_server()
        for host in ("localhost", "127.0.0.1"):
            with socket.create_connection((host, s.imaps_port), timeout=10) as sock:
                with verifying(s.ca).wrap_socket(sock, server_hostname=host) as t:
                    cert = t.getpeercert()
            names = {v for k, v in cert["subjectAltName"]}
            self.assertTrue({"localhost", "127.0.0.1", "0:0:0:0:0:0:0:1"} <= names, names)

    def test_a_new_certificate_every_start(self):
        a, b = self.tls_server(), self.tls_server()
        self.assertNotEqual(open(a.ca).read(), open(b.ca).read())


class PythonImaplib(TLSCase):
    def setUp(self):
        self.s = self.tls_server()

    def test_imap4_ssl_verifying(self):
        import imaplib
        c = imaplib.IMAP4_SSL("localhost", self.s.imaps_port, ssl_context=verifying(self.s.ca),
                              timeout=10)
        self.addCleanup(close_imaplib, c)
        self.assertNotIn("STARTTLS", c.capabilities)    # RFC 8314: TLS already
        c.login(*LOGIN)
        typ, data = c.select("INBOX")
        self.assertEqual(int(data[0]), len(imapref.read_mbox(BASIC)))
        typ, data = c.uid("FETCH", "1", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][1], imapref.read_mbox(BASIC)[0].raw)
        c.logout()

    def test_starttls_verifying(self):
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", self.s.port, timeout=10)
        self.addCleanup(close_imaplib, c)
        self.assertIn("STARTTLS", c.capabilities)
        c.starttls(ssl_context=verifying(self.s.ca))
        self.assertNotIn("STARTTLS", c.capabilities)    # asked again over TLS
        c.login(*LOGIN)
        self.assertEqual(c.select("INBOX")[0], "OK")
        c.logout()

    def test_refused_without_trusting_the_certificate(self):
        import imaplib
        with self.assertRaises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL("localhost", self.s.imaps_port,
                              ssl_context=ssl.create_default_context(), timeout=10)

    def test_tls_1_2_and_1_3(self):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = verifying(self.s.ca)
            ctx.minimum_version = ctx.maximum_version = version
            r = TLSRaw("127.0.0.1", self.s.imaps_port, ctx)
            self.addCleanup(r.close)
            self.assertEqual(r.sock.version(), version.name.replace("_", "."))
            r.ok("LOGIN test test")

    def test_tls_1_1_refused(self):
        ctx = trusting_anything()
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ssl.SSLError, ValueError):
            self.skipTest("this Python cannot offer TLS 1.1")
        with socket.create_connection(("127.0.0.1", self.s.imaps_port), timeout=10) as sock:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                ctx.wrap_socket(sock, server_hostname="localhost")


class Protocol(TLSCase):
    """What STARTTLS may and may not do, byte by byte."""

    def setUp(self):
        self.s = self.tls_server()
        self.ctx = verifying(self.s.ca)

    def test_starttls_offered_only_plain_and_before_login(self):
        r = self.raw(self.s, login=None)
        self.assertIn(b"STARTTLS", r.greeting)
        self.assertIn("STARTTLS", caps(r))
        starttls(r, self.ctx)
        self.assertNotIn("STARTTLS", caps(r))
        self.assertBAD(r.cmd("STARTTLS")[1])           # RFC 9051 6.2.1: not twice
        r.ok("LOGIN test test")
        self.assertNotIn("STARTTLS", caps(r))
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))

    def test_starttls_bad_after_login(self):
        r = self.raw(self.s)
        self.assertNotIn("STARTTLS", caps(r))
        self.assertBAD(r.cmd("STARTTLS")[1])
        r.ok("NOOP")                                    # still plain text, still served

    def test_starttls_bad_on_the_imaps_port(self):
        r = TLSRaw("127.0.0.1", self.s.imaps_port, self.ctx)
        self.addCleanup(r.close)
        self.assertNotIn(b"STARTTLS", r.greeting)
        self.assertNotIn("STARTTLS", caps(r))
        self.assertBAD(r.cmd("STARTTLS")[1])
        r.ok("LOGIN test test")

    def test_plaintext_pipelined_after_starttls_is_discarded(self):
        # the plaintext-injection bug class (RFC 9051 6.2.1, CVE-2011-0411 and kin): a
        # man in the middle appends commands to the client's STARTTLS
        r = self.raw(self.s, login=None)
        r.send(b"a STARTTLS\r\nb LOGIN test test\r\nc SELECT INBOX\r\n")
        lines, _ = r.read_until(lambda l: l.startswith(b"a "), 10)
        self.assertTrue(lines[-1].startswith(b"a OK"), lines)
        self.assertEqual(r.buf, b"")                    # nothing answered in plain text
        r.sock = self.ctx.wrap_socket(r.sock, server_hostname="localhost")
        untagged, tagged = r.cmd("NOOP", tag="d")
        self.assertOK(tagged)
        self.assertNotIn(b"EXISTS", untagged)           # no SELECT ran
        self.assertNotIn(b"\r\nb ", b"\r\n" + untagged)
        self.assertNotIn(b"\r\nc ", b"\r\n" + untagged)
        self.assertBAD(r.cmd("SELECT INBOX")[1])        # not logged in: LOGIN never ran

    def test_a_client_that_never_handshakes_is_dropped_and_others_go_on(self):
        s = self.tls_server("--idle-timeout", "2", BASIC)
        stalled = socket.create_connection(("127.0.0.1", s.imaps_port), timeout=10)
        self.addCleanup(stalled.close)
        t0 = time.monotonic()
        r = TLSRaw("127.0.0.1", s.imaps_port, verifying(s.ca))   # not held up by it
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(stalled.recv(100), b"")        # dropped, said nothing
        self.assertLess(time.monotonic() - t0, 5)

    def test_a_stalled_starttls_handshake_is_dropped(self):
        s = self.tls_server("--idle-timeout", "2", BASIC)
        r = self.raw(s, login=None)
        r.ok("STARTTLS")
        data, closed = r.read_to_eof(6)
        self.assertTrue(closed)
        self.assertEqual(data, b"")

    def test_garbage_instead_of_a_handshake_ends_only_that_session(self):
        r = self.raw(self.s, login=None)
        r.ok("STARTTLS")
        r.send(b"x LOGIN test test\r\n")
        self.assertTrue(r.read_to_eof(5)[1])
        self.raw(self.s).ok("NOOP")


class OverTLS(TLSCase):
    """Commands that move many bytes, or wait, behave over TLS as over plain TCP."""

    def setUp(self):
        self.s = self.tls_server()
        self.ctx = verifying(self.s.ca)

    def tls_raw(self):
        r = TLSRaw("127.0.0.1", self.s.imaps_port, self.ctx)
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        return r

    def test_a_large_message_both_ways(self):
        # a literal much larger than the input buffer and a TLS record, and a FETCH that
        # fills the socket: partial TLS writes and decrypted bytes waiting in OpenSSL
        body = b"".join(b"line %07d of a large message, over TLS\r\n" % i for i in range(60000))
        msg = b"Subject: big\r\n\r\n" + body
        for plus in (False, True):
            r = self.tls_raw()
            untagged, tagged = r.append("INBOX", msg, plus=plus)
            self.assertOK(tagged)
            uid = int(re.search(rb"APPENDUID \d+ (\d+)", tagged).group(1))
            r.ok("SELECT INBOX")
            r.send("f UID FETCH %d BODY.PEEK[]\r\n" % uid)
            head = r.readline()
            n = int(re.search(rb"\{(\d+)\}\r\n$", head).group(1))
            self.assertEqual(r.read_exact(n), msg)
            lines, _ = r.read_until(lambda l: l.startswith(b"f "), 30)
            self.assertTrue(lines[-1].startswith(b"f OK"), lines)

    def test_idle_is_woken_over_tls(self):
        a, b = self.tls_raw(), self.tls_raw()
        a.ok("SELECT INBOX")
        a.send("i IDLE\r\n")
        self.assertTrue(a.readline().startswith(b"+"))
        b.append("INBOX", b"Subject: new\r\n\r\nhello\r\n")
        lines, _ = a.read_until(lambda l: l.endswith(b"EXISTS\r\n"), 10)
        a.send("DONE\r\n")
        a.read_until(lambda l: l.startswith(b"i OK"), 10)

    def test_stop_says_bye_over_tls(self):
        r = self.tls_raw()
        self.assertEqual(self.s.stop(), 0)
        data, closed = r.read_to_eof(10)
        self.assertIn(b"* BYE", data)

    def test_tiny_writes(self):
        s = self.tls_server("--fault", "chunk=1", BASIC)
        r = TLSRaw("127.0.0.1", s.imaps_port, verifying(s.ca))
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))


class RequireTLS(TLSCase):
    def setUp(self):
        self.s = self.tls_server("--require-tls", BASIC)
        self.ctx = verifying(self.s.ca)

    def test_plain_port_before_starttls(self):
        r = self.raw(self.s, login=None)
        c = caps(r)
        self.assertIn("LOGINDISABLED", c)
        self.assertIn("STARTTLS", c)
        self.assertFalse([x for x in c if x.startswith("AUTH=")], c)
        tagged = r.cmd("LOGIN test test")[1]
        self.assertNO(tagged)
        self.assertCode(tagged, "PRIVACYREQUIRED")

    def test_authenticate_refused_before_its_prompt(self):
        r = self.raw(self.s, login=None)
        r.send(b"a AUTHENTICATE PLAIN\r\n")
        line = r.read_response_line()
        self.assertFalse(line.startswith(b"+"), line)   # no password is asked for
        self.assertTrue(line.startswith(b"a NO [PRIVACYREQUIRED]"), line)

    def test_after_starttls_login_works(self):
        r = self.raw(self.s, login=None)
        starttls(r, self.ctx)
        c = caps(r)
        self.assertNotIn("LOGINDISABLED", c)
        self.assertIn("AUTH=PLAIN", c)
        r.ok("AUTHENTICATE PLAIN AHRlc3QAdGVzdA==")

    def test_imaps_port_logs_in_at_once(self):
        r = TLSRaw("127.0.0.1", self.s.imaps_port, self.ctx)
        self.addCleanup(r.close)
        self.assertNotIn("LOGINDISABLED", caps(r))
        r.ok("LOGIN test test")

    def test_imaplib_refuses_to_send_the_password(self):
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", self.s.port, timeout=10)
        self.addCleanup(close_imaplib, c)
        with self.assertRaises(imaplib.IMAP4.error):
            c.login(*LOGIN)


@unittest.skipUnless(CURL, "curl is not installed")
class Curl(TLSCase):
    def curl(self, *args):
        return subprocess.run([CURL, "-sS", "--max-time", "20", "-u", "test:test"] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)

    def test_starttls_and_imaps_verifying(self):
        s = self.tls_server()
        subject = imapref.read_mbox(BASIC)[0].subject.encode()
        for url in ("imap://localhost:%d/INBOX;UID=1" % s.port,
                    "imaps://localhost:%d/INBOX;UID=1" % s.imaps_port):
            p = self.curl("--ssl-reqd", "--cacert", s.ca, url)
            self.assertEqual(p.returncode, 0, (url, p.stderr))
            self.assertIn(subject, p.stdout, url)

    def test_refused_without_the_certificate(self):
        s = self.tls_server()
        p = self.curl("--ssl-reqd", "imaps://localhost:%d/INBOX;UID=1" % s.imaps_port)
        self.assertEqual(p.returncode, 60, p.stderr)   # peer certificate cannot be verified


@unittest.skipUnless(OPENSSL, "openssl is not installed")
class OpenSSLClient(TLSCase):
    def test_s_client_starttls_imap(self):
        s = self.tls_server()
        p = subprocess.run([OPENSSL, "s_client", "-starttls", "imap", "-connect",
                            "127.0.0.1:%d" % s.port, "-CAfile", s.ca, "-verify_return_error",
                            "-verify_hostname", "localhost", "-quiet"],
                           input=b"a LOGIN test test\r\nb LOGOUT\r\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"a OK", p.stdout)
        self.assertIn(b"b OK LOGOUT", p.stdout)


@unittest.skipUnless(MBSYNC, "mbsync (isync) is not installed")
class Mbsync(TLSCase):
    def test_imaps_and_starttls_verifying(self):
        s = self.tls_server("--require-tls", BASIC)
        for tls, port in (("IMAPS", s.imaps_port), ("STARTTLS", s.port)):
            d = self.tempdir()
            maildir = os.path.join(d, "mail")
            os.makedirs(maildir)
            rc = os.path.join(d, "mbsyncrc")
            with open(rc, "w") as f:
                f.write(MBSYNCRC.format(port=port, tls=tls, ca=s.ca, maildir=maildir))
            p = subprocess.run([MBSYNC, "-c", rc, "-a"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            self.assertEqual(p.returncode, 0, (tls, p.stdout.decode()))
            cur = os.path.join(maildir, "INBOX", "cur")
            got = len(os.listdir(cur)) + len(os.listdir(os.path.join(maildir, "INBOX", "new")))
            self.assertEqual(got, len(imapref.read_mbox(BASIC)), tls)


class MuttTerminal:
    """mutt in a pseudo-terminal of 24x100, as a person runs it (it reads mail only with a
    terminal); .screen() is what it has drawn so far, its control sequences taken out."""

    def __init__(self, case, home, args):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        env = dict(os.environ, HOME=home, TERM="vt100")
        self.proc = subprocess.Popen([MUTT] + args, stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.fd, self.out = master, b""
        case.addCleanup(self.close)

    def screen(self):
        return re.sub(r"\x1b[\[(][0-9;?]*[A-Za-z]?|[\x00-\x08\x0e-\x1f]", " ",
                      self.out.decode("utf-8", "replace"))

    def wait_for(self, pattern, timeout=30):
        """Read until the screen matches pattern (True), or mutt ends or time runs out."""
        end = time.monotonic() + timeout
        while not re.search(pattern, self.screen()):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            try:
                data = os.read(self.fd, 65536)
            except OSError:                     # EIO: mutt ended, the terminal is gone
                return False
            if not data:
                return False
            self.out += data
        return True

    def exit_status(self, timeout=60):
        """Read to the end (mutt blocks on a full terminal otherwise) and wait for it."""
        self.wait_for(r"(?!x)x", timeout)
        return self.proc.wait(timeout=5)

    def type(self, keys):
        os.write(self.fd, keys)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def logins(trace):
    """{session: (TLS started before it, the command)} for each LOGIN or AUTHENTICATE in a
    --trace transcript."""
    tls, out = set(), {}
    line = r"^imapmem\[(\d+)\] (\*: TLS started.*|C: \S+ (?:LOGIN|AUTHENTICATE)\b.*)$"
    for m in re.finditer(line, trace, re.M | re.I):
        if m.group(2).startswith("*"):
            tls.add(m.group(1))
        else:
            out[m.group(1)] = (m.group(1) in tls, m.group(2))
    return out


@unittest.skipUnless(MUTT, "mutt is not installed")
class Mutt(TLSCase):
    """mutt (a GnuTLS build, as Debian's) with its default ssl_force_tls=yes and every
    check on, trusting the --tls-cert-out file: it reads a message in its terminal and
    saves a copy (Fcc) in batch mode, over IMAPS and over STARTTLS, and refuses a server
    whose certificate is for another host or has expired."""

    def setUp(self):
        self.home = self.tempdir()

    def muttrc(self, ca):
        rc = os.path.join(self.home, "muttrc")
        with open(rc, "w") as f:
            f.write(MUTTRC.format(ca=ca, home=self.home))
        return rc

    def urls(self, s):
        return (("IMAPS", "imaps://localhost:%d/INBOX" % s.imaps_port),
                ("STARTTLS", "imap://localhost:%d/INBOX" % s.port))

    def batch_fcc(self, rc, url, subject):
        """mutt -s in batch mode (no terminal): sends through /bin/true and saves its copy
        to url, which makes it log in and APPEND there."""
        return subprocess.run([MUTT, "-n", "-F", rc, "-s", subject, "-e", "set record=" + url,
                               "nobody@example.invalid"], input=b"Sent by mutt in batch.\n",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                              env=dict(os.environ, HOME=self.home, TERM="dumb"))

    def subjects(self, s):
        """INBOX's subjects, read on the plain port."""
        r = self.raw(s)
        r.ok("EXAMINE INBOX")
        untagged = r.ok("FETCH 1:* BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        return re.findall(rb"Subject: ([^\r\n]*)", untagged)

    def test_its_defaults_force_and_verify_tls(self):
        p = subprocess.run([MUTT, "-n", "-F", self.muttrc("ca.pem"), "-Q", "ssl_force_tls",
                            "-Q", "ssl_starttls", "-Q", "ssl_verify_host", "-Q",
                            "ssl_verify_dates"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30,
                           env=dict(os.environ, HOME=self.home))
        self.assertEqual(p.stdout.decode().split("\n")[:4],
                         ["ssl_force_tls is set", "ssl_starttls=yes", "ssl_verify_host is set",
                          "ssl_verify_dates is set"])

    def test_reads_a_message_over_imaps_and_starttls(self):
        s = self.tls_server("--trace", BASIC)
        rc = self.muttrc(s.ca)
        by_subject = {m.subject: m for m in imapref.read_mbox(BASIC)}
        for how, url in self.urls(s):
            saved = os.path.join(self.home, how + ".mbox")
            t = MuttTerminal(self, self.home, ["-n", "-F", rc, "-f", url, "-e",
                                               'push "<copy-message>%s<enter><exit>"' % saved])
            self.assertEqual(t.exit_status(), 0, (how, t.screen()[-2000:]))
            self.assertTrue(os.path.exists(saved), (how, t.screen()[-2000:]))
            with open(saved, "rb") as f:
                got = f.read()
            subject = re.search(rb"^Subject: (.*)$", got, re.M).group(1).decode()
            want = by_subject[subject].raw.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
            self.assertIn(want, got, how)
        self.assertEqual(sorted(ok for ok, _ in logins(s.stderr()).values()), [True, True],
                         logins(s.stderr()))

    def test_batch_mode_saves_a_copy_over_imaps_and_starttls(self):
        s = self.tls_server("--trace", BASIC)
        rc = self.muttrc(s.ca)
        for how, url in self.urls(s):
            p = self.batch_fcc(rc, url, "mutt over " + how)
            self.assertEqual(p.returncode, 0, p.stdout)
            self.assertNotIn(b"failed", p.stdout)
        self.assertEqual(self.subjects(s)[-2:], [b"mutt over IMAPS", b"mutt over STARTTLS"])
        self.assertEqual([ok for ok, _ in logins(s.stderr()).values()][:2], [True, True])

    def test_refused_when_it_does_not_trust_the_ca(self):
        s = self.tls_server("--trace", BASIC)
        rc = self.muttrc(os.path.join(self.home, "nothing.pem"))
        with open(os.path.join(self.home, "nothing.pem"), "w"):
            pass
        for how, url in self.urls(s):
            p = self.batch_fcc(rc, url, "untrusted " + how)
            self.assertIn(b"Untrusted server certificate", p.stdout, how)
        self.assertEqual(logins(s.stderr()), {})
        self.assertNotIn(b"untrusted", b" ".join(self.subjects(s)))

    def check_refused(self, kind, warning):
        s = self.tls_server("--trace", "--tls-fault", kind, BASIC)
        rc = self.muttrc(s.ca)
        for how, url in self.urls(s):
            # batch mode cannot ask: it refuses outright
            p = self.batch_fcc(rc, url, "%s %s" % (kind, how))
            self.assertIn(b"Untrusted server certificate", p.stdout, (kind, how))
            # in its terminal it says what is wrong and asks; rejected, it logs in nowhere
            t = MuttTerminal(self, self.home, ["-n", "-F", rc, "-f", url])
            self.assertTrue(t.wait_for(r"\(r\)eject"), (kind, how, t.screen()[-2000:]))
            self.assertRegex(t.screen(), warning)
            t.type(b"r")
            self.assertTrue(t.wait_for(r"Closing connection|connection failed|Could not"),
                            (kind, how, t.screen()[-2000:]))
            t.close()
        self.assertEqual(logins(s.stderr()), {})
        self.assertNotIn(kind.encode(), b" ".join(self.subjects(s)))

    def test_refuses_a_certificate_for_another_host(self):
        self.check_refused("wrong-host", r"WARNING:\s+Server\s+hostname\s+does\s+not\s+match")

    def test_refuses_an_expired_certificate(self):
        self.check_refused("expired", r"WARNING:\s+Server\s+certificate\s+has\s+expired")


def self_signed_cert(cls, key_args):
    """A self-signed certificate for localhost made with openssl (key_args: the key type)
    in a folder of the test class's own: cls.dir, cls.cert, cls.key. Skips without openssl."""
    if not OPENSSL:
        raise unittest.SkipTest("openssl is not installed")
    import tempfile
    cls.dir = tempfile.mkdtemp(prefix="imapmem-test-")
    cls.addClassCleanup(shutil.rmtree, cls.dir, True)
    cls.cert, cls.key = os.path.join(cls.dir, "cert.pem"), os.path.join(cls.dir, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509"] + key_args +
                   ["-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", cls.key,
                    "-out", cls.cert], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


class GivenCertificate(TLSCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        self_signed_cert(cls, ["-newkey", "rsa:2048"])

    def test_an_rsa_certificate_and_rfc_9051_cipher(self):
        s = self.tls_server("--tls-cert", self.cert, "--tls-key", self.key, BASIC)
        self.assertEqual(open(s.ca).read(), open(self.cert).read())
        ctx = verifying(s.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")  # RFC 9051 11.1's mandatory suite
        r = TLSRaw("127.0.0.1", s.imaps_port, ctx)
        self.addCleanup(r.close)
        self.assertEqual(r.sock.cipher()[0], "ECDHE-RSA-AES128-GCM-SHA256")
        r.ok("LOGIN test test")

    def test_bad_pairs_exit_2(self):
        other = os.path.join(self.tempdir(), "other.pem")
        subprocess.run([OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", other], check=True, timeout=60)
        for args, said in ((["--tls-cert", self.cert, "--tls-key", other], "do not go together"),
                           (["--tls-cert", self.key, "--tls-key", self.key], "not a PEM"),
                           (["--tls-cert", self.cert], "go together"),
                           (["--tls-cert", self.cert, "--tls-key", "/nonexistent"], "nonexistent"),
                           (["--tls-cert", self.cert, "--tls-key", self.key, "--tls-fault",
                             "expired"], "generated")):
            p = run(["-p", "0"] + args + [BASIC], timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertNotIn(b"listening", p.stdout)
            self.assertIn(said, p.stderr.decode(), args)


class PipeTLS:
    """A TLS client over a process's stdin and stdout (ssl.MemoryBIO), as a mail client
    speaks TLS through its tunnel command."""

    def __init__(self, proc, ctx, timeout=10):
        self.proc, self.timeout, self.buf = proc, timeout, b""
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.io(self.tls.do_handshake)

    def io(self, fn, *args):
        while True:
            try:
                result, done = fn(*args), True
            except ssl.SSLWantReadError:
                done = False
            data = self.outgoing.read()
            if data:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            if done:
                return result
            fd = self.proc.stdout.fileno()
            if not select.select([fd], [], [], self.timeout)[0]:
                raise TimeoutError("nothing from imapmem in %d s" % self.timeout)
            data = os.read(fd, 65536)
            if not data:
                raise EOFError("imapmem closed its stdout")
            self.incoming.write(data)

    def send(self, data):
        self.io(self.tls.write, data)

    def readline(self):
        while b"\r\n" not in self.buf:
            self.buf += self.io(self.tls.read, 65536)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def command(self, tag, text):
        """Send one command; its untagged lines and its tagged line."""
        self.send(b"%s %s\r\n" % (tag, text))
        lines = []
        while True:
            line = self.readline()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)


class StdioTLS(TLSCase):
    """--stdio-tls: the --stdio session (PREAUTH, as a tunnel command runs it) in TLS from
    the first byte (RFC 8314), over a pipe pair or a socket, with the certificate of
    --tls-cert or the generated CA, which --tls-cert-out writes before the handshake."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        self_signed_cert(cls, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])

    def check_session(self, c):
        greeting = c.readline()
        self.assertTrue(greeting.startswith(b"* PREAUTH [CAPABILITY "), greeting)
        self.assertNotIn(b"STARTTLS", greeting)          # TLS already
        untagged, tagged = c.command(b"a", b"SELECT INBOX")
        self.assertTrue(tagged.startswith(b"a OK"), tagged)
        self.assertIn(b"* %d EXISTS\r\n" % len(imapref.read_mbox(BASIC)), untagged)
        untagged, tagged = c.command(b"b", b"LOGOUT")
        self.assertTrue(tagged.startswith(b"b OK"), tagged)

    def test_over_pipes_with_a_given_certificate(self):
        p = self.spawn("--stdio-tls", "--tls-cert", self.cert, "--tls-key", self.key, BASIC)
        self.check_session(PipeTLS(p, verifying(self.cert)))
        self.assertEqual(p.wait(10), 0, p.err())

    def test_over_a_socket_with_the_generated_ca(self):
        ca = os.path.join(self.tempdir(), "ca.pem")
        mine, theirs = socket.socketpair()
        self.addCleanup(mine.close)
        p = subprocess.Popen([BIN, "--stdio-tls", "--tls-cert-out", ca, BASIC], stdin=theirs,
                             stdout=theirs, stderr=subprocess.PIPE)
        theirs.close()
        mine.settimeout(10)
        t = verifying_wait(ca).wrap_socket(mine, server_hostname="localhost")
        self.addCleanup(t.close)
        r = Raw.__new__(Raw)
        r.sock, r.buf, r.n = t, b"", 0
        self.assertTrue(r.readline().startswith(b"* PREAUTH"))
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))
        r.ok("LOGOUT")
        _, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        self.assertNoSanitizerReport(err.decode("utf-8", "replace"))

    def test_a_fault_is_refused_over_pipes(self):
        ca = os.path.join(self.tempdir(), "ca.pem")
        p = self.spawn("--stdio-tls", "--tls-fault", "wrong-host", "--tls-cert-out", ca, BASIC)
        with self.assertRaises(ssl.SSLCertVerificationError):
            PipeTLS(p, verifying_wait(ca))

    @unittest.skipUnless(MBSYNC, "mbsync (isync) is not installed")
    def test_mbsync_tunnel_with_tls(self):
        # isync speaks TLS through its Tunnel when SSLType is IMAPS
        d = self.tempdir()
        maildir = os.path.join(d, "mail")
        os.makedirs(maildir)
        rc = os.path.join(d, "mbsyncrc")
        tunnel = "%s --stdio-tls --tls-cert %s --tls-key %s %s" % (BIN, self.cert, self.key, BASIC)
        with open(rc, "w") as f:
            f.write(MBSYNCRC.format(port=0, tls="IMAPS", ca=self.cert, maildir=maildir)
                    .replace("Port 0\n", 'Tunnel "%s"\n' % tunnel))
        p = subprocess.run([MBSYNC, "-c", rc, "-a"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        got = sum(len(os.listdir(os.path.join(maildir, "INBOX", x))) for x in ("cur", "new"))
        self.assertEqual(got, len(imapref.read_mbox(BASIC)))

    def test_options_that_do_not_go_with_it_exit_2(self):
        for args, said in ((["--stdio-tls", "--imaps-port", "0"], "--stdio-tls"),
                           (["--stdio-tls", "--require-tls"], "--stdio-tls"),
                           (["--stdio", "--tls-cert-out", "x.pem"], "--stdio-tls")):
            p = run(args + [BASIC], timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(said, p.stderr.decode(), args)


class CertificateFaults(TLSCase):
    """--tls-fault KIND: a verifying client refuses each; one that checks nothing takes
    all but "handshake", which fails for everyone."""

    def check(self, kind, verified_error):
        s = self.tls_server("--tls-fault", kind, BASIC)
        for port, plain in ((s.imaps_port, False), (s.port, True)):
            for ctx, refused in ((verifying(s.ca), True),
                                 (trusting_anything(), kind == "handshake")):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                self.addCleanup(sock.close)
                if plain:
                    r = Raw.__new__(Raw)
                    r.sock, r.buf, r.n = sock, b"", 0
                    r.readline()
                    r.ok("STARTTLS")
                if refused:
                    with self.assertRaises(ssl.SSLError, msg=(kind, port)) as e:
                        ctx.wrap_socket(sock, server_hostname="localhost")
                    if verified_error and ctx.verify_mode == ssl.CERT_REQUIRED:
                        self.assertIn(verified_error, str(e.exception), kind)
                else:
                    t = ctx.wrap_socket(sock, server_hostname="localhost")
                    self.addCleanup(t.close)

    def test_expired(self):
        self.check("expired", "expired")

    def test_not_yet_valid(self):
        self.check("not-yet-valid", "not yet valid")

    def test_wrong_host(self):
        self.check("wrong-host", "mismatch")

    def test_self_signed(self):
        self.check("self-signed", "self")

    def test_handshake(self):
        self.check("handshake", "")

    @unittest.skipUnless(CURL, "curl is not installed")
    def test_curl_refuses_each_and_takes_it_with_insecure(self):
        for kind in ("expired", "not-yet-valid", "wrong-host", "self-signed"):
            s = self.tls_server("--tls-fault", kind, BASIC)
            url = "imaps://localhost:%d/INBOX;UID=1" % s.imaps_port
            base = [CURL, "-sS", "--max-time", "20", "-u", "test:test", url]
            p = subprocess.run(base + ["--cacert", s.ca], capture_output=True, timeout=30)
            self.assertNotEqual(p.returncode, 0, kind)
            p = subprocess.run(base + ["--insecure"], capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, (kind, p.stderr))

    def test_unknown_kind_exits_2(self):
        p = run(["-p", "0", "--tls-fault", "stale", BASIC], timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"not-yet-valid", p.stderr)   # the message lists the kinds


if __name__ == "__main__":
    unittest.main()
