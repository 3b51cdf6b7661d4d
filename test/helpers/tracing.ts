import { randomBytes } from 'node:crypto';
import {
  trace,
  TraceFlags,
  type Attributes,
  type AttributeValue,
  type Context,
  type Span,
  type SpanContext,
  type SpanKind,
  type SpanOptions,
  type SpanStatus,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';

/** A span as the recording tracer keeps it. */
export interface RecordedSpan {
  name: string;
  kind: SpanKind | undefined;
  context: SpanContext;
  /** The span context it was started under, if any. */
  parent: SpanContext | undefined;
  attributes: Attributes;
  status: SpanStatus | undefined;
  ended: boolean;
}

/** A minimal recording span: what an SDK's span would record, kept in memory for assertions. */
class MemorySpan implements Span {
  constructor(private readonly r: RecordedSpan) {}
  spanContext(): SpanContext {
    return this.r.context;
  }
  setAttribute(key: string, value: AttributeValue): this {
    this.r.attributes[key] = value;
    return this;
  }
  setAttributes(attributes: Attributes): this {
    Object.assign(this.r.attributes, attributes);
    return this;
  }
  addEvent(): this {
    return this;
  }
  addLink(): this {
    return this;
  }
  addLinks(): this {
    return this;
  }
  setStatus(status: SpanStatus): this {
    this.r.status = status;
    return this;
  }
  updateName(name: string): this {
    this.r.name = name;
    return this;
  }
  end(): void {
    this.r.ended = true;
  }
  isRecording(): boolean {
    return !this.r.ended;
  }
  recordException(): void {}
}

/**
 * A TracerProvider that records every span in `spans`, as an OpenTelemetry SDK with an in-memory exporter
 * would: a child of a valid parent keeps its trace id, a root gets a new one.
 */
export class MemoryTracerProvider implements TracerProvider {
  readonly spans: RecordedSpan[] = [];

  getTracer(): Tracer {
    const spans = this.spans;
    const start = (name: string, options: SpanOptions = {}, ctx?: Context): Span => {
      const parent = ctx ? trace.getSpanContext(ctx) : undefined;
      const context: SpanContext = {
        traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
        spanId: randomBytes(8).toString('hex'),
        traceFlags: TraceFlags.SAMPLED,
      };
      const r: RecordedSpan = { name, kind: options.kind, context, parent, attributes: { ...options.attributes }, status: undefined, ended: false };
      spans.push(r);
      return new MemorySpan(r);
    };
    return {
      startSpan: start,
      startActiveSpan: (() => {
        throw new Error('not used by parley');
      }) as Tracer['startActiveSpan'],
    };
  }
}
