import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { credentials, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { TlsConfig } from '../config.js';
import type { Logger } from '../log.js';
import { StartupError } from '../startup-errors.js';

// TLS on the gRPC port from PEM files, replaced without a restart.
//
// Contract:
// - Start-up reads and checks every file (readable, PEM, the key belongs to the certificate); any problem is
//   one StartupError naming the variable and the file, never the file's content.
// - reload() (SIGHUP, or a change seen by polling) reads them again. A complete, consistent set replaces the
//   secure context: new handshakes get the new certificate (and client CA); connections already open keep
//   theirs. Anything less (a missing file, bad PEM, a key of another certificate, e.g. half-way through a
//   copy) keeps serving the previous set and logs one warning per distinct bad set.
// grpc-js's own FileWatcherCertificateProvider polls only, cannot be told to reload, and hands a bad file
// straight to the server, which then drops every new connection; hence this credentials class.

/** Largest PEM file read (a certificate chain or CA bundle is a few KiB; this only bounds a wrong path). */
const MAX_PEM_BYTES = 1024 * 1024;

/** The three files of a TLS set, each with the variable that named it. */
interface TlsFile {
  variable: string;
  path: string;
}

interface TlsSet {
  options: SecureContextOptions;
  /** SHA-256 over the contents, to tell a changed set from the one being served. */
  fingerprint: string;
  certificate: X509Certificate;
}

export class TlsFileError extends StartupError {
  constructor(file: TlsFile, problem: string) {
    super(`${file.variable} (${file.path}): ${problem}`);
    this.name = 'TlsFileError';
  }
}

async function readPem(file: TlsFile): Promise<Buffer> {
  let handle;
  try {
    handle = await open(file.path, 'r');
    const { size, isFile } = await handle.stat().then((s) => ({ size: s.size, isFile: s.isFile() }));
    if (!isFile) throw new TlsFileError(file, 'is not a file');
    if (size > MAX_PEM_BYTES) throw new TlsFileError(file, `is larger than ${MAX_PEM_BYTES} bytes; not a PEM file`);
    return await handle.readFile();
  } catch (err) {
    if (err instanceof TlsFileError) throw err;
    const code = (err as { code?: string }).code;
    throw new TlsFileError(file, `cannot be read (${code ?? (err as Error).message})`);
  } finally {
    await handle?.close();
  }
}

const pemBlock = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM file, parsed; none, or one that does not parse, is an error naming the file. */
function certificates(file: TlsFile, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(pemBlock) ?? [];
  if (blocks.length === 0) throw new TlsFileError(file, 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)');
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch {
      throw new TlsFileError(file, `certificate ${i + 1} of the file is not a valid X.509 certificate`);
    }
  });
}

function privateKey(file: TlsFile, pem: Buffer): KeyObject {
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem.toString('latin1'))) {
    throw new TlsFileError(file, 'is an encrypted private key; parley needs it unencrypted (protect the file instead)');
  }
  try {
    return createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    // Node's message can quote the decoder's view of the input; say only what is wrong.
    throw new TlsFileError(file, 'is not a PEM private key');
  }
}

async function loadSet(files: TlsConfig): Promise<TlsSet> {
  const cert: TlsFile = { variable: 'PARLEY_TLS_CERT', path: files.certFile };
  const key: TlsFile = { variable: 'PARLEY_TLS_KEY', path: files.keyFile };
  const ca: TlsFile | undefined = files.clientCaFile ? { variable: 'PARLEY_TLS_CLIENT_CA', path: files.clientCaFile } : undefined;
  const [certPem, keyPem, caPem] = await Promise.all([readPem(cert), readPem(key), ca && readPem(ca)]);
  const [leaf] = certificates(cert, certPem);
  if (!leaf!.checkPrivateKey(privateKey(key, keyPem))) {
    throw new TlsFileError(key, `is not the private key of the certificate in PARLEY_TLS_CERT (${cert.path})`);
  }
  if (ca && caPem) certificates(ca, caPem);
  const options: SecureContextOptions = { cert: certPem, key: keyPem, ...(caPem ? { ca: caPem } : {}) };
  try {
    createSecureContext(options);
  } catch (err) {
    throw new TlsFileError(cert, `refused by TLS: ${(err as Error).message.slice(0, 200)}`);
  }
  const fingerprint = createHash('sha256').update(certPem).update('\0').update(keyPem).update('\0').update(caPem ?? '').digest('hex');
  return { options, fingerprint, certificate: leaf! };
}

/** What a log line says about a certificate: public facts only. */
function describeCertificate(c: X509Certificate): Record<string, string> {
  return { subject: c.subject.replace(/\n/g, ', '), issuer: c.issuer.replace(/\n/g, ', '), serial: c.serialNumber, notAfter: c.validTo };
}

/**
 * grpc-js server credentials whose certificate, key and client CA can be replaced while serving. The
 * server listens for updates (its watcher calls setSecureContext), which affect new handshakes only.
 */
class ReloadableServerCredentials extends ServerCredentials {
  constructor(mutual: boolean, initial: SecureContextOptions) {
    // Mutual TLS: ask every client for a certificate and refuse the handshake without one the CA verifies.
    // GRPC_SSL_CIPHER_SUITES is honoured as grpc-js's own createSsl honours it.
    const ciphers = process.env.GRPC_SSL_CIPHER_SUITES;
    super({ requestCert: mutual, rejectUnauthorized: mutual, ...(ciphers ? { ciphers } : {}) }, initial);
  }

  replace(options: SecureContextOptions): void {
    this.updateSecureContextOptions(options);
  }

  _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

export type ReloadOutcome = 'reloaded' | 'unchanged' | 'failed';

/** TLS for the gRPC server: the credentials to bind with, reload on demand, and polling for changed files. */
export class ServerTls {
  private reloading: Promise<ReloadOutcome> = Promise.resolve('unchanged');
  private lastFailure: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  private constructor(
    private readonly files: TlsConfig,
    private readonly logger: Logger,
    private current: TlsSet,
    readonly credentials: ReloadableServerCredentials,
  ) {}

  /** Reads and checks the files; a problem is a TlsFileError (a StartupError) naming the variable and file. */
  static async load(files: TlsConfig, logger: Logger): Promise<ServerTls> {
    const set = await loadSet(files);
    const tls = new ServerTls(files, logger, set, new ReloadableServerCredentials(files.clientCaFile !== undefined, set.options));
    tls.warnIfExpired(set.certificate);
    if (files.reloadIntervalMs > 0) {
      tls.timer = setInterval(() => tls.poll(), files.reloadIntervalMs);
      tls.timer.unref();
    }
    return tls;
  }

  get mode(): 'TLS' | 'mutual TLS' {
    return this.files.clientCaFile ? 'mutual TLS' : 'TLS';
  }

  describe(): Record<string, string> {
    return { tls: this.mode, ...describeCertificate(this.current.certificate) };
  }

  /**
   * Reads the files again and serves them if they changed and are a consistent set; `trigger` goes to the log.
   * Never throws: a bad set keeps the previous one and is logged as a warning. Reloads run one at a time.
   */
  reload(trigger: 'SIGHUP' | 'file change'): Promise<ReloadOutcome> {
    this.reloading = this.reloading.then(() =>
      this.reloadNow(trigger).catch((err: unknown) => {
        // Not foreseen (reloadNow handles bad files itself); the previous certificate stays either way.
        this.logger.warn('TLS reload failed; still serving the previous certificate', { trigger, reason: err instanceof Error ? err.message : String(err) });
        return 'failed' as const;
      }),
    );
    return this.reloading;
  }

  /** A poll while the previous one still reads (a slow disk) is skipped rather than queued. */
  private poll(): void {
    if (this.polling) return;
    this.polling = true;
    void this.reload('file change').finally(() => (this.polling = false));
  }

  private async reloadNow(trigger: string): Promise<ReloadOutcome> {
    let set: TlsSet;
    try {
      set = await loadSet(this.files);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      // Polling sees the same bad set every interval; one warning per distinct problem is enough.
      if (trigger === 'SIGHUP' || reason !== this.lastFailure) {
        this.logger.warn('TLS files not reloaded; still serving the previous certificate', { trigger, reason });
      }
      this.lastFailure = reason;
      return 'failed';
    }
    this.lastFailure = undefined;
    if (set.fingerprint === this.current.fingerprint) {
      if (trigger === 'SIGHUP') this.logger.info('TLS files unchanged', { trigger });
      return 'unchanged';
    }
    this.credentials.replace(set.options);
    this.current = set;
    this.logger.info('TLS certificate reloaded; new connections use it', { trigger, ...this.describe() });
    this.warnIfExpired(set.certificate);
    return 'reloaded';
  }

  private warnIfExpired(c: X509Certificate): void {
    if (Date.parse(c.validTo) < Date.now()) this.logger.warn('the TLS certificate has expired; clients will refuse it', describeCertificate(c));
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/** PEM files a client (`parley describe`, `parley purge --address`) uses to reach a TLS server. */
export interface ClientTlsFiles {
  /** CA bundle to verify the server with; unset: the system's roots. */
  caFile: string | undefined;
  /** A client certificate and its key, for a server that requires mutual TLS. */
  certFile: string | undefined;
  keyFile: string | undefined;
}

/** Channel credentials for the CLI's client commands: TLS when any file is given, else plaintext. */
export async function clientCredentials(files: ClientTlsFiles): Promise<ChannelCredentials> {
  if (!files.caFile && !files.certFile && !files.keyFile) return credentials.createInsecure();
  if (!files.certFile !== !files.keyFile) throw new Error('--cert and --key go together (a client certificate and its private key)');
  const read = (variable: string, path: string | undefined) => (path ? readPem({ variable, path }) : Promise.resolve(null));
  const [ca, cert, key] = await Promise.all([read('--cacert', files.caFile), read('--cert', files.certFile), read('--key', files.keyFile)]);
  return credentials.createSsl(ca, key, cert);
}
