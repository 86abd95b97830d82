// A real QRESYNC client (imapflow) driven by test/test_qresync_client.py.
//
// Usage: node test/qresync_client.mjs MODULE_DIR
//   MODULE_DIR is the node_modules directory imapflow was installed into (build/node/...).
// Protocol: one JSON request a line on stdin, one JSON answer a line on stdout:
//   {"op": "connect", "port": N}            ImapFlow with qresync: true; logs in as test/test
//   {"op": "open", "path": "INBOX", "uidValidity": "1", "changedSince": "7"}
//                                            mailboxOpen(); uidValidity/changedSince optional
//   {"op": "fetchAll"}                       fetchAll('1:*', {uid, flags}) with modseq
//   {"op": "fetchChanged", "changedSince": "7"}
//                                            fetchAll('1:*', {uid, flags}, {uid: true,
//                                            changedSince}): UID FETCH ... (CHANGEDSINCE n VANISHED)
//   {"op": "fetchFlags", "range": "1"}       fetchAll(range, {uid, flags}): FETCH by sequence number
//   {"op": "noop"}                           NOOP (untagged updates arrive as events)
//   {"op": "drop"}                           close() without LOGOUT: a lost connection
//   {"op": "events"}                         the 'expunge' and 'flags' events since the last call
//   {"op": "logout"}
// Every answer is {"ok": true, ...} or {"ok": false, "error": "..."}; the mailbox object the
// client keeps (uidValidity, highestModseq, exists, qresync) is in every "open" answer.
// BigInts are sent as decimal strings, Sets as sorted arrays.
import { createRequire } from 'node:module';
import path from 'node:path';
import { serveRequests } from './imapflow_driver.mjs';

const moduleDir = process.argv[2];
const require = createRequire(path.join(path.resolve(moduleDir), 'x.js'));
const { ImapFlow } = require('imapflow');

let client = null;
let events = [];

function plain(v) {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Set) return [...v].sort();
    if (Array.isArray(v)) return v.map(plain);
    if (v && typeof v === 'object') {
        const o = {};
        for (const [k, x] of Object.entries(v)) o[k] = plain(x);
        return o;
    }
    return v;
}

function mailboxState(m) {
    return plain({
        path: m.path, uidValidity: m.uidValidity, highestModseq: m.highestModseq,
        exists: m.exists, uidNext: m.uidNext, qresync: !!m.qresync, noModseq: !!m.noModseq
    });
}

async function handle(req) {
    switch (req.op) {
    case 'connect': {
        client = new ImapFlow({
            host: '127.0.0.1', port: req.port, secure: false, doSTARTTLS: false,
            auth: { user: 'test', pass: 'test' }, qresync: true, logger: false,
            disableCompression: true
        });
        client.on('expunge', e => events.push(plain({ type: 'expunge', ...e })));
        client.on('flags', e => events.push(plain({ type: 'flags', ...e })));
        client.on('error', e => events.push({ type: 'error', message: String(e && e.message) }));
        await client.connect();
        return { enabled: [...client.enabled].sort() };
    }
    case 'open': {
        const opts = {};
        if (req.uidValidity !== undefined) opts.uidValidity = BigInt(req.uidValidity);
        if (req.changedSince !== undefined) opts.changedSince = BigInt(req.changedSince);
        const m = await client.mailboxOpen(req.path || 'INBOX', opts);
        return { mailbox: mailboxState(m) };
    }
    case 'fetchAll': {
        const msgs = await client.fetchAll('1:*', { uid: true, flags: true });
        return { messages: msgs.map(m => plain({ seq: m.seq, uid: m.uid, flags: m.flags, modseq: m.modseq })) };
    }
    case 'fetchChanged': {
        const msgs = await client.fetchAll('1:*', { uid: true, flags: true },
            { uid: true, changedSince: BigInt(req.changedSince) });
        return { messages: msgs.map(m => plain({ seq: m.seq, uid: m.uid, flags: m.flags, modseq: m.modseq })),
                 mailbox: mailboxState(client.mailbox) };
    }
    case 'fetchFlags': {
        const msgs = await client.fetchAll(req.range, { uid: true, flags: true });
        return { messages: msgs.map(m => plain({ seq: m.seq, uid: m.uid, flags: m.flags, modseq: m.modseq })),
                 mailbox: mailboxState(client.mailbox) };
    }
    case 'drop':
        client.close();
        client = null;
        return {};
    case 'noop':
        await client.noop();
        return { mailbox: mailboxState(client.mailbox) };
    case 'events': {
        const out = events;
        events = [];
        return { events: out };
    }
    case 'logout':
        await client.logout();
        client = null;
        return {};
    default:
        throw new Error('unknown op ' + req.op);
    }
}

await serveRequests(handle, () => {
    if (client) {
        try { client.close(); } catch (e) { /* already closed */ }
    }
});
