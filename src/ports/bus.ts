export interface Subscription {
  close(): Promise<void>;
}

/**
 * Publish/subscribe between server replicas: at-most-once, so subscribers fill gaps from Postgres. Messages of
 * one publisher arrive in the order published; a replica's own messages reach its subscribers at once, so
 * they may overtake earlier messages of other replicas still on their way through Redis.
 */
export interface Bus {
  publish(channel: string, message: string): Promise<void>;
  /**
   * `processWide`: a subscription the process holds for its whole life (cache invalidations opened at
   * startup), which subscribedChannels leaves out.
   */
  subscribe(channel: string, onMessage: (message: string) => void, opts?: { processWide?: boolean }): Promise<Subscription>;
  /** Channels with at least one local subscriber other than process-wide ones (for leak checks). */
  subscribedChannels(): number;
  /**
   * Called after the bus reconnects: messages published while it was away are gone, so listeners catch up
   * from Postgres. Returns an unregister function.
   */
  onReconnect(fn: () => void): () => void;
}
