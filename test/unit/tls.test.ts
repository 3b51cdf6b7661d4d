import test from 'ava';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, rmSync, writeFileSync } from 'node:fs';
import type { TlsConfig } from '../../src/config.js';
import type { Logger } from '../../src/log.js';
import { ServerTls, TlsFileError } from '../../src/transport/tls.js';
import { testWhen } from '../helpers/backends.js';
import { TestPki } from '../helpers/certs.js';

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const withOpenssl = testWhen(hasOpenssl, 'openssl is not installed');

let pki: TestPki;
test.before(() => {
  if (!hasOpenssl) return;
  pki = new TestPki();
  pki.ca('ca');
  pki.leaf('server', 'ca', 'server');
  pki.leaf('server2', 'ca', 'server');
  spawnSync('openssl', ['pkey', '-in', pki.file('server.key'), '-aes256', '-passout', 'pass:secret', '-out', pki.file('encrypted.key')]);
  writeFileSync(pki.file('junk.key'), 'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n');
});
test.after.always(() => {
  if (pki) rmSync(pki.dir, { recursive: true, force: true });
});

function recorder(): Logger & { lines: Array<[string, string, Record<string, unknown> | undefined]> } {
  const lines: Array<[string, string, Record<string, unknown> | undefined]> = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push([level, msg, fields]);
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const serialOf = (name: string) => new X509Certificate(pki.read(`${name}.pem`)).serialNumber;

const files = (cert: string, key: string, clientCa?: string): TlsConfig => ({
  certFile: pki.file(cert),
  keyFile: pki.file(key),
  clientCaFile: clientCa && pki.file(clientCa),
  reloadIntervalMs: 0,
});

withOpenssl('ServerTls.load names the variable and file of a key it cannot use, never its content', async (t) => {
  const encrypted = await t.throwsAsync(ServerTls.load(files('server.pem', 'encrypted.key'), recorder()), { instanceOf: TlsFileError });
  t.is(encrypted?.message, `PARLEY_TLS_KEY (${pki.file('encrypted.key')}): is an encrypted private key; parley needs it unencrypted (protect the file instead)`);
  const junk = await t.throwsAsync(ServerTls.load(files('server.pem', 'junk.key'), recorder()), { instanceOf: TlsFileError });
  t.is(junk?.message, `PARLEY_TLS_KEY (${pki.file('junk.key')}): is not a PEM private key`);
  const swapped = await t.throwsAsync(ServerTls.load(files('server.key', 'server.pem'), recorder()), { instanceOf: TlsFileError });
  t.is(swapped?.message, `PARLEY_TLS_CERT (${pki.file('server.key')}): holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  const dir = await t.throwsAsync(ServerTls.load({ ...files('server.pem', 'server.key'), certFile: pki.dir }, recorder()), { instanceOf: TlsFileError });
  t.is(dir?.message, `PARLEY_TLS_CERT (${pki.dir}): is not a file`);
});

withOpenssl('ServerTls.reload: unchanged files change nothing, a bad set is refused with one warning per distinct problem, a good one replaces the certificate', async (t) => {
  copyFileSync(pki.file('server.pem'), pki.file('live.pem'));
  copyFileSync(pki.file('server.key'), pki.file('live.key'));
  const log = recorder();
  const tls = await ServerTls.load(files('live.pem', 'live.key', 'ca.pem'), log);
  try {
    t.is(tls.mode, 'mutual TLS');
    t.is(await tls.reload('file change'), 'unchanged');
    t.is(log.lines.length, 0, 'an unchanged poll logs nothing');

    // Half-way through a copy: the new key beside the old certificate.
    copyFileSync(pki.file('server2.key'), pki.file('live.key'));
    t.is(await tls.reload('file change'), 'failed');
    t.is(await tls.reload('file change'), 'failed');
    const warnings = log.lines.filter(([level]) => level === 'warn');
    t.is(warnings.length, 1, 'polling the same bad set warns once');
    t.regex(String(warnings[0]![2]?.reason), /^PARLEY_TLS_KEY \(.*live\.key\): is not the private key of the certificate in PARLEY_TLS_CERT/);
    t.is(tls.describe().serial, serialOf('server'), 'still the first certificate');

    copyFileSync(pki.file('server2.pem'), pki.file('live.pem'));
    t.is(await tls.reload('SIGHUP'), 'reloaded');
    t.is(tls.describe().serial, serialOf('server2'));
    const reloaded = log.lines.find(([, msg]) => msg.startsWith('TLS certificate reloaded'));
    t.is(reloaded?.[2]?.trigger, 'SIGHUP');
    t.is(reloaded?.[2]?.serial, tls.describe().serial);
    t.false(JSON.stringify(log.lines).includes('PRIVATE KEY'), 'no key material in the log');
  } finally {
    tls.close();
  }
});
