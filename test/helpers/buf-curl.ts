import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { ErrorInfo } from '../../src/gen/google/rpc/error_details.js';

const run = promisify(execFile);
const buf = path.resolve('node_modules/.bin/buf');

/**
 * One call through `buf curl` with a JSON body, as an engineer on a terminal makes it: `method` is
 * `package.Service/Method`. Resolves to the parsed response, or to the parsed error body (`code`, `message`,
 * `details`) whatever the exit code; text that is not JSON (buf curl refusing the request itself) comes back
 * as `{ clientError }`. `headers` go out as request metadata (e.g. a W3C traceparent).
 */
export async function bufCurl(address: string, method: string, body: unknown, authorization?: string, headers: Record<string, string> = {}): Promise<any> {
  const args = ['curl', '--protocol', 'grpc', '--http2-prior-knowledge'];
  if (authorization) args.push('-H', `authorization: ${authorization}`);
  for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
  args.push('-d', typeof body === 'string' ? body : JSON.stringify(body), `http://${address}/${method}`);
  try {
    return JSON.parse((await run(buf, args, { encoding: 'utf8', timeout: 60_000 })).stdout);
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string };
    const text = e.stderr || e.stdout || '';
    try {
      return JSON.parse(text);
    } catch {
      return { clientError: text.slice(0, 2000) };
    }
  }
}

/** The ErrorInfo reason of a buf curl error body (its details are base64 there), or undefined. */
export function curlReason(body: { details?: Array<{ type: string; value: string }> }): string | undefined {
  const info = body.details?.find((d) => d.type === 'google.rpc.ErrorInfo');
  return info && ErrorInfo.decode(Buffer.from(info.value, 'base64')).reason;
}
