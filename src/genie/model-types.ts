import { z } from 'zod';
import type { Principal } from '../principal.js';
import { alreadyExists, clip, failedPrecondition, invalidArgument, notFound } from '../errors.js';
import { zodCodec } from '../json-codec.js';
import type { UnitOfWork } from '../ports/unit-of-work.js';
import type { Bus } from '../ports/bus.js';
import { afterCommit } from '../after-commit.js';
import { noTelemetry, type Telemetry } from '../ports/telemetry.js';
import { cursorInt, cursorOf, decodePageToken, encodePageToken, PG_INTEGER_MAX, type Page } from '../paging.js';
import { invalidateOnBus, LocalCache } from '../local-cache.js';
import { compileProblem, schemaProblem } from './json-schema.js';
import { MODEL_TYPE_NAME, modelTypeRowSchema, modelTypeViolations, type ModelTypeDef, type ModelTypeRow } from './model-type.js';
import { genieRequestKey, withinBudget } from './rules.js';
import type { ModelTypeStore } from './store.js';

/** Every process drops a type's cached versions on a message here (`<account id>/<type name>`). */
export const MODEL_TYPE_REGISTERED_CHANNEL = 'genie:modeltype:registered';
/**
 * How long a process may keep a type's versions without hearing of a new one. The cache is safe because a
 * registered version never changes: the only news is a new version, and the registering process drops its
 * entry at once and tells the others on MODEL_TYPE_REGISTERED_CHANNEL (bus latency); this TTL bounds the
 * staleness when that message is lost. A session stored at a version newer than the cached latest (written
 * by a process that already knew) reloads the list, so a stale entry never makes a session unreadable.
 * Only reads use it: writes load the versions in their transaction, so they never store an older version
 * than the latest committed.
 */
export const MODEL_TYPE_CACHE_TTL_MS = 10_000;
const MODEL_TYPE_CACHE_MAX = 10_000;
const typeKey = (accountId: string, name: string) => `${accountId}/${name}`;
const nameVersionCursor = cursorOf(z.object({ n: z.string().regex(MODEL_TYPE_NAME), v: cursorInt(1, PG_INTEGER_MAX) }).strict());


const modelTypeCodec = zodCodec(modelTypeRowSchema);

export interface ModelTypeUseCasesDeps {
  types: ModelTypeStore;
  unitOfWork: UnitOfWork;
  bus?: Bus | undefined;
  telemetry?: Telemetry;
}

export interface ModelTypeCacheOptions {
  typeCacheTtlMs?: number;
  typeCacheMaxEntries?: number;
  now?: () => number;
}

/**
 * Model types: registration of immutable versions, reads, and each process's cache of a type's versions,
 * which every session read needs (to upgrade a stored session to its type's latest version).
 */
export class ModelTypeUseCases {
  private readonly typeVersions: LocalCache<ModelTypeRow[]>;
  private unsubscribe: (() => Promise<void>) | undefined;
  private readonly types: ModelTypeStore;
  private readonly unitOfWork: UnitOfWork;
  private readonly bus: Bus | undefined;
  private readonly telemetry: Telemetry;

  constructor(deps: ModelTypeUseCasesDeps, opts: ModelTypeCacheOptions = {}) {
    ({ types: this.types, unitOfWork: this.unitOfWork, bus: this.bus } = deps);
    this.telemetry = deps.telemetry ?? noTelemetry;
    this.typeVersions = new LocalCache({
      ttlMs: opts.typeCacheTtlMs ?? MODEL_TYPE_CACHE_TTL_MS,
      maxEntries: opts.typeCacheMaxEntries ?? MODEL_TYPE_CACHE_MAX,
      now: opts.now,
    });
  }

  /** Subscribes to model type registrations made by other processes; call once before serving. */
  async start(): Promise<void> {
    if (this.bus && !this.unsubscribe) this.unsubscribe = await invalidateOnBus(this.bus, MODEL_TYPE_REGISTERED_CHANNEL, this.typeVersions);
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** A type's versions for a read, from the in-process cache (see MODEL_TYPE_CACHE_TTL_MS). */
  async versionsFor(accountId: string, name: string, storedVersion: number): Promise<ModelTypeRow[]> {
    const key = typeKey(accountId, name);
    const hit = this.typeVersions.get(key);
    const fresh = hit !== undefined && (hit[hit.length - 1]?.schemaVersion ?? 0) >= storedVersion;
    this.telemetry.cacheRead('model_type', fresh);
    if (fresh) return hit;
    const token = this.typeVersions.token();
    const versions = await this.types.modelTypeVersions(accountId, name);
    if (versions.length) this.typeVersions.set(key, versions, token);
    return versions;
  }

  async register(caller: Principal, def: ModelTypeDef, requestId?: string): Promise<ModelTypeRow> {
    // Checks that compile nothing come first: a compiled schema costs memory until evicted, so only one
    // about to be stored (not a duplicate, not an older version) is compiled, inside the transaction.
    const schema = def.jsonSchema;
    const problem = schema && schemaProblem(schema);
    if (problem) throw invalidArgument('model_type.json_schema', problem);
    const standalone = modelTypeViolations({ ...def, upgrades: def.upgrades.map((u) => ({ ...u })) }, undefined).filter(
      (v) => !v.field.startsWith('model_type.upgrades'),
    );
    if (standalone.length) throw invalidArgument(standalone);
    const { value: row, replayed } = await this.unitOfWork.run(genieRequestKey(caller, 'RegisterModelType', requestId, def), modelTypeCodec, async (tx) => {
      // Registrations of one name queue here, so two cannot both build on the same previous version.
      await this.types.lockModelTypeName(caller.accountId, def.name, tx);
      const versions = await this.types.modelTypeVersions(caller.accountId, def.name, tx);
      const previous = versions[versions.length - 1];
      if (previous && def.schemaVersion === previous.schemaVersion) throw alreadyExists`model type ${def.name} version ${def.schemaVersion}`;
      if (previous && def.schemaVersion < previous.schemaVersion) {
        throw failedPrecondition(
          `model type ${def.name} is already at version ${previous.schemaVersion}; a new version must be higher than ${previous.schemaVersion}, not ${def.schemaVersion}`,
          'SCHEMA_VERSION_NOT_HIGHER',
          [{ type: 'SCHEMA_VERSION', subject: `model_type/${clip(def.name, 64)}`, description: `must be higher than ${previous.schemaVersion}` }],
          new Map([['latest_schema_version', String(previous.schemaVersion)]]),
        );
      }
      const violations = modelTypeViolations(def, previous);
      if (violations.length) throw invalidArgument(violations);
      const unusable = schema && compileProblem(schema);
      if (unusable) throw invalidArgument('model_type.json_schema', unusable);
      const inserted = await this.types.insertModelType(caller.accountId, def, tx);
      if (!inserted) throw alreadyExists`model type ${def.name} version ${def.schemaVersion}`;
      return inserted;
    });
    if (replayed) return row;
    const key = typeKey(caller.accountId, def.name);
    this.typeVersions.delete(key);
    const bus = this.bus;
    if (bus) await afterCommit(this.telemetry, () => bus.publish(MODEL_TYPE_REGISTERED_CHANNEL, key));
    return row;
  }

  /** The type at `schemaVersion`, or its latest version when that is undefined (or 0). */
  async get(caller: Principal, name: string, schemaVersion: number | undefined): Promise<ModelTypeRow> {
    const versions = await this.types.modelTypeVersions(caller.accountId, name);
    const found = !schemaVersion ? versions[versions.length - 1] : versions.find((v) => v.schemaVersion === schemaVersion);
    if (!found) throw schemaVersion ? notFound`model type ${name} version ${schemaVersion}` : notFound`model type ${name}`;
    return found;
  }

  async list(caller: Principal, name: string | undefined, pageSize: number, pageToken: string | undefined): Promise<Page<ModelTypeRow>> {
    const filters = { name: name ?? '' };
    const after = decodePageToken(pageToken, 'model_types', filters, nameVersionCursor);
    const rows = await this.types.listModelTypes(caller.accountId, name, after && { name: after.n, schemaVersion: after.v }, pageSize + 1);
    const items = withinBudget(rows.slice(0, pageSize), (m) => Buffer.byteLength(JSON.stringify(m)));
    const last = items[items.length - 1];
    return {
      items,
      nextPageToken: rows.length > items.length && last ? encodePageToken('model_types', filters, { n: last.name, v: last.schemaVersion }) : '',
    };
  }
}
