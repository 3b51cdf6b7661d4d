import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Test certificates made with the system's `openssl`, in a temporary directory: CAs, and leaf certificates
 * they sign (a server certificate for 127.0.0.1 and localhost, or a client certificate). EC P-256 keys keep
 * it quick.
 */
export class TestPki {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'parley-tls-'));

  private openssl(...args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  read(name: string): Buffer {
    return readFileSync(this.file(name));
  }

  /** `<name>.pem` and `<name>.key`: a self-signed CA. */
  ca(name: string): void {
    this.openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${name} test CA`, '-keyout', `${name}.key`, '-out', `${name}.pem`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  }

  /** `<name>.pem` and `<name>.key`: a certificate signed by CA `ca`, for a server (127.0.0.1, localhost) or a client. */
  leaf(name: string, ca: string, kind: 'server' | 'client'): void {
    this.openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`,
      '-keyout', `${name}.key`, '-out', `${name}.csr`);
    writeFileSync(
      this.file(`${name}.ext`),
      kind === 'server'
        ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n'
        : 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n',
    );
    this.openssl('x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  }
}
