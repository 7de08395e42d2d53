// A small static file server for www/ (no dependencies): `node www/serve.mjs [port]`.
// Binds to 127.0.0.1 only; serves regular files inside its root only (no `..`, no symlink
// that leads out, no NUL); answers a malformed URL with 400 instead of dying; sends the MIME
// types that module workers and WebAssembly.instantiateStreaming require, `nosniff`, and the
// page's Content-Security-Policy as a header too (a worker gets a policy only that way).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/// By file name ending, longest first (`.d.ts` before `.ts`).
const TYPES = [
  ['.d.ts', 'text/plain; charset=utf-8'],
  ['.html', 'text/html; charset=utf-8'],
  ['.js', 'text/javascript; charset=utf-8'],
  ['.mjs', 'text/javascript; charset=utf-8'],
  ['.css', 'text/css; charset=utf-8'],
  ['.wasm', 'application/wasm'],
  ['.json', 'application/json'],
  ['.png', 'image/png'],
  ['.svg', 'image/svg+xml'],
  ['.txt', 'text/plain; charset=utf-8'],
  ['.md', 'text/plain; charset=utf-8'],
];

export function contentType(file) {
  const name = path.basename(file).toLowerCase();
  return TYPES.find(([end]) => name.endsWith(end))?.[1] ?? 'application/octet-stream';
}

/// The demo's policy (index.html carries the same in a <meta>, which cannot say
/// frame-ancestors): its own files only, wasm compiled but no eval, no forms, no framing.
export const KILN_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self' blob:",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ');

/// The file a request path names, or an HTTP status saying why there is none.
/// `root` must be a real path (symlinks resolved).
export function resolveRequest(root, rawUrl) {
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(rawUrl, 'http://localhost').pathname);
  } catch {
    return { status: 400 }; // `/%`, `/%zz`: not a URL
  }
  if (pathname.includes('\0')) return { status: 400 };
  const inside = (p) => p === root || p.startsWith(root + path.sep);
  let file = path.resolve(root, '.' + path.posix.normalize('/' + pathname));
  if (!inside(file)) return { status: 403 };
  let real;
  try {
    real = fs.realpathSync(file);
  } catch {
    return { status: 404 };
  }
  if (!inside(real)) return { status: 403 }; // a symlink out of the served folder
  let stat = fs.statSync(real);
  if (stat.isDirectory()) {
    real = path.join(real, 'index.html');
    try {
      stat = fs.statSync(real);
    } catch {
      return { status: 404 };
    }
  }
  if (!stat.isFile()) return { status: 404 };
  return { status: 200, file: real };
}

/// Serves `root` on 127.0.0.1. `port` 0 takes a free one; a taken port moves on to the next
/// (up to `tries`) unless `exact`. `csp: null` leaves the policy header out (pages with an
/// inline import map, like tests/example).
export async function startServer(root, port = 0, { csp = KILN_CSP, tries = 20, exact = false } = {}) {
  const base = fs.realpathSync(path.resolve(root));
  const server = http.createServer((req, res) => {
    const headers = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer' };
    if (csp) headers['content-security-policy'] = csp;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed');
      return;
    }
    const { status, file } = resolveRequest(base, req.url);
    if (status !== 200) {
      const text = { 400: 'bad request', 403: 'forbidden', 404: 'not found' }[status];
      res.writeHead(status, { ...headers, 'content-type': 'text/plain; charset=utf-8' }).end(text);
      return;
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(404, { ...headers, 'content-type': 'text/plain; charset=utf-8' }).end('not found');
        return;
      }
      res.writeHead(200, { ...headers, 'content-type': contentType(file), 'cache-control': 'no-cache' });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  server.on('clientError', (_err, socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  for (let attempt = 0; ; attempt++) {
    const tryPort = port === 0 ? 0 : port + attempt;
    try {
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(tryPort, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
      return server;
    } catch (err) {
      if (err.code !== 'EADDRINUSE' || exact || port === 0 || attempt + 1 >= tries) throw err;
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const asked = process.argv[2] ?? process.env.PORT;
  const port = Number(asked ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve: "${asked}" is not a port number (0–65535)`);
    process.exit(2);
  }
  const root = path.dirname(fileURLToPath(import.meta.url));
  try {
    const server = await startServer(root, port);
    const got = server.address().port;
    if (port !== 0 && got !== port) console.log(`Port ${port} is taken; using ${got}.`);
    console.log(`Kiln is served at http://127.0.0.1:${got}/ (Ctrl-C stops it)`);
  } catch (err) {
    console.error(`serve: cannot listen on 127.0.0.1:${port}: ${err.code ?? err.message}`);
    process.exit(1);
  }
}
