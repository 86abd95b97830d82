"""The command, FETCH and multi-session tests again, every client over implicit TLS: in a
TLS build (make TLS=openssl) wire.OVER_TLS makes each Server listen on an imaps port too,
and its raw() and imap() clients connect there, verifying the server's certificate.
Against a build without TLS this file has one test, skipped."""
import unittest

import wire

if wire.has_tls():
    wire.OVER_TLS = True
    from test_commands import *  # noqa: F401,F403  (the classes run here again)
    from test_fetch import *  # noqa: F401,F403
    from test_multi import *  # noqa: F401,F403
else:
    class OverTLS(unittest.TestCase):
        @unittest.skip("this imapmem was built without TLS (make TLS=openssl)")
        def test_over_tls(self):
            pass
