// An OpenTelemetry hook for parley, loaded before it starts:
//
//   node --import ./examples/otel-setup.mjs bin/parley.js serve
//
// parley depends on @opentelemetry/api only and makes one SERVER span per call through whatever tracer
// provider is registered globally. A deployment registers an SDK here instead of this file's printer, e.g.
// (after `npm install @opentelemetry/sdk-node @opentelemetry/exporter-trace-otlp-http`):
//
//   import { NodeSDK } from '@opentelemetry/sdk-node';
//   import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
//   new NodeSDK({ traceExporter: new OTLPTraceExporter() }).start();
//
// This example needs nothing parley does not already have: it prints each finished span as one JSON line
// on stdout (parley's own logs go to stderr).
import { randomBytes } from 'node:crypto';
import { trace, TraceFlags } from '@opentelemetry/api';

class PrintedSpan {
  constructor(name, options, parent) {
    this.record = {
      name,
      kind: options.kind,
      traceId: parent?.traceId ?? randomBytes(16).toString('hex'),
      spanId: randomBytes(8).toString('hex'),
      parentSpanId: parent?.spanId,
      attributes: { ...options.attributes },
      status: undefined,
      startTime: Date.now(),
    };
  }
  spanContext() {
    return { traceId: this.record.traceId, spanId: this.record.spanId, traceFlags: TraceFlags.SAMPLED };
  }
  setAttribute(key, value) {
    this.record.attributes[key] = value;
    return this;
  }
  setAttributes(attributes) {
    Object.assign(this.record.attributes, attributes);
    return this;
  }
  setStatus(status) {
    this.record.status = status;
    return this;
  }
  updateName(name) {
    this.record.name = name;
    return this;
  }
  addEvent() {
    return this;
  }
  addLink() {
    return this;
  }
  addLinks() {
    return this;
  }
  recordException() {}
  isRecording() {
    return true;
  }
  end() {
    process.stdout.write(`${JSON.stringify({ span: { ...this.record, durationMs: Date.now() - this.record.startTime } })}\n`);
  }
}

const tracer = {
  startSpan: (name, options = {}, context) => new PrintedSpan(name, options, context && trace.getSpanContext(context)),
  startActiveSpan() {
    throw new Error('not used by parley');
  },
};

trace.setGlobalTracerProvider({ getTracer: () => tracer });
