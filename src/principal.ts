import { z } from 'zod';

/** Who is calling: the user profile (and its account) an API key belongs to. */
export const principalSchema = z.object({ apiKeyId: z.string(), userProfileId: z.string(), accountId: z.string() });
export type Principal = z.infer<typeof principalSchema>;
