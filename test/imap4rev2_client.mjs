// A real IMAP4rev2 client (imapflow, which sends ENABLE IMAP4rev2 when a server offers it)
// driven by test/test_imap4rev2.py.
//
// Usage: node test/imap4rev2_client.mjs MODULE_DIR
//   MODULE_DIR is the node_modules directory imapflow was installed into (build/node-...).
// Protocol: one JSON request a line on stdin, one JSON answer a line on stdout:
//   {"op": "connect", "port": N}             ImapFlow, logs in as test/test; answers what it
//                                             enabled and the capabilities it saw
//   {"op": "list"}                            list(): [{path, flags}]
//   {"op": "create", "path": "..."}           mailboxCreate(path)
//   {"op": "status", "path": "..."}           status(path, {messages, unseen})
//   {"op": "open", "path": "..."}             mailboxOpen(path): exists, uidNext
//   {"op": "search", "query": {...}}          search(query, {uid: true}): UIDs
//   {"op": "subjects"}                        fetchAll('1:*', {uid, envelope}): [uid, subject]
//   {"op": "append", "path": "...", "message": "..."}   append(path, message)
//   {"op": "logout"}
// Every answer is {"ok": true, ...} or {"ok": false, "error": "..."}.
import { createRequire } from 'node:module';
import path from 'node:path';
import { serveRequests } from './imapflow_driver.mjs';

const moduleDir = process.argv[2];
const require = createRequire(path.join(path.resolve(moduleDir), 'x.js'));
const { ImapFlow } = require('imapflow');

let client = null;

async function handle(req) {
    switch (req.op) {
    case 'connect':
        client = new ImapFlow({
            host: '127.0.0.1', port: req.port, secure: false, doSTARTTLS: false,
            auth: { user: 'test', pass: 'test' }, logger: false, disableCompression: true
        });
        client.on('error', () => {});
        await client.connect();
        return { enabled: [...client.enabled].sort(), capabilities: [...client.capabilities.keys()].sort() };
    case 'list':
        return { mailboxes: (await client.list()).map(m => ({ path: m.path, flags: [...m.flags].sort() })) };
    case 'create':
        return { created: (await client.mailboxCreate(req.path)).path };
    case 'status': {
        const st = await client.status(req.path, { messages: true, unseen: true });
        return { path: st.path, messages: st.messages, unseen: st.unseen };
    }
    case 'open': {
        const m = await client.mailboxOpen(req.path);
        return { path: m.path, exists: m.exists, uidNext: m.uidNext };
    }
    case 'search':
        return { uids: await client.search(req.query, { uid: true }) };
    case 'subjects': {
        const msgs = await client.fetchAll('1:*', { uid: true, envelope: true });
        return { messages: msgs.map(m => [m.uid, m.envelope.subject]) };
    }
    case 'append': {
        const r = await client.append(req.path, Buffer.from(req.message, 'utf8'));
        return { uid: r && r.uid };
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
