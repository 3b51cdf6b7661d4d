import type { Subscription } from '../ports/bus.js';

/** One local subscriber: an object, not closures (under tsx every named closure carries a `name` property store), since an idle watcher holds one for its whole life. */
class LocalSubscription implements Subscription {
  constructor(
    private readonly owner: LocalFanout,
    readonly channel: string,
    readonly onMessage: (message: string) => void,
    readonly processWide: boolean,
  ) {}

  close(): Promise<void> {
    return this.owner.release(this);
  }
}

/**
 * The in-memory side every bus shares: local subscribers per channel, fanned out from one source (an
 * in-process publish, or one Redis subscription per channel). `onFirst`/`onLast` let a bus subscribe
 * upstream when a channel gets its first local subscriber and unsubscribe when it loses its last.
 */
export class LocalFanout {
  private readonly channels = new Map<string, Set<LocalSubscription>>();
  /** Per channel, how many of its subscribers are process-wide (not counted by subscribedChannels). */
  private readonly processWide = new Map<string, number>();
  /** Channels whose upstream subscription is still being made. */
  private readonly upstream = new Map<string, Promise<void>>();

  constructor(
    private readonly hooks: { onFirst?(channel: string): Promise<void>; onLast?(channel: string): Promise<void> } = {},
  ) {}

  async subscribe(channel: string, onMessage: (message: string) => void, processWide: boolean): Promise<Subscription> {
    let subs = this.channels.get(channel);
    if (!subs) {
      subs = new Set();
      this.channels.set(channel, subs);
      const upstream = this.hooks.onFirst?.(channel);
      if (upstream) {
        this.upstream.set(channel, upstream);
        try {
          await upstream;
        } catch (err) {
          // Nobody is subscribed upstream: the next subscriber must try again rather than join a dead channel.
          if (this.channels.get(channel) === subs && subs.size === 0) this.channels.delete(channel);
          throw err;
        } finally {
          if (this.upstream.get(channel) === upstream) this.upstream.delete(channel);
        }
      }
    } else {
      // A later subscriber is live only once the first one's upstream subscription is: a caller that reads
      // what was published before it subscribed relies on receiving everything published after.
      await this.upstream.get(channel);
    }
    if (processWide) this.processWide.set(channel, (this.processWide.get(channel) ?? 0) + 1);
    const sub = new LocalSubscription(this, channel, onMessage, processWide);
    subs.add(sub);
    return sub;
  }

  /** The channel's subscribers now (a copy: a handler may unsubscribe while the message is delivered). */
  subscribers(channel: string): LocalSubscription[] {
    const subs = this.channels.get(channel);
    return subs ? [...subs] : [];
  }

  async release(sub: LocalSubscription): Promise<void> {
    const { channel } = sub;
    const subs = this.channels.get(channel);
    if (!subs?.has(sub)) return;
    if (sub.processWide) {
      const n = (this.processWide.get(channel) ?? 1) - 1;
      if (n > 0) this.processWide.set(channel, n);
      else this.processWide.delete(channel);
    }
    subs.delete(sub);
    if (subs.size === 0) {
      this.channels.delete(channel);
      await this.hooks.onLast?.(channel);
    }
  }

  subscribedChannels(): number {
    let n = 0;
    for (const [channel, subs] of this.channels) if (subs.size > (this.processWide.get(channel) ?? 0)) n++;
    return n;
  }
}
