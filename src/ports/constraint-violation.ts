/**
 * A write refused by one of the database's own constraints, in terms the domain understands. Stores throw
 * it instead of the driver's error so that use cases can turn it into ALREADY_EXISTS or a missing parent
 * without knowing any SQLSTATE. It is thrown (not returned) because the transaction it happened in is
 * dead: nothing more may run in it, and the unit of work must roll it back.
 */
export class ConstraintViolation extends Error {
  constructor(
    /** `unique`: the value is taken; `missing_parent`: a row it refers to does not exist (any more). */
    readonly kind: 'unique' | 'missing_parent',
  ) {
    super(kind === 'unique' ? 'unique constraint violated' : 'foreign key constraint violated');
    this.name = 'ConstraintViolation';
  }
}

export const isConstraintViolation = (err: unknown, kind: ConstraintViolation['kind']): boolean =>
  err instanceof ConstraintViolation && err.kind === kind;
