import type { GenieServiceServer } from '../gen/parley/genie/v1/genie.js';
import { AppError } from '../errors.js';
import type { ServiceHandlers } from './rpc.js';

/** ExportSession and ImportSession: the contract is in place; the implementation follows. */
export function transferHandlers(): Pick<ServiceHandlers<GenieServiceServer>, 'exportSession' | 'importSession'> {
  const pending = () => Promise.reject(new AppError('INTERNAL', 'not implemented yet'));
  return { exportSession: pending, importSession: pending };
}
