// The dev server (`npm start`'s www/serve.mjs) against the URLs a stranger could send:
// malformed escapes, NUL, `..` encoded to reach a sibling folder, a symlink out, methods
// other than GET; and its headers (MIME, nosniff, the policy) and port fallback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, KILN_CSP } from '../../www/serve.mjs';

const SERVE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'www', 'serve.mjs');

let work, server, port;
before(async () => {
  // <tmp>/www is served; <tmp>/www-private is its sibling, which no URL may reach
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-serve-'));
  const root = path.join(work, 'www');
  fs.mkdirSync(path.join(root, 'lib'), { recursive: true });
  fs.mkdirSync(path.join(work, 'www-private'));
  fs.writeFileSync(path.join(work, 'www-private', 'secret.txt'), 'secret');
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>x</title>');
  fs.writeFileSync(path.join(root, 'lib', 'kiln.d.ts'), 'export {};');
  fs.writeFileSync(path.join(root, 'lib', 'kiln.js'), 'export {};');
  fs.writeFileSync(path.join(root, 'kiln_bg.wasm'), Buffer.from([0, 0x61, 0x73, 0x6d]));
  fs.symlinkSync(path.join(work, 'www-private', 'secret.txt'), path.join(root, 'leak.txt'));
  fs.symlinkSync(path.join(root, 'lib', 'kiln.js'), path.join(root, 'alias.js'));
  server = await startServer(root, 0);
  port = server.address().port;
});
after(() => {
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
});

/// One request with the path sent byte for byte (fetch would normalise it first).
function get(rawPath, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, method }, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('malformed URLs answer 400 and the server keeps serving', async () => {
  assert.equal((await get('/%')).status, 400);
  assert.equal((await get('/%zz')).status, 400);
  assert.equal((await get('/%00')).status, 400);
  assert.equal((await get('/index.html%00.js')).status, 400);
  assert.equal((await get('/')).status, 200, 'still up after the bad requests');
});

test('no URL reaches outside the served folder', async () => {
  for (const url of ['/..%2fwww-private/secret.txt', '/../www-private/secret.txt', '/%2e%2e/www-private/secret.txt',
    '/lib/..%2f..%2fwww-private%2fsecret.txt', '/..%5cwww-private%5csecret.txt']) {
    const res = await get(url);
    assert.notEqual(res.status, 200, url);
    assert.ok(!res.body.includes('secret'), url);
  }
  const leak = await get('/leak.txt');
  assert.equal(leak.status, 403, 'a symlink that leads out is refused');
  assert.equal((await get('/alias.js')).status, 200, 'a symlink that stays inside is served');
});

test('MIME types, nosniff and the policy header', async () => {
  const types = {
    '/': 'text/html; charset=utf-8',
    '/lib/kiln.js': 'text/javascript; charset=utf-8',
    '/lib/kiln.d.ts': 'text/plain; charset=utf-8',
    '/kiln_bg.wasm': 'application/wasm',
  };
  for (const [url, type] of Object.entries(types)) {
    const res = await get(url);
    assert.equal(res.status, 200, url);
    assert.equal(res.headers['content-type'], type, url);
    assert.equal(res.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(res.headers['content-security-policy'], KILN_CSP, url);
  }
  for (const directive of ["base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "connect-src 'self'"]) {
    assert.ok(KILN_CSP.includes(directive), directive);
  }
  const missing = await get('/nope.js');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers['x-content-type-options'], 'nosniff');
  const post = await get('/', 'POST');
  assert.equal(post.status, 405);
  assert.equal(post.headers.allow, 'GET, HEAD');
});

test('a taken port moves to the next free one, and `npm start` says which', async () => {
  // hold a port, then ask for it
  const holder = net.createServer();
  await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const taken = holder.address().port;
  try {
    const moved = await startServer(path.join(work, 'www'), taken);
    assert.notEqual(moved.address().port, taken);
    moved.close();
    await assert.rejects(startServer(path.join(work, 'www'), taken, { exact: true }), { code: 'EADDRINUSE' });

    // the command line: PORT taken → the next port, and a line naming it (no stack trace)
    const child = spawn(process.execPath, [SERVE], { env: { ...process.env, PORT: String(taken) } });
    const out = await new Promise((resolve, reject) => {
      let text = '';
      child.stdout.on('data', (chunk) => {
        text += chunk;
        if (text.includes('Ctrl-C')) resolve(text);
      });
      child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${text}`)));
    });
    child.kill();
    assert.match(out, new RegExp(`Port ${taken} is taken; using \\d+`));
    const url = out.match(/http:\/\/127\.0\.0\.1:(\d+)\//);
    assert.ok(url && Number(url[1]) !== taken, out);
  } finally {
    holder.close();
  }
});
