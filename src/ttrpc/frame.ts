// The shape of one ttrpc frame as the decoder hands it on, and who receives frames.

export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

export interface FrameSink {
  frame(header: FrameHeader, data: Buffer): void;
  /** A frame longer than the limit was read and thrown away; answer on its stream. */
  oversize(header: FrameHeader): void;
}
