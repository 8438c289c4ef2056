// Client side of one ttrpc 1.2 stream: inbound Data frames become an async iterable, outbound
// messages go out as Data frames, the stream ends on a Data close or a Response.
import { Flags } from './channel';
import type { Response } from './codec';
import { MessageQueue } from './message-queue';
import { Code, TtrpcError } from './status';

export interface StreamTransport {
  /** Send a Data frame; resolves once the socket accepted it. */
  sendData(id: number, flags: number, data: Uint8Array): Promise<void>;
  /** The stream is over for the client: forget its id (late frames are dropped). */
  release(id: number): void;
}

export class ClientStream {
  readonly messages: MessageQueue<Buffer>;
  /** Settles with the final Response payload (client-streaming), or the stream's error. */
  readonly response: Promise<Buffer>;
  private resolveResponse!: (b: Buffer) => void;
  private rejectResponse!: (e: unknown) => void;
  private localClosed: boolean;
  private finished = false;

  constructor(
    readonly id: number,
    private readonly transport: StreamTransport,
    clientStreaming: boolean
  ) {
    this.localClosed = !clientStreaming;
    this.messages = new MessageQueue<Buffer>(() => this.finish());
    this.response = new Promise<Buffer>((resolve, reject) => {
      this.resolveResponse = resolve;
      this.rejectResponse = reject;
    });
    // Nobody may be waiting on `response` (pure server streams); don't let it count as unhandled.
    this.response.catch(() => {});
  }

  get isFinished(): boolean {
    return this.finished;
  }

  async send(msg: Uint8Array): Promise<void> {
    if (this.finished) throw new TtrpcError(Code.CANCELLED, 'ttrpc: stream is finished');
    if (this.localClosed) throw new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: stream is closed for sending');
    await this.transport.sendData(this.id, 0, msg);
  }

  /** Tell the server we will send no more (Data, remote-closed + no-data). */
  async closeSend(): Promise<void> {
    if (this.localClosed || this.finished) return;
    this.localClosed = true;
    await this.transport.sendData(this.id, Flags.REMOTE_CLOSED | Flags.NO_DATA, Buffer.alloc(0));
  }

  onData(flags: number, data: Buffer): void {
    if ((flags & Flags.NO_DATA) === 0) this.messages.push(data);
    if ((flags & Flags.REMOTE_CLOSED) !== 0) {
      this.resolveResponse(Buffer.alloc(0));
      this.finish();
    }
  }

  onResponse(res: Response): void {
    if (res.status && res.status.code !== Code.OK) {
      this.fail(new TtrpcError(res.status.code, res.status.message));
      return;
    }
    this.resolveResponse(res.payload);
    this.finish();
  }

  fail(err: unknown): void {
    if (this.finished) return;
    this.rejectResponse(err);
    this.messages.end(err);
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.localClosed = true;
    this.messages.end();
    this.resolveResponse(Buffer.alloc(0));
    this.transport.release(this.id);
  }
}
