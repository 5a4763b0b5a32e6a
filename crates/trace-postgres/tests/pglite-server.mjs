// Serves an in-memory PGlite (PostgreSQL 17 + TimescaleDB, WebAssembly) over the PostgreSQL wire protocol on
// 127.0.0.1:PORT for the integration tests: `RLM_PGLITE_MODULES=<dir>/node_modules node pglite-server.mjs PORT`.
// Prints "ready" once it listens. ES modules ignore NODE_PATH, hence the absolute paths from the environment.
const base = process.env.RLM_PGLITE_MODULES;
const { PGlite } = await import(`${base}/@electric-sql/pglite/dist/index.js`);
const { timescaledb } = await import(`${base}/@electric-sql/pglite/dist/timescaledb/index.js`);
const { PGLiteSocketServer } = await import(`${base}/@electric-sql/pglite-socket/dist/index.js`);

const port = Number(process.argv[2] ?? 0);
const db = await PGlite.create({ extensions: { timescaledb } });
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' });
await server.start();
process.stdout.write('ready\n');
const stop = async () => {
  await server.stop();
  await db.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
