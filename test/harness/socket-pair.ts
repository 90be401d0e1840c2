import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

/** Two ends of one unix-socket connection, and the listening server that made it. */
export interface SocketPair {
  a: Socket;
  b: Socket;
  server: Server;
}

/** A connected pair of unix sockets at `dir/name.sock`: a byte stream as real as a link's, for stream protocols. */
export async function socketPair(dir: string, name: string): Promise<SocketPair> {
  const path = join(dir, `${name}.sock`);
  let accepted!: (s: Socket) => void;
  const b = new Promise<Socket>((resolve) => (accepted = resolve));
  const server = createServer((s) => accepted(s));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const a = createConnection({ path });
  await new Promise<void>((resolve) => a.once('connect', resolve));
  return { a, b: await b, server };
}

/** Ends both sides and the server. */
export function closePair(p: SocketPair): void {
  p.a.destroy();
  p.b.destroy();
  p.server.close();
}
