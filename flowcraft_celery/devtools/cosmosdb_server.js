#!/usr/bin/env node
// cosmosdb-server with HTTP keep-alive, as Cosmos DB itself answers: the package's own CLI closes
// every connection after one response, so each request of a client paid a new TLS handshake that
// no real account costs. Usage: cosmosdb_server.js <package folder> <port> <host>
"use strict";
const [, , packageDir, port, host] = process.argv;
const { createHttpsServer } = require(packageDir);
const server = createHttpsServer({ keepAlive: true });
// Idle connections stay open longer than a client's pause between two requests of one run.
server.keepAliveTimeout = 30000;
server.headersTimeout = 31000;
server.listen(Number(port), host, () => {
  console.log(`Ready to accept HTTPS connections at ${host}:${port} (keep-alive)`);
});
