/** A list reply: the page's rows mapped to messages, under the RPC's own field names. */
export const pageReply = <R, M, Reply>(page: { items: R[]; nextPageToken: string }, toMessage: (r: R) => M, reply: (items: M[], nextPageToken: string) => Reply): Reply =>
  reply(page.items.map(toMessage), page.nextPageToken);
