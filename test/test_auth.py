"""Wire tests of authentication: LOGIN and AUTHENTICATE with the SASL mechanisms imapmem
offers, organised by RFC, with the RFCs' own examples.

  RFC 3501 6.2.2, 6.2.3, 7.2.1  AUTHENTICATE, LOGIN, LOGINDISABLED (--capability +LOGINDISABLED)
  RFC 4959                      SASL-IR for every mechanism that has an initial response
  RFC 4616                      PLAIN, with the authorization identity (--admin)
  draft-murchison-sasl-login    LOGIN
  RFC 2195                      CRAM-MD5
  RFC 5802, RFC 7677            SCRAM-SHA-1, SCRAM-SHA-256 (no channel binding)
  RFC 7628                      OAUTHBEARER (--oauth-token), and Google's XOAUTH2
  RFC 5530                      the response codes of failures
  README "Fault injection"      AUTH-UNAVAILABLE and AUTH-EXPIRED fail one login

The SCRAM client here is the test's own (hashlib's PBKDF2 and HMAC); it checks the
server's signature v=, and is itself checked against the RFCs' examples first. imaplib's
authenticate() and login_cram_md5() and curl are the real clients.
"""
import base64
import hashlib
import hmac
import imaplib
import json
import os
import shutil
import subprocess
import unittest

from wire import BIN, ServerCase, capabilities, fixture, has_tls, responses, status_parts

BASIC = fixture("basic.mbox")          # test's INBOX: 6 messages; the others' are empty
USERS = ("-u", "test:test", "-u", "alice:wonder,land=", "-u", "root:rootpw",
         "--admin", "root", "--oauth-token", "test:tok-test", "--oauth-token", "alice:tok:alice")
CANCEL = object()


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def exchange(r, mech, respond=None, ir=None):
    """AUTHENTICATE mech [ir] on r. Each "+" challenge, decoded, goes to respond(), whose
    answer is sent in base64 (CANCEL sends "*"). Returns (challenges, tagged line)."""
    tag = r.tag()
    arg = "" if ir is None else " " + (b64(ir) if ir else "=")
    r.send("%s AUTHENTICATE %s%s\r\n" % (tag, mech, arg))
    challenges = []
    while True:
        line = r.readline()
        if line.startswith(tag.encode() + b" "):
            return challenges, line[len(tag) + 1:-2]
        assert line.startswith(b"+"), line
        ch = base64.b64decode(line[1:].strip(), validate=True)
        challenges.append(ch)
        out = respond(ch) if respond else b""
        r.send(("*" if out is CANCEL else b64(out)) + "\r\n")


def saslname(name):
    return name.replace("=", "=3D").replace(",", "=2C")


class Scram:
    """A SCRAM client (RFC 5802 3, 7): respond() answers the server's challenges in turn and
    checks the server's signature; self.verified says it was right."""

    def __init__(self, hash_name, user, password, authzid=None, nonce=None, gs2=None):
        self.h = hash_name
        self.password = password.encode()
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.gs2 = gs2 or "n,%s," % ("a=" + saslname(authzid) if authzid else "")
        self.first_bare = "n=%s,r=%s" % (saslname(user), self.nonce)
        self.first = (self.gs2 + self.first_bare).encode()
        self.server_first = None
        self.verified = False
        self.steps = 0

    def hmac(self, key, msg):
        return hmac.new(key, msg, self.h).digest()

    def final(self, server_first):
        self.server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        assert attrs["r"].startswith(self.nonce), attrs
        self.iterations = int(attrs["i"])
        self.salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac(self.h, self.password, self.salt, self.iterations)
        client_key = self.hmac(salted, b"Client Key")
        stored_key = hashlib.new(self.h, client_key).digest()
        without_proof = "c=%s,r=%s" % (b64(self.gs2), attrs["r"])
        auth_message = ",".join((self.first_bare, self.server_first, without_proof)).encode()
        proof = bytes(a ^ b for a, b in zip(client_key, self.hmac(stored_key, auth_message)))
        self.expected_v = b64(self.hmac(self.hmac(salted, b"Server Key"), auth_message))
        return (without_proof + ",p=" + b64(proof)).encode()

    def respond(self, challenge):
        self.steps += 1
        if self.server_first is None and not challenge:
            return self.first                  # no SASL-IR: the empty challenge first
        if self.server_first is None:
            return self.final(challenge)
        assert challenge.decode() == "v=" + self.expected_v, (challenge, self.expected_v)
        self.verified = True
        return b""


def cram_md5(user, password):
    return lambda ch: ("%s %s" % (user, hmac.new(password.encode(), ch, "md5").hexdigest())).encode()


def oauthbearer(token, user=None, port=143):
    return ("n,%s,\x01host=127.0.0.1\x01port=%d\x01auth=Bearer %s\x01\x01"
            % ("a=" + saslname(user) if user else "", port, token)).encode()


def xoauth2(user, token):
    return ("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()


class Base(ServerCase):
    ARGS = USERS + (BASIC,)
    SHARED = True

    def fresh(self):
        return self.raw(login=None)

    def inbox_count(self, r):
        return responses(r.ok("SELECT INBOX"), "EXISTS")[0][0]

    def assertLoggedInAs(self, r, tagged, count):
        """OK with the capabilities (RFC 9051 6.2.2), and the user's own INBOX."""
        self.assertOK(tagged)
        self.assertEqual(status_parts(tagged)[1][0], "CAPABILITY", tagged)
        self.assertEqual(self.inbox_count(r), count)

    def assertFailed(self, r, tagged, code):
        self.assertNO(tagged)
        self.assertCode(tagged, code)
        self.assertBAD(r.cmd("SELECT INBOX")[1], "still not authenticated")


# ========================================================================================
# RFC 3501 6.2.2, 7.2.1: the mechanisms are advertised as AUTH=, each can be switched off

class Advertised(Base):
    ALL = {"AUTH=PLAIN", "AUTH=LOGIN", "AUTH=CRAM-MD5", "AUTH=SCRAM-SHA-1",
           "AUTH=SCRAM-SHA-256", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"}

    def test_every_mechanism_is_advertised(self):
        caps = capabilities(self.fresh().ok("CAPABILITY"))
        self.assertTrue(self.ALL <= caps, self.ALL - caps)
        self.assertIn("SASL-IR", caps)
        self.assertNotIn("LOGINDISABLED", caps)

    def test_unknown_mechanism(self):
        r = self.fresh()
        t = r.cmd("AUTHENTICATE DIGEST-MD5")[1]          # RFC 3501 6.2.2: NO
        self.assertNO(t)
        self.assertCode(t, "CANNOT")
        r.ok("LOGIN test test")


class SwitchedOff(ServerCase):
    def test_each_mechanism_can_be_switched_off(self):
        for mech, respond in (("PLAIN", lambda _: b"\0test\0test"),
                              ("LOGIN", lambda ch: b"test"),
                              ("CRAM-MD5", cram_md5("test", "test")),
                              ("SCRAM-SHA-1", Scram("sha1", "test", "test").respond),
                              ("SCRAM-SHA-256", Scram("sha256", "test", "test").respond),
                              ("OAUTHBEARER", lambda _: oauthbearer("tok-test")),
                              ("XOAUTH2", lambda _: xoauth2("test", "tok-test"))):
            s = self.start(*USERS, "--capability", "-AUTH=" + mech)
            r = self.raw(s, login=None)
            caps = capabilities(r.ok("CAPABILITY"))
            self.assertNotIn("AUTH=" + mech, caps)
            self.assertEqual(len([c for c in caps if c.startswith("AUTH=")]), 6, caps)
            ch, t = exchange(r, mech, respond)
            self.assertEqual(ch, [], "refused before any challenge: " + mech)
            self.assertNO(t, mech)
            r.ok("LOGIN test test")
            s.stop()

    def test_switched_on_again_through_the_option(self):
        s = self.start(*USERS, "--capability", "-AUTH=CRAM-MD5", "--capability", "+AUTH=CRAM-MD5")
        r = self.raw(s, login=None)
        self.assertIn("AUTH=CRAM-MD5", capabilities(r.ok("CAPABILITY")))
        self.assertOK(exchange(r, "CRAM-MD5", cram_md5("test", "test"))[1])


# ========================================================================================
# RFC 4616 PLAIN: [authzid] NUL authcid NUL passwd; who may act as whom (RFC 5530 3)

class Plain(Base):
    def test_rfc4616_example_shape(self):
        # RFC 4616 4: "\0tim\0tanstaaftanstaaf": here with this server's users
        r = self.fresh()
        ch, t = exchange(r, "PLAIN", lambda _: b"\0alice\0wonder,land=")
        self.assertEqual(ch, [b""])
        self.assertLoggedInAs(r, t, 0)

    def test_authzid_is_oneself(self):
        r = self.fresh()
        self.assertLoggedInAs(r, exchange(r, "PLAIN", ir=b"test\0test\0test")[1], 6)

    def test_acting_as_another_needs_an_administrator(self):
        r = self.fresh()
        t = exchange(r, "PLAIN", ir=b"test\0alice\0wonder,land=")[1]
        self.assertFailed(r, t, "AUTHORIZATIONFAILED")

    def test_names_are_case_sensitive(self):
        r = self.fresh()
        self.assertFailed(r, exchange(r, "PLAIN", ir=b"TEST\0test\0test")[1],
                          "AUTHORIZATIONFAILED")

    def test_administrator_acts_as_another(self):
        r = self.fresh()
        self.assertLoggedInAs(r, exchange(r, "PLAIN", ir=b"test\0root\0rootpw")[1], 6)

    def test_administrator_acting_as_nobody(self):
        r = self.fresh()
        t = exchange(r, "PLAIN", ir=b"nobody\0root\0rootpw")[1]
        self.assertFailed(r, t, "AUTHORIZATIONFAILED")

    def test_administrator_with_a_wrong_password(self):
        r = self.fresh()
        t = exchange(r, "PLAIN", ir=b"test\0root\0wrong")[1]
        self.assertFailed(r, t, "AUTHENTICATIONFAILED")

    def test_malformed(self):
        r = self.fresh()
        self.assertFailed(r, exchange(r, "PLAIN", ir=b"test test")[1], "AUTHENTICATIONFAILED")

    def test_imaplib(self):
        c = self.srv.imap(login=None)
        self.assertEqual(c.authenticate("PLAIN", lambda _: b"\0alice\0wonder,land=")[0], "OK")
        self.assertEqual(c.select("INBOX"), ("OK", [b"0"]))
        c.logout()


# ========================================================================================
# LOGIN (draft-murchison-sasl-login): "Username:", "Password:"

class Login(Base):
    def test_prompts(self):
        r = self.fresh()
        answers = {b"Username:": b"alice", b"Password:": b"wonder,land="}
        ch, t = exchange(r, "LOGIN", lambda c: answers[c])
        self.assertEqual(ch, [b"Username:", b"Password:"])
        self.assertLoggedInAs(r, t, 0)

    def test_user_name_as_initial_response(self):
        r = self.fresh()
        ch, t = exchange(r, "LOGIN", lambda c: b"test", ir=b"test")
        self.assertEqual(ch, [b"Password:"])
        self.assertLoggedInAs(r, t, 6)

    def test_wrong_password(self):
        r = self.fresh()
        answers = {b"Username:": b"test", b"Password:": b"nope"}
        self.assertFailed(r, exchange(r, "LOGIN", lambda c: answers[c])[1], "AUTHENTICATIONFAILED")

    def test_cancel(self):
        r = self.fresh()
        ch, t = exchange(r, "LOGIN", lambda c: CANCEL if c == b"Password:" else b"test")
        self.assertBAD(t)                 # RFC 3501 6.2.2: "*" cancels with BAD
        r.ok("LOGIN test test")


# ========================================================================================
# RFC 2195 CRAM-MD5

class CramMD5(Base):
    def test_challenge_is_a_unique_message_id(self):
        r = self.fresh()
        first = exchange(r, "CRAM-MD5", cram_md5("test", "test"))
        second = exchange(self.fresh(), "CRAM-MD5", cram_md5("test", "test"))
        for ch, t in (first, second):
            self.assertOK(t)
            self.assertRegex(ch[0], rb"^<[0-9]+\.[0-9]+@[^>]+>$")   # RFC 2195 2: msg-id form
        self.assertNotEqual(first[0], second[0])
        self.assertEqual(self.inbox_count(r), 6)

    def test_rfc2195_response_shape(self):
        # RFC 2195 2: "tim b913a602c7eda7a495b4e6e7334d3890" (the digest in lower-case hex)
        ch = b"<1896.697170952@postoffice.reston.mci.net>"
        self.assertEqual(cram_md5("tim", "tanstaaftanstaaf")(ch),
                         b"tim b913a602c7eda7a495b4e6e7334d3890")

    def test_wrong_password_and_unknown_user(self):
        for user, pw in (("test", "wrong"), ("nobody", "test")):
            r = self.fresh()
            self.assertFailed(r, exchange(r, "CRAM-MD5", cram_md5(user, pw))[1],
                              "AUTHENTICATIONFAILED")

    def test_no_initial_response(self):
        # RFC 4959 3: the mechanism starts with the server's challenge
        r = self.fresh()
        self.assertBAD(exchange(r, "CRAM-MD5", ir=b"test abc")[1])

    def test_imaplib_login_cram_md5(self):
        c = self.srv.imap(login=None)
        self.assertEqual(c.login_cram_md5("alice", "wonder,land=")[0], "OK")
        self.assertEqual(c.select("INBOX"), ("OK", [b"0"]))
        c.logout()


# ========================================================================================
# RFC 5802 SCRAM-SHA-1 and RFC 7677 SCRAM-SHA-256, without channel binding

class ScramClientMatchesTheRFCs(unittest.TestCase):
    """The test's own client reproduces the RFCs' examples, so that it can judge the server."""

    def check(self, hash_name, nonce, server_first, final, verifier):
        c = Scram(hash_name, "user", "pencil", nonce=nonce)
        self.assertEqual(c.first, b"n,,n=user,r=" + nonce.encode())
        self.assertEqual(c.final(server_first.encode()).decode(), final)
        self.assertEqual("v=" + c.expected_v, verifier)

    def test_rfc5802_5(self):
        self.check("sha1", "fyko+d2lbbFgONRv9qkxdawL",
                   "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                   "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                   "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")

    def test_rfc7677_3(self):
        self.check("sha256", "rOprNGfwEbeRWgbNEkqO",
                   "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                   "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                   "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                   "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                   "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


class ScramSha1(Base):
    MECH, HASH = "SCRAM-SHA-1", "sha1"

    def login(self, user, pw, ir=False, **kw):
        r = self.fresh()
        c = Scram(self.HASH, user, pw, **kw)
        ch, t = exchange(r, self.MECH, c.respond, ir=c.first if ir else None)
        return r, c, ch, t

    def test_exchange_proves_the_server(self):
        r, c, ch, t = self.login("test", "test")
        self.assertLoggedInAs(r, t, 6)
        self.assertTrue(c.verified, "the server sent v= with its signature")
        self.assertEqual(len(ch), 3)                 # "", server-first, server-final
        self.assertGreaterEqual(c.iterations, 4096)  # RFC 5802 5.1, RFC 7677 4
        self.assertGreaterEqual(len(c.salt), 16)
        attrs = dict(kv.split("=", 1) for kv in c.server_first.split(","))
        self.assertGreater(len(attrs["r"]), len(c.nonce), "the server adds its own nonce")

    def test_initial_response(self):
        r, c, ch, t = self.login("alice", "wonder,land=", ir=True)   # RFC 4959
        self.assertLoggedInAs(r, t, 0)
        self.assertEqual(len(ch), 2)
        self.assertTrue(c.verified)

    def test_salt_stays_nonce_changes(self):
        a, b = self.login("test", "test")[1], self.login("test", "test")[1]
        self.assertEqual(a.salt, b.salt)
        self.assertNotEqual(a.server_first, b.server_first)

    def test_wrong_password(self):
        r, c, ch, t = self.login("test", "wrong")
        self.assertFailed(r, t, "AUTHENTICATIONFAILED")
        self.assertFalse(c.verified, "no v= for a wrong proof")

    def test_unknown_user_gets_a_challenge_too(self):
        # RFC 5802 9: the exchange must not tell whether the user exists
        r, c, ch, t = self.login("nobody", "test")
        self.assertEqual(len(ch), 2)
        self.assertFailed(r, t, "AUTHENTICATIONFAILED")

    def test_channel_binding_refused(self):
        # no TLS, no channel binding: "p=" is refused, "y,," (client could) is fine
        r, c, ch, t = self.login("test", "test", gs2="p=tls-unique,,")
        self.assertFailed(r, t, "AUTHENTICATIONFAILED")
        r, c, ch, t = self.login("test", "test", gs2="y,,")
        self.assertLoggedInAs(r, t, 6)

    def test_wrong_channel_binding_or_nonce(self):
        r = self.fresh()
        c = Scram(self.HASH, "test", "test")
        tamper = lambda ch: c.respond(ch).replace(b"c=biws", b"c=eSws") if ch.startswith(b"r=") \
            else c.respond(ch)
        self.assertFailed(r, exchange(r, self.MECH, tamper)[1], "AUTHENTICATIONFAILED")
        r = self.fresh()
        c = Scram(self.HASH, "test", "test")

        def other_nonce(ch):
            out = c.respond(ch)
            other = b"Y" if c.nonce.startswith("X") else b"X"   # never the same nonce
            return out.replace(b",r=" + c.nonce.encode(), b",r=" + other + c.nonce.encode()[1:]) \
                if ch.startswith(b"r=") else out
        self.assertFailed(r, exchange(r, self.MECH, other_nonce)[1], "AUTHENTICATIONFAILED")

    def test_authorization_identity(self):
        r, c, ch, t = self.login("root", "rootpw", authzid="test")
        self.assertLoggedInAs(r, t, 6)
        r, c, ch, t = self.login("alice", "wonder,land=", authzid="test")
        self.assertFailed(r, t, "AUTHORIZATIONFAILED")

    def test_garbage(self):
        for first in (b"n,,x=test", b"n,,n=test", b"q,,n=test,r=abc", b"n,,m=ext,n=test,r=a",
                      b"n,,n=te=4Cst,r=abc", b"", b"\0"):
            r = self.fresh()
            self.assertFailed(r, exchange(r, self.MECH, lambda ch: first)[1],
                              "AUTHENTICATIONFAILED")

    def test_cancel_after_server_first(self):
        r = self.fresh()
        c = Scram(self.HASH, "test", "test")
        t = exchange(r, self.MECH, lambda ch: CANCEL if ch else c.respond(ch))[1]
        self.assertBAD(t)
        r.ok("LOGIN test test")

    def test_imaplib(self):
        c = self.srv.imap(login=None)
        client = Scram(self.HASH, "alice", "wonder,land=")
        self.assertEqual(c.authenticate(self.MECH, client.respond)[0], "OK")
        self.assertTrue(client.verified)
        self.assertEqual(c.select("INBOX"), ("OK", [b"0"]))
        c.logout()


class ScramSha256(ScramSha1):
    MECH, HASH = "SCRAM-SHA-256", "sha256"


# ========================================================================================
# RFC 7628 OAUTHBEARER and XOAUTH2, with --oauth-token

class OAuth(Base):
    def test_oauthbearer_initial_response(self):
        r = self.fresh()
        self.assertLoggedInAs(r, exchange(r, "OAUTHBEARER", ir=oauthbearer("tok-test"))[1], 6)

    def test_oauthbearer_with_authzid_and_without_sasl_ir(self):
        r = self.fresh()
        ch, t = exchange(r, "OAUTHBEARER", lambda _: oauthbearer("tok:alice", "alice"))
        self.assertEqual(ch, [b""])
        self.assertLoggedInAs(r, t, 0)

    def test_oauthbearer_acting_as_another(self):
        r = self.fresh()
        t = exchange(r, "OAUTHBEARER", ir=oauthbearer("tok:alice", "test"))[1]
        self.assertFailed(r, t, "AUTHORIZATIONFAILED")

    def json_failure(self, mech, ir, dummy):
        r = self.fresh()
        ch, t = exchange(r, mech, lambda _: dummy, ir=ir)
        self.assertEqual(len(ch), 1, ch)
        err = json.loads(ch[0])
        self.assertEqual(list(err)[0], "status", "RFC 7628 3.2.2: status first")
        self.assertFailed(r, t, "AUTHENTICATIONFAILED")
        return err

    def test_rfc7628_4_3_failed_exchange(self):
        # RFC 7628 4.3, byte for byte: the client's empty Authorization asks for the scope
        ir = base64.b64decode("bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29t"
                              "AXBvcnQ9MTQzAWF1dGg9AQE=")
        self.assertEqual(ir, b"n,a=user@example.com,\x01host=server.example.com\x01port=143"
                             b"\x01auth=\x01\x01")
        err = self.json_failure("OAUTHBEARER", ir, b"\x01")     # "AQ==" as in the RFC
        self.assertEqual(err["status"], "invalid_token")
        self.assertIn("scope", err)

    def test_oauthbearer_wrong_token(self):
        self.json_failure("OAUTHBEARER", oauthbearer("tok-nope", "test"), b"\x01")
        self.json_failure("OAUTHBEARER", oauthbearer("tok-nope"), b"\x01")

    def test_rfc7628_4_3_cancel(self):
        # RFC 7628 4.3: the same exchange cancelled with "*"
        r = self.fresh()
        ch, t = exchange(r, "OAUTHBEARER", lambda _: CANCEL, ir=oauthbearer("", "test"))
        self.assertEqual(len(ch), 1)
        self.assertBAD(t)
        r.ok("LOGIN test test")

    def test_oauthbearer_malformed(self):
        for ir in (b"auth=Bearer tok-test\x01\x01", b"p=tls-unique,,\x01auth=Bearer tok-test\x01\x01"):
            r = self.fresh()
            self.assertFailed(r, exchange(r, "OAUTHBEARER", ir=ir)[1], "AUTHENTICATIONFAILED")

    def test_xoauth2(self):
        r = self.fresh()
        self.assertLoggedInAs(r, exchange(r, "XOAUTH2", ir=xoauth2("test", "tok-test"))[1], 6)
        r = self.fresh()
        ch, t = exchange(r, "XOAUTH2", lambda _: xoauth2("alice", "tok:alice"))
        self.assertLoggedInAs(r, t, 0)

    def test_xoauth2_failure(self):
        err = self.json_failure("XOAUTH2", xoauth2("alice", "tok-test"), b"")
        self.assertEqual(err, {"status": "401", "schemes": "bearer", "scope": "mail"})  # Dovecot's
        self.assertEqual(list(err)[0], "status")
        self.json_failure("XOAUTH2", xoauth2("root", "anything"), b"")

    def test_password_is_no_token(self):
        self.json_failure("OAUTHBEARER", oauthbearer("test", "test"), b"\x01")


# ========================================================================================
# RFC 3501 6.2.3, 7.2.1: LOGINDISABLED, switched on

class LoginDisabled(ServerCase):
    ARGS = USERS + ("--capability", "+LOGINDISABLED", BASIC)
    SHARED = True

    def test_advertised_and_plain_text_mechanisms_hidden(self):
        caps = capabilities(self.raw(login=None).ok("CAPABILITY"))
        self.assertIn("LOGINDISABLED", caps)
        self.assertNotIn("AUTH=PLAIN", caps)
        self.assertNotIn("AUTH=LOGIN", caps)
        for mech in ("CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "OAUTHBEARER", "XOAUTH2"):
            self.assertIn("AUTH=" + mech, caps)

    def test_login_refused_even_with_the_right_password(self):
        r = self.raw(login=None)
        t = r.cmd("LOGIN test test")[1]
        self.assertNO(t)
        self.assertCode(t, "PRIVACYREQUIRED")
        self.assertBAD(r.cmd("SELECT INBOX")[1])

    def test_plain_and_login_refused_before_any_challenge(self):
        for mech, ir in (("PLAIN", b"\0test\0test"), ("PLAIN", None), ("LOGIN", None)):
            r = self.raw(login=None)
            ch, t = exchange(r, mech, lambda _: b"\0test\0test", ir=ir)
            self.assertEqual(ch, [])
            self.assertNO(t)
            self.assertCode(t, "PRIVACYREQUIRED")

    def test_challenge_response_mechanisms_still_work(self):
        r = self.raw(login=None)
        self.assertOK(exchange(r, "CRAM-MD5", cram_md5("test", "test"))[1])
        r = self.raw(login=None)
        c = Scram("sha256", "test", "test")
        self.assertOK(exchange(r, "SCRAM-SHA-256", c.respond)[1])
        self.assertTrue(c.verified)
        r = self.raw(login=None)
        self.assertOK(exchange(r, "OAUTHBEARER", ir=oauthbearer("tok-test"))[1])

    def test_imaplib_login_fails(self):
        c = self.srv.imap(login=None)
        with self.assertRaises(imaplib.IMAP4.error):
            c.login("test", "test")


# ========================================================================================
# RFC 4959 SASL-IR switched off: an initial response is BAD, the exchange still works

class NoSaslIR(ServerCase):
    ARGS = USERS + ("--capability", "-SASL-IR", BASIC)
    SHARED = True

    def test_initial_response_refused(self):
        r = self.raw(login=None)
        self.assertBAD(exchange(r, "SCRAM-SHA-256", ir=b"n,,n=test,r=abc")[1])
        c = Scram("sha256", "test", "test")
        self.assertOK(exchange(r, "SCRAM-SHA-256", c.respond)[1])


# ========================================================================================
# Faults (README "Fault injection"): one login fails although its credentials are right

class Faults(ServerCase):
    def test_unavailable_once_then_retry(self):
        s = self.start(*USERS, "--fault", "AUTHENTICATE:1=AUTH-UNAVAILABLE", BASIC)
        r = self.raw(s, login=None)
        c = Scram("sha256", "test", "test")
        t = exchange(r, "SCRAM-SHA-256", c.respond)[1]
        self.assertNO(t)
        self.assertCode(t, "UNAVAILABLE")
        self.assertFalse(c.verified)
        c = Scram("sha256", "test", "test")
        self.assertOK(exchange(r, "SCRAM-SHA-256", c.respond)[1])

    def test_login_command_unavailable(self):
        s = self.start(*USERS, "--fault", "LOGIN:1=AUTH-UNAVAILABLE", BASIC)
        r = self.raw(s, login=None)
        self.assertCode(r.cmd("LOGIN test test")[1], "UNAVAILABLE")
        r.ok("LOGIN test test")

    def test_expired_token(self):
        s = self.start(*USERS, "--fault", "AUTHENTICATE:1=AUTH-EXPIRED", BASIC)
        r = self.raw(s, login=None)
        ch, t = exchange(r, "OAUTHBEARER", lambda _: b"\x01", ir=oauthbearer("tok-test"))
        self.assertEqual(json.loads(ch[0])["status"], "invalid_token")
        self.assertNO(t)
        self.assertCode(t, "EXPIRED")
        self.assertOK(exchange(r, "OAUTHBEARER", ir=oauthbearer("tok-test"))[1])

    def test_fault_spent_on_another_command_does_not_linger(self):
        s = self.start(*USERS, "--fault", "NOOP:1=AUTH-UNAVAILABLE", BASIC)
        r = self.raw(s, login=None)
        r.ok("NOOP")
        r.ok("LOGIN test test")


# ========================================================================================
# RFC 3501 6.2.3 with --require-tls (TLS build): every mechanism waits for STARTTLS

@unittest.skipUnless(has_tls(), "this imapmem has no TLS (make TLS=openssl)")
class RequireTLS(ServerCase):
    ARGS = USERS + ("--require-tls", BASIC)
    SHARED = True

    def test_no_mechanism_before_starttls(self):
        r = self.raw(login=None)
        caps = capabilities(r.ok("CAPABILITY"))
        self.assertEqual([c for c in caps if c.startswith("AUTH=")], [])
        self.assertIn("LOGINDISABLED", caps)
        for mech, ir in (("SCRAM-SHA-256", None), ("CRAM-MD5", None),
                         ("OAUTHBEARER", oauthbearer("tok-test")), ("XOAUTH2", None)):
            ch, t = exchange(r, mech, lambda _: b"", ir=ir)
            self.assertEqual(ch, [], mech)
            self.assertCode(t, "PRIVACYREQUIRED")


# ========================================================================================
# --trace: no response inside AUTHENTICATE reaches the transcript

class Trace(ServerCase):
    def test_responses_are_masked(self):
        s = self.start(*USERS, "--trace", BASIC)
        r = self.raw(s, login=None)
        digest = cram_md5("test", "test")
        said = []
        self.assertOK(exchange(r, "CRAM-MD5", lambda ch: said.append(digest(ch)) or said[-1])[1])
        c = Scram("sha256", "alice", "wonder,land=")
        self.assertOK(exchange(self.raw(s, login=None), "SCRAM-SHA-256", c.respond)[1])
        self.assertOK(exchange(self.raw(s, login=None), "XOAUTH2",
                               ir=xoauth2("test", "tok-test"))[1])
        r.ok("LOGOUT")
        s.stop()
        err = s.stderr()
        self.assertIn("C: ***", err)
        for secret in (said[0].decode(), b64(said[0]), b64(c.first), "tok-test",
                       b64(xoauth2("test", "tok-test"))):
            self.assertNotIn(secret, err)


# ========================================================================================
# Options: --oauth-token and --admin name users that exist

class Options(ServerCase):
    def test_unknown_user(self):
        for args in (("--oauth-token", "nobody:tok"), ("--admin", "nobody"),
                     ("--oauth-token", "test"), ("--oauth-token", "test:")):
            p = subprocess.run([BIN, "-p", "0"] + list(args),
                               capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(b"imapmem: ", p.stderr)


# ========================================================================================
# A real client: curl (CRAM-MD5, OAUTHBEARER, XOAUTH2 with --oauth2-bearer)

@unittest.skipUnless(shutil.which("curl"), "curl is not installed")
class Curl(ServerCase):
    ARGS = USERS + (BASIC,)
    SHARED = True

    def curl(self, *args):
        url = "imap://%s:%d/" % (self.srv.host, self.srv.port)
        return subprocess.run(["curl", "-sS", "--max-time", "10", url] + list(args),
                              capture_output=True, timeout=20)

    def test_cram_md5(self):
        p = self.curl("-u", "test:test", "--login-options", "AUTH=CRAM-MD5", "-v")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"INBOX", p.stdout)
        self.assertIn(b"AUTHENTICATE CRAM-MD5", p.stderr)

    def test_cram_md5_wrong_password(self):
        p = self.curl("-u", "test:nope", "--login-options", "AUTH=CRAM-MD5")
        self.assertNotEqual(p.returncode, 0)

    def test_oauthbearer(self):
        p = self.curl("-u", "alice:", "--oauth2-bearer", "tok:alice", "--login-options",
                      "AUTH=OAUTHBEARER", "-v")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"AUTHENTICATE OAUTHBEARER", p.stderr)
        self.assertIn(b"INBOX", p.stdout)

    def test_xoauth2(self):
        # curl prefers OAUTHBEARER whenever it is offered: switch it off
        s = self.start(*USERS, "--capability", "-AUTH=OAUTHBEARER", BASIC)
        url = "imap://%s:%d/" % (s.host, s.port)
        p = subprocess.run(["curl", "-sS", "--max-time", "10", url, "-u", "test:",
                            "--oauth2-bearer", "tok-test", "-v"], capture_output=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"AUTHENTICATE XOAUTH2", p.stderr)
        self.assertIn(b"INBOX", p.stdout)

if __name__ == "__main__":
    unittest.main()
