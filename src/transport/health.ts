import type { Server, ServerWritableStream, ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import { notFound } from '../errors.js';
import { toServiceError } from './status.js';
import {
  HealthCheckResponse_ServingStatus as Serving,
  HealthService,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../gen/grpc/health/v1/health.js';

export interface Probe {
  name: string;
  check(): Promise<void>;
}

/**
 * grpc.health.v1: SERVING only while every backend answers a probe. Probes run on a timer rather than per
 * Check call, so a dead backend is noticed even when nobody asks, and Watch streams hear about it.
 */
export class HealthMonitor {
  private serving = false;
  private shuttingDown = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly watchers = new Set<(s: Serving) => void>();
  private readonly failing = new Set<string>();

  constructor(
    private readonly probes: Probe[],
    private readonly services: string[],
    private readonly intervalMs = 500,
    private readonly probeTimeoutMs = 1_000,
  ) {}

  async start(): Promise<void> {
    await this.tick();
    // The next probe is scheduled whatever this one did: a watcher that threw must not stop health checks.
    const next = () => {
      if (!this.shuttingDown) this.timer = setTimeout(loop, this.intervalMs).unref();
    };
    const loop = () => void this.tick().then(next, next);
    this.timer = setTimeout(loop, this.intervalMs).unref();
  }

  stop(): void {
    this.shuttingDown = true;
    if (this.timer) clearTimeout(this.timer);
    this.set(false);
  }

  /** Names of backends failing their probe right now. */
  down(): string[] {
    return [...this.failing];
  }

  status(service: string): Serving {
    if (service !== '' && !this.services.includes(service)) return Serving.SERVICE_UNKNOWN;
    return this.serving ? Serving.SERVING : Serving.NOT_SERVING;
  }

  private async tick(): Promise<void> {
    const results = await Promise.all(
      this.probes.map(async (p) => {
        try {
          await withTimeout(p.check(), this.probeTimeoutMs);
          this.failing.delete(p.name);
          return true;
        } catch {
          this.failing.add(p.name);
          return false;
        }
      }),
    );
    if (!this.shuttingDown) this.set(results.every(Boolean));
  }

  private set(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    for (const w of this.watchers) w(serving ? Serving.SERVING : Serving.NOT_SERVING);
  }

  addTo(server: Server): void {
    server.addService(HealthService, {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
        const s = this.status(call.request.service);
        // Through the same mapping as every other error: ErrorInfo SERVICE_NOT_FOUND, the name cut short.
        if (s === Serving.SERVICE_UNKNOWN) cb(toServiceError(notFound`service ${call.request.service}`));
        else cb(null, { status: s });
      },
      list: (_call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<{ statuses: Record<string, HealthCheckResponse> }>) => {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const name of ['', ...this.services]) statuses[name] = { status: this.status(name) };
        cb(null, { statuses });
      },
      watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
        const service = call.request.service;
        let last = this.status(service);
        call.write({ status: last });
        const w = () => {
          const s = this.status(service);
          if (s !== last) call.write({ status: (last = s) });
        };
        this.watchers.add(w);
        call.on('cancelled', () => this.watchers.delete(w));
        call.on('close', () => this.watchers.delete(w));
      },
    });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('probe timed out')), ms);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e) => (clearTimeout(t), reject(e)),
    );
  });
}
