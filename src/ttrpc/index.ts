// Public surface of the ttrpc library (knows nothing of containerd; payloads are bytes).
export { Code, TtrpcError, toStatus, closedError } from './status';
export {
  Metadata,
  createMetadata,
  appendMetadata,
  setMetadata,
  getMetadata,
  getMetadataValue,
  metadataFromPairs,
  metadataToPairs,
} from './metadata';
export {
  CallContext,
  UnaryHandler,
  ServerStreamHandler,
  ClientStreamHandler,
  BidiStreamHandler,
  SendFn,
} from './services';
export { Server, ServerOptions, PeerCheck, DEFAULT_SHUTDOWN_GRACE_MS } from './server';
export { ResourceLimits, DEFAULT_RESOURCE_LIMITS } from './limits';
export { Client, ClientOptions, CallOptions, ClientStreamCall, BidiStreamCall } from './client';
export { PeerCred, peerCredOf, isSameUser } from './peercred';
export { MAX_MESSAGE_SIZE, MessageType, Flags } from './channel';
export type { LogFn } from './server-connection';
