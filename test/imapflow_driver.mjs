// What the imapflow driver scripts (imap4rev2_client.mjs, qresync_client.mjs) share: the
// loop that reads one JSON request a line on stdin, answers each on stdout as
// {"ok": true, ...what handle returned} or {"ok": false, "error": "..."}, and at the end
// of its input calls done() to let go of the client.
import readline from 'node:readline';

export async function serveRequests(handle, done) {
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
        if (!line.trim()) continue;
        let answer;
        try {
            answer = { ok: true, ...(await handle(JSON.parse(line))) };
        } catch (err) {
            answer = { ok: false, error: String(err && (err.responseText || err.message || err)) };
        }
        process.stdout.write(JSON.stringify(answer) + '\n');
    }
    done();
}
