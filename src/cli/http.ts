// GET over a unix socket (the metrics endpoint speaks HTTP/1.1 on a socket, not TCP).
import * as http from 'node:http';

export function httpGetUnix(
  socketPath: string,
  urlPath: string,
  timeoutMs = 5000
): Promise<{ status: number; body: string; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, path: urlPath, method: 'GET', timeout: timeoutMs, headers: { host: 'localhost' }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString('utf8'),
            contentType: String(res.headers['content-type'] ?? ''),
          })
        );
        res.on('error', reject);
      }
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
