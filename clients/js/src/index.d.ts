// Types of wsfleet's reference client (src/index.js). Frames: docs/PROTOCOL.md.

export declare const VERSION: string;

/** A WebSocket constructor with the browser's API (the browser's own, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ClientOptions {
  /** The session to open or resume; absent: the server makes one, kept for every resume. */
  session?: string;
  /** A JWT, or a function asked for one before every connection attempt (so an expired one is replaced). */
  token?: string | (() => string | Promise<string>);
  /** The public user id when the server runs without authentication. */
  user?: string;
  /** Default `globalThis.WebSocket`; on Node 18/20 pass the `ws` package's. */
  WebSocket?: WebSocketConstructor;
  /** Counted frames sent without a reply yet, at most (default 64). */
  maxInFlight?: number;
  /** Back-off after a failed connection or `unavailable`: doubles from min to max, jittered (defaults 100 and 5000 ms). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface Welcome {
  session_uuid: string;
  count: number;
  resumed: boolean;
  instance: string;
  repaired?: true;
  rooms?: string[];
  offset?: number;
  epoch?: string;
  recovered?: boolean;
}

export interface RoomInfo {
  room: string;
  users: string[];
  offset: number;
  epoch: string;
  /** Only when the join asked to recover (`since`): whether every missed publication follows. */
  recovered?: boolean;
}

export interface RoomMessage {
  type: "message";
  room: string;
  sender: string;
  content: unknown;
  ts: string;
  id?: string;
  offset: number;
  epoch: string;
}

export interface BroadcastEvent {
  message: unknown;
  ts: string;
  /** Absent for a message to this session alone (not recorded). */
  offset?: number;
  epoch?: string;
}

export interface PresenceEvent {
  room: string;
  kind: "members" | "joined" | "left";
  user?: string;
  users: string[];
}

/** Something the server promises cannot happen did: a gap or repeat in counts or offsets. */
export interface AnomalyEvent {
  stream: "count" | "broadcast" | "room";
  kind: string;
  room?: string;
  [detail: string]: unknown;
}

export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface ClientEvents {
  state: (state: State) => void;
  welcome: (welcome: Welcome) => void;
  count: (count: number) => void;
  heartbeat: (frame: { ts: string }) => void;
  broadcast: (event: BroadcastEvent) => void;
  message: (message: RoomMessage) => void;
  presence: (event: PresenceEvent) => void;
  bye: (frame: { bye: true; total: number; reconnect_after_ms: number }) => void;
  disconnect: (event: { code: number; reason: string }) => void;
  /** History could not be recovered (outside the window, or a new epoch): publications were missed. */
  lost: (event: { stream: "broadcast" | "room"; room?: string }) => void;
  anomaly: (event: AnomalyEvent) => void;
  error: (error: Error) => void;
  /** The client stopped for good (close(), `session resumed elsewhere`, a fatal close code). */
  closed: (error: Error) => void;
}

export declare class Cursor {
  constructor(offset?: number, epoch?: string);
  offset: number;
  epoch: string | undefined;
  readonly resumable: boolean;
  admit(offset: number, epoch: string): "new" | "duplicate" | "gap";
  restart(offset: number, epoch: string, recovered: boolean | undefined): void;
}

export declare class Counter {
  acked: number;
  known: boolean;
  pending: { text: string }[];
  onWire: number;
}

/** One room the client is in or joining: where it stands in the room's stream, its members. */
export interface RoomState {
  name: string;
  cursor: Cursor;
  users: Set<string>;
  /** Whether `room_users` came on the current socket. */
  joined: boolean;
  /** The last `room_users`' `recovered` (set when that join asked to recover). */
  recovered: boolean | undefined;
}

export declare class Client {
  constructor(url: string | (() => string | Promise<string>), options?: ClientOptions);
  session: string | undefined;
  state: State;
  instance: string | undefined;
  readonly acked: number;
  readonly pendingCount: number;
  readonly counter: Counter;
  readonly broadcasts: Cursor;
  readonly rooms: Map<string, RoomState>;
  /** Starts connecting (connect() does this), or again after disconnect(). */
  open(): void;
  /** Closes the socket but keeps the session, pending sends, rooms and positions; open() resumes. */
  disconnect(): void;
  /** A new socket now, resuming the session. */
  reconnect(): void;
  send(text: string): Promise<number>;
  join(room: string): Promise<RoomInfo>;
  leave(room: string): Promise<void>;
  publish(room: string, content: unknown, options?: { id?: string }): Promise<{ offset: number; epoch: string }>;
  close(): void;
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void;
}

export declare function connect(
  url: string | (() => string | Promise<string>),
  options?: ClientOptions,
): Client;
